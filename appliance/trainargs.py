"""Checking training arguments against ultralytics' own list, without importing
ultralytics (its default.yaml and model YAMLs are read as files)."""

from __future__ import annotations

import functools
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


def check_arguments(train_args: dict) -> None:
    unknown = sorted(set(train_args) - known_arguments())
    if unknown:
        raise Invalid(f"trainArgs: unknown argument(s) {', '.join(unknown)}")
    device = train_args.get("device")
    if device is not None and not _DEVICE.match(str(device)):
        raise Invalid(
            "trainArgs.device must be auto, cpu or CUDA indices such as 0 or 0,1"
        )
