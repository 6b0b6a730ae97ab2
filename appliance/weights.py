"""Official weights for an air-gapped lab: a registry of `.pt` files the operator
brought in (say `yolo26n.pt` off a USB stick).

An imported weight lives in the blob store (`blobs/weights/NAME.pt`, served by a
signed URL like any blob) with a hard link in the data home's `weights/` folder,
where training looks for `model: yolo26n.pt`. The registry itself is
`weights/registry.json`. An official name is also offered as
`ul://ultralytics/<family>/<stem>` (for example ul://ultralytics/yolo26/yolo26n).

A file is read before it is registered, and never by unrestricted unpickling: the
checkpoint must be a PyTorch zip archive whose pickled classes are all modules of
ultralytics or torch.nn, loaded with torch's `weights_only` unpickler that
allows exactly those classes.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import Invalid
from .ids import now
from .trainargs import yaml_exists

logger = logging.getLogger(__name__)

OFFICIAL_OWNER = "ultralytics"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}\.pt$")
_FAMILY = re.compile(r"^(?P<family>[a-z]+[a-z-]*?v?\d+)[nslmxbce]?(-[a-z0-9]+)*$")
#: Where the classes of a model checkpoint may come from.
_ALLOWED_MODULES = ("ultralytics.nn.", "torch.nn.modules.", "numpy.dtypes.")
#: Functions that only rebuild numpy values (metrics some checkpoints carry).
_ALLOWED_FUNCTIONS = frozenset(
    {
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
    }
)
#: The few functions and non-module classes an ultralytics checkpoint pickles.
_ALLOWED_GLOBALS = frozenset(
    {
        "ultralytics.utils.IterableSimpleNamespace",
        "types.SimpleNamespace",
        "argparse.Namespace",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "torch.nn.parameter.Parameter",
        "torch.Size",
        "numpy.dtype",
        "numpy.ndarray",
    }
)


class CheckpointError(Invalid):
    """A file that is not a model checkpoint this appliance will load."""


@dataclass
class Checkpoint:
    task: str | None
    names: list[str]
    train_args: dict[str, Any]


def family_of(stem: str) -> str | None:
    """`yolo26n` → `yolo26`, `yolo11s-seg` → `yolo11`; None for a name that is not an
    official model's (no ultralytics model YAML by that name)."""
    if not yaml_exists(f"{stem}.yaml"):
        return None
    match = _FAMILY.match(stem)
    return match["family"] if match else None


def _allowed_global(name: str) -> Any:
    module, _, attr = name.rpartition(".")
    allowed = name in _ALLOWED_GLOBALS or name in _ALLOWED_FUNCTIONS
    if not allowed and not name.startswith(_ALLOWED_MODULES):
        raise CheckpointError(f"the checkpoint pickles {name}, which is not allowed")
    try:
        value = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        raise CheckpointError(
            f"the checkpoint needs {name}, which is unknown"
        ) from None
    if not isinstance(value, type) and name not in _ALLOWED_FUNCTIONS:
        raise CheckpointError(f"the checkpoint calls {name}, which is not a class")
    return value


def read_checkpoint(path: Path) -> Checkpoint:
    """Load a `.pt` with a restricted unpickler and describe the model in it."""
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path.name} is not a PyTorch checkpoint (not a zip)")
    with zipfile.ZipFile(path) as archive:
        if not any(n.endswith("/data.pkl") for n in archive.namelist()):
            raise CheckpointError(f"{path.name} is a zip but not a PyTorch checkpoint")
    import torch

    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
        classes = [_allowed_global(name) for name in unsafe]
        if any(name.startswith("numpy.") for name in unsafe):
            classes += _numpy_dtype_classes()  # what np.dtype(...) builds
        with torch.serialization.safe_globals(classes):
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # any unreadable checkpoint is the user's input error
        raise CheckpointError(
            f"{path.name} could not be read as a checkpoint: {_reason(exc)}"
        ) from None
    return _describe(path.name, data)


def _numpy_dtype_classes() -> list[type]:
    import numpy

    return [
        getattr(numpy.dtypes, name)
        for name in dir(numpy.dtypes)
        if name.endswith("DType") and isinstance(getattr(numpy.dtypes, name), type)
    ]


def _reason(exc: Exception) -> str:
    """torch's refusals run to a page; keep the line that says what was refused."""
    text = str(exc)
    _, marker, rest = text.partition("WeightsUnpickler error:")
    line = (
        next((p.strip() for p in rest.splitlines() if p.strip()), "") if marker else ""
    )
    return (line or text.strip().splitlines()[0] if text.strip() else repr(exc))[:300]


def _describe(name: str, data: Any) -> Checkpoint:
    model = (data.get("ema") or data.get("model")) if isinstance(data, dict) else None
    if model is None or not hasattr(model, "model"):
        raise CheckpointError(f"{name} holds no ultralytics model")
    from ultralytics.nn.tasks import guess_model_task

    names = getattr(model, "names", None) or {}
    names = [names[i] for i in sorted(names)] if isinstance(names, dict) else names
    head = model.model[-1] if len(model.model) else None
    head_classes = getattr(head, "nc", None)
    if head_classes is not None and names and len(names) != head_classes:
        raise CheckpointError(
            f"{name} names {len(names)} classes but its head predicts {head_classes}"
        )
    train_args = data.get("train_args") or {}
    return Checkpoint(
        task=guess_model_task(model),
        names=[str(n) for n in names],
        train_args=dict(train_args) if isinstance(train_args, dict) else {},
    )


# -- the registry ----------------------------------------------------------


class Registry:
    def __init__(self, home: Path) -> None:
        self.folder = home / "weights"
        self.blobs = home / "blobs" / "weights"
        self.index = self.folder / "registry.json"

    def entries(self) -> dict[str, dict[str, Any]]:
        if not self.index.exists():
            return {}
        try:
            return json.loads(self.index.read_text())
        except ValueError:
            logger.warning("%s is unreadable; treating it as empty", self.index)
            return {}

    def official(self, family: str, stem: str) -> dict[str, Any] | None:
        """The entry that `ul://ultralytics/<family>/<stem>` names, if imported."""
        entry = self.entries().get(f"{stem}.pt")
        if entry and entry.get("family") == family and self.blob(entry).is_file():
            return entry
        return None

    def blob(self, entry: dict[str, Any]) -> Path:
        return self.blobs / entry["name"]

    def add(
        self, source: Path, name: str | None = None, *, replace: bool = False
    ) -> tuple[dict[str, Any], bool]:
        """Register `source`; returns (entry, changed). The same bytes again change
        nothing; other bytes under a taken name need `replace`."""
        name = name or source.name
        if not _NAME.match(name):
            raise Invalid(
                f"{name!r}: weight names are lower-case letters, digits, '.', '-' "
                "and '_', ending in .pt"
            )
        if not source.is_file():
            raise Invalid(f"{source} is not a file")
        digest = _sha256(source)
        entries = self.entries()
        old = entries.get(name)
        if old and old["sha256"] == digest and self.blob(old).is_file():
            self._link(old)
            return old, False
        if old and not replace:
            raise Invalid(
                f"{name} is already imported with other contents; pass --replace "
                "to swap it"
            )
        checkpoint = read_checkpoint(source)
        stem = name[: -len(".pt")]
        entry = {
            "name": name,
            "family": family_of(stem),
            "task": checkpoint.task,
            "classCount": len(checkpoint.names),
            "size": source.stat().st_size,
            "sha256": digest,
            "importedAt": now(),
        }
        self.blobs.mkdir(parents=True, exist_ok=True)
        tmp = self.blobs / f".{name}.tmp"
        shutil.copyfile(source, tmp)
        os.replace(tmp, self.blob(entry))
        self._link(entry)
        entries[name] = entry
        self._save(entries)
        logger.info("imported %s (%s, %d bytes)", name, entry["task"], entry["size"])
        return entry, True

    def _link(self, entry: dict[str, Any]) -> None:
        """The data home's weights/NAME, where training looks, is the same file."""
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / entry["name"]
        if target.exists() and os.path.samefile(target, self.blob(entry)):
            return
        tmp = self.folder / f".{entry['name']}.tmp"
        tmp.unlink(missing_ok=True)
        try:
            os.link(self.blob(entry), tmp)
        except OSError:
            shutil.copyfile(self.blob(entry), tmp)
        os.replace(tmp, target)

    def _save(self, entries: dict[str, dict[str, Any]]) -> None:
        tmp = self.index.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries, indent=2, sort_keys=True))
        os.replace(tmp, self.index)


def uri_of(entry: dict[str, Any]) -> str | None:
    if not entry.get("family"):
        return None
    return f"ul://{OFFICIAL_OWNER}/{entry['family']}/{entry['name'][: -len('.pt')]}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
