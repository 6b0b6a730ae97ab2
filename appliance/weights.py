"""Official weights for an air-gapped lab: a registry of `.pt` files the operator
brought in (say `yolo26n.pt` off a USB stick).

An imported weight lives in the blob store (`blobs/weights/NAME.pt`, served by a
signed URL like any blob) with a hard link in the data home's `weights/` folder,
where training looks for `model: yolo26n.pt`. The registry itself is
`weights/registry.json`. An official name is also offered as
`ul://ultralytics/<family>/<stem>` (for example ul://ultralytics/yolo26/yolo26n).

A file is read before it is registered, and never by unrestricted unpickling:
appliance.checkpoints reads it with an allow-list unpickler that runs nothing in
it, and refuses class names that disagree with the model's head.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from . import checkpoints
from .checkpoints import Checkpoint
from .errors import Invalid
from .ids import now
from .trainargs import yaml_exists

logger = logging.getLogger(__name__)

OFFICIAL_OWNER = "ultralytics"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,99}\.pt$")
_FAMILY = re.compile(r"^(?P<family>[a-z]+[a-z-]*?v?\d+)[nslmxbce]?(-[a-z0-9]+)*$")


class CheckpointError(Invalid):
    """A file that is not a model checkpoint this appliance will load."""


def family_of(stem: str) -> str | None:
    """`yolo26n` → `yolo26`, `yolo11s-seg` → `yolo11`; None for a name that is not an
    official model's (no ultralytics model YAML by that name)."""
    if not yaml_exists(f"{stem}.yaml"):
        return None
    match = _FAMILY.match(stem)
    return match["family"] if match else None


def read_checkpoint(path: Path) -> Checkpoint:
    """Read a `.pt` without running anything in it (appliance.checkpoints) and
    describe the model in it."""
    try:
        return checkpoints.read_checkpoint(path)
    except checkpoints.BadCheckpoint as exc:
        raise CheckpointError(f"{path.name}: {exc}") from None


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
            "classCount": len(checkpoint.class_names),
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
