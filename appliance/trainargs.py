"""Checking training arguments against ultralytics' own list, without importing
ultralytics (its default.yaml and model YAMLs are read as files).

Types follow ultralytics' own rules (the CFG_*_KEYS sets its check_cfg uses, read
from its source with `ast`, never imported: importing ultralytics writes its
settings and loads torch); ranges are the Platform's, from the contract."""

from __future__ import annotations

import ast
import functools
import math
import re
from importlib.util import find_spec
from pathlib import Path

import yaml

from .errors import Invalid

_SCALED = re.compile(r"^(?P<base>.*?\d+)(?P<scale>[nslmx])(?P<rest>(-\w+)*)$")
#: An official weight by its Platform name, such as ul://ultralytics/yolo26/yolo26n.
_OFFICIAL = re.compile(
    r"^ul://ultralytics/[a-z0-9-]{1,128}/(?P<stem>[a-z0-9-]{1,128})$"
)
_DEVICE = re.compile(r"^(auto|cpu|mps|\d+(,\d+)*)$")
#: Arguments of ultralytics' config that make no sense for a training request.
_NOT_FOR_TRAINING = frozenset(
    {"mode", "source", "show", "save_txt", "save_conf", "format"}
)


@functools.cache
def _package_dir() -> Path:
    spec = find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("ultralytics is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def known_arguments() -> frozenset[str]:
    doc = yaml.safe_load((_package_dir() / "cfg" / "default.yaml").read_text())
    return frozenset(doc) - _NOT_FOR_TRAINING


@functools.cache
def _model_yamls() -> frozenset[str]:
    return frozenset(
        p.name for p in (_package_dir() / "cfg" / "models").rglob("*.yaml")
    )


def yaml_exists(name: str) -> bool:
    """yolo26n.yaml exists when yolo26.yaml does (the scale letter picks the size)."""
    if name in _model_yamls():
        return True
    stem = Path(name).stem
    match = _SCALED.match(stem)
    return bool(match) and f"{match['base']}{match['rest']}.yaml" in _model_yamls()


def local_model_name(name: str) -> str:
    """`ul://ultralytics/yolo26/yolo26n` is the weight imported as yolo26n.pt."""
    match = _OFFICIAL.match(name)
    return f"{match['stem']}.pt" if match else name


def check_model(name: str, weights_dir: Path) -> None:
    name = local_model_name(name)
    if "/" in name or "\\" in name or ".." in name:
        raise Invalid("trainArgs.model must be a bare file name such as yolo26n.yaml")
    if name.endswith((".yaml", ".yml")):
        if not yaml_exists(name):
            raise Invalid(f"trainArgs.model: no model YAML named {name} in ultralytics")
        return
    if name.endswith(".pt"):
        if (weights_dir / name).is_file() or yaml_exists(Path(name).stem + ".yaml"):
            return  # a local weight, or an official name that falls back to its YAML
        raise Invalid(
            f"trainArgs.model: {name} is not on this appliance; copy it into the data "
            "home's weights/ folder or name a model YAML"
        )
    raise Invalid(
        "trainArgs.model must name a model YAML (yolo26n.yaml) or weights (.pt)"
    )


#: The Platform's limits for training arguments (the contract's trainArgs).
RANGES: dict[str, tuple[float, float]] = {
    "lr0": (0.0001, 0.1),
    "lrf": (0.01, 1),
    "momentum": (0.6, 0.98),
    "weight_decay": (0, 0.001),
    "warmup_epochs": (0, 5),
    "warmup_momentum": (0.5, 0.95),
    "warmup_bias_lr": (0, 0.2),
    "box": (1, 50),
    "cls": (0.2, 4),
    "dfl": (0.4, 6),
    "pose": (1, 50),
    "kobj": (0.5, 10),
    "hsv_h": (0, 0.1),
    "hsv_s": (0, 1),
    "hsv_v": (0, 1),
    "degrees": (-45, 45),
    "translate": (0, 1),
    "scale": (0, 1),
    "shear": (-10, 10),
    "perspective": (0, 0.001),
    "flipud": (0, 1),
    "fliplr": (0, 1),
    "mosaic": (0, 1),
    "mixup": (0, 1),
    "copy_paste": (0, 1),
    "epochs": (1, 10000),
    "batch": (-1, 512),
    "imgsz": (32, 4096),
    "patience": (1, 1000),
    "time": (0.1, 720),
    "seed": (0, 2147483647),
    "close_mosaic": (0, 50),
    "save_period": (-1, 100),
    "fraction": (0.1, 1),
    "freeze": (0, 100),
    "multi_scale": (0, 0.9),
    "workers": (0, 64),
    "dropout": (0, 1),
    "iou": (0.1, 0.9),
    "max_det": (1, 10000),
}
CHOICES: dict[str, tuple] = {
    "optimizer": (
        "auto",
        "SGD",
        "MuSGD",
        "Adam",
        "AdamW",
        "NAdam",
        "RAdam",
        "RMSProp",
        "Adamax",
    ),
    "task": ("detect", "segment", "semantic", "depth", "classify", "pose", "obb"),
    "cache": ("ram", "disk", "false", False, True),
    "compile": (
        True,
        False,
        "default",
        "reduce-overhead",
        "max-autotune",
        "max-autotune-no-cudagraphs",
    ),
}


@functools.cache
def type_sets() -> dict[str, frozenset[str]]:
    """ultralytics' CFG_FLOAT_KEYS, CFG_FRACTION_KEYS, CFG_INT_KEYS, CFG_BOOL_KEYS
    and CFG_STR_KEYS, read from ultralytics/cfg/__init__.py without running it."""
    tree = ast.parse((_package_dir() / "cfg" / "__init__.py").read_text())
    sets: dict[str, frozenset[str]] = {}
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1):
            continue
        target = node.targets[0]
        if isinstance(target, ast.Name) and re.fullmatch(r"CFG_[A-Z]+_KEYS", target.id):
            names = {
                c.value
                for c in ast.walk(node.value)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            }
            sets[target.id] = frozenset(names)
    return sets


def _is_number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def check_value(key: str, value: object) -> None:
    """One argument against ultralytics' type for it and the Platform's range."""
    sets = type_sets()
    if value is None:
        return  # ultralytics' default for it
    if key in sets.get("CFG_BOOL_KEYS", ()) or key in ("pretrained", "amp"):
        if not isinstance(value, bool):
            raise Invalid(f"trainArgs.{key} must be true or false, not {value!r}")
    elif key in sets.get("CFG_INT_KEYS", ()) or key in ("imgsz", "freeze"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"trainArgs.{key} must be a whole number, not {value!r}")
    elif key in sets.get("CFG_FLOAT_KEYS", ()) or key in sets.get(
        "CFG_FRACTION_KEYS", ()
    ):
        if not _is_number(value):
            raise Invalid(f"trainArgs.{key} must be a number, not {value!r}")
        if key in sets.get("CFG_FRACTION_KEYS", ()) and key != "fraction":
            if not 0.0 <= value <= 1.0:
                raise Invalid(f"trainArgs.{key} must be between 0 and 1, not {value}")
    elif key in sets.get("CFG_STR_KEYS", ()) and not isinstance(value, str):
        raise Invalid(f"trainArgs.{key} must be a string, not {value!r}")
    if key in CHOICES and value not in CHOICES[key]:
        allowed = ", ".join(str(c) for c in CHOICES[key])
        raise Invalid(f"trainArgs.{key} must be one of {allowed}, not {value!r}")
    if key in RANGES and _is_number(value):
        low, high = RANGES[key]
        if not low <= value <= high:
            raise Invalid(
                f"trainArgs.{key} must be between {low:g} and {high:g}, not {value}"
            )


#: Arguments that name files or folders on the appliance's own disk. The
#: appliance chooses those itself (the run folder, the dataset, the checkpoint to
#: resume); a request naming them could read or probe any file (a `cfg` YAML's
#: keys end up in the error), so they are refused.
PATH_ARGUMENTS = frozenset({"cfg", "tracker", "resume", "project", "name", "save_dir"})


def check_arguments(train_args: dict) -> None:
    unknown = sorted(set(train_args) - known_arguments())
    if unknown:
        raise Invalid(f"trainArgs: unknown argument(s) {', '.join(unknown)}")
    paths = sorted(set(train_args) & PATH_ARGUMENTS)
    if paths:
        raise Invalid(
            f"trainArgs.{paths[0]} names a path on the appliance, which it chooses"
            " itself; to continue a run use .../training/resume"
        )
    for key, value in train_args.items():
        check_value(key, value)
    device = train_args.get("device")
    if device is not None and not _DEVICE.match(str(device)):
        raise Invalid(
            "trainArgs.device must be auto, cpu or CUDA indices such as 0 or 0,1"
        )
