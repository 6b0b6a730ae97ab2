"""Finding a YOLO dataset inside an archive: its root, its YAML, its splits, and
which label file belongs to which image."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

import yaml

from ..errors import Invalid

IMAGE_SUFFIXES = frozenset(
    {
        ".jpg",
        ".jpeg",
        ".png",
        ".bmp",
        ".webp",
        ".tif",
        ".tiff",
        ".gif",
        ".heic",
        ".heif",
        ".avif",
        ".jp2",
        ".mpo",
    }
)
VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".mov", ".mkv", ".m4v", ".avi"})
YAML_SUFFIXES = (".yaml", ".yml")
_SPLIT_ALIASES = {
    "train": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
}
#: How far below the archive root the dataset YAML may sit (outer/inner/data.yaml).
MAX_ROOT_DEPTH = 3
#: The contract's ceiling on classes per dataset, and a sane length for one name.
MAX_CLASSES = 25_000
MAX_NAME_LENGTH = 256


@dataclass
class Item:
    """One image found in the archive, with its label file when there is one."""

    image: str
    label: str | None
    split: str


@dataclass
class Layout:
    root: str  # '' for the archive root
    yaml_name: str | None
    names: list[str]
    items: list[Item] = field(default_factory=list)
    orphan_labels: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: What the YAML says beyond classes: `task`, `kpt_shape`, `flip_idx`.
    task: str | None = None
    kpt_shape: list[int] | None = None
    flip_idx: list[int] | None = None


def _depth(name: str) -> int:
    return name.count("/")


def find_yaml(names: list[str]) -> str | None:
    """The dataset YAML closest to the archive root, at most MAX_ROOT_DEPTH down.

    `data.yaml` wins over any other YAML (the Platform's rule), then the shallowest."""
    candidates = [
        n
        for n in names
        if n.lower().endswith(YAML_SUFFIXES) and _depth(n) <= MAX_ROOT_DEPTH
    ]
    if not candidates:
        return None
    return min(
        candidates,
        key=lambda n: (
            posixpath.basename(n).lower() not in ("data.yaml", "data.yml"),
            _depth(n),
            n,
        ),
    )


def parse_names(doc: Any) -> list[str]:
    """Class names from a data.yaml: a list, or a dict of index to name with gaps
    filled by `classN` placeholders; `nc` must agree when both are given."""
    if not isinstance(doc, dict):
        raise Invalid("data.yaml is not a mapping")
    raw = doc.get("names")
    if isinstance(raw, dict):
        try:
            indexed = {int(k): _name(v) for k, v in raw.items()}
        except (TypeError, ValueError) as exc:
            raise Invalid("data.yaml names keys must be integers") from exc
        if indexed and (min(indexed) < 0 or max(indexed) >= MAX_CLASSES):
            raise Invalid(
                f"data.yaml names keys must be between 0 and {MAX_CLASSES - 1}"
            )
        size = max(indexed) + 1 if indexed else 0
        names = [indexed.get(i, f"class{i}") for i in range(size)]
    elif isinstance(raw, list):
        if len(raw) > MAX_CLASSES:
            raise Invalid(
                f"data.yaml lists {len(raw)} classes; the limit is {MAX_CLASSES}"
            )
        names = [_name(v) for v in raw]
    elif raw is None:
        names = []
    else:
        raise Invalid("data.yaml names must be a list or a mapping")
    nc = doc.get("nc")
    if nc is not None:
        if not isinstance(nc, int) or isinstance(nc, bool) or nc < 0:
            raise Invalid(
                f"data.yaml nc must be a non-negative integer, got {str(nc)[:40]!r}"
            )
        if nc > MAX_CLASSES:
            raise Invalid(
                f"data.yaml nc: {nc} is over the limit of {MAX_CLASSES} classes"
            )
        if not names:
            names = [f"class{i}" for i in range(nc)]
        elif nc != len(names):
            raise Invalid(f"data.yaml says nc: {nc} but lists {len(names)} names")
    if len(names) > MAX_CLASSES:
        raise Invalid(
            f"data.yaml lists {len(names)} classes; the limit is {MAX_CLASSES}"
        )
    for name in names:
        if not name.strip() or len(name) > MAX_NAME_LENGTH:
            raise Invalid(
                f"data.yaml class names must be 1-{MAX_NAME_LENGTH} characters"
            )
    return names


def _name(value: Any) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise Invalid("data.yaml class names must be plain text")
    return str(value)


def _split_of(relative: str, yaml_splits: dict[str, str]) -> str:
    for split, prefix in yaml_splits.items():
        if prefix and (relative == prefix or relative.startswith(prefix + "/")):
            return split
    for part in relative.split("/")[:-1]:
        split = _SPLIT_ALIASES.get(part.lower())
        if split:
            return split
    return "train"


def _yaml_splits(doc: dict) -> dict[str, str]:
    """Split folders named by data.yaml, relative to the dataset root.

    Absolute paths from another machine are ignored, and Roboflow's `../valid/images`
    is read inside the archive root rather than above it."""
    out: dict[str, str] = {}
    for split in ("train", "val", "test"):
        value = doc.get(split)
        if not isinstance(value, str) or value.startswith("/"):
            continue
        norm = posixpath.normpath(value)
        while norm.startswith("../"):
            norm = norm[3:]
        if norm not in ("..", "."):
            out[split] = norm
    return out


def label_for(image: str) -> str:
    """The conventional label path: the last /images/ becomes /labels/, suffix .txt."""
    return label_candidates(image)[0]


def label_candidates(image: str) -> list[str]:
    """Label paths to try, in order: the last /images/ folder made /labels/, then
    each earlier one (images/train/images/x.jpg -> labels/train/images/x.txt)."""
    stem, _ = posixpath.splitext(image)
    parts = stem.split("/")
    out = []
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            out.append("/".join([*parts[:i], "labels", *parts[i + 1 :]]) + ".txt")
    return out or [stem + ".txt"]


def discover(names: list[str], read_text) -> Layout:
    """Build the layout of a YOLO archive from its member names.

    `read_text(name)` returns a member's text (used for the YAML only)."""
    yaml_name = find_yaml(names)
    root = posixpath.dirname(yaml_name) if yaml_name else _common_root(names)
    doc: dict = {}
    class_names: list[str] = []
    if yaml_name:
        try:
            doc = yaml.safe_load(read_text(yaml_name)) or {}
        except yaml.YAMLError as exc:
            raise Invalid(f"{yaml_name} is not valid YAML: {exc}") from exc
        class_names = parse_names(doc)
    layout = Layout(root=root, yaml_name=yaml_name, names=class_names)
    _yaml_extras(layout, doc)
    if yaml_name:
        layout.notes.append(f"dataset root: {root or '(archive root)'} ({yaml_name})")
        others = [
            n for n in names if n.lower().endswith(YAML_SUFFIXES) and n != yaml_name
        ]
        if others:
            layout.notes.append(
                f"chose {yaml_name} over {', '.join(others[:5])}: data.yaml first,"
                " then the one closest to the root"
            )
        if not class_names:
            layout.notes.append(
                f"{yaml_name} declares no classes: every label row is out of range"
            )
    else:
        layout.notes += _near_misses(names)
    splits = _yaml_splits(doc)
    prefix = root + "/" if root else ""
    members = set(names)
    used_labels: set[str] = set()
    for name in names:
        if not name.startswith(prefix):
            continue
        if posixpath.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
            continue
        tried = [*label_candidates(name), posixpath.splitext(name)[0] + ".txt"]
        label = next((c for c in tried if c in members), None)
        if label:
            used_labels.add(label)
        split = _split_of(name[len(prefix) :], splits)
        layout.items.append(Item(image=name, label=label, split=split))
    unused = [
        n
        for n in names
        if n.endswith(".txt") and n.startswith(prefix) and n not in used_labels
    ]
    layout.orphan_labels = sorted(n for n in unused if "/labels/" in "/" + n)
    layout.notes += _stray_label_notes(layout.items, unused)
    return layout


def yaml_task(text: str) -> str | None:
    """The `task:` a dataset YAML declares, if it parses and declares one."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    task = doc.get("task") if isinstance(doc, dict) else None
    return task if isinstance(task, str) else None


def _yaml_extras(layout: Layout, doc: dict) -> None:
    task = doc.get("task")
    if isinstance(task, str) and task in (
        "detect",
        "segment",
        "pose",
        "obb",
        "classify",
    ):
        layout.task = task
    shape = doc.get("kpt_shape")
    if shape is not None:
        if (
            not isinstance(shape, list)
            or len(shape) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)
            or shape[0] < 1
            or shape[1] not in (2, 3)
        ):
            raise Invalid(
                f"data.yaml kpt_shape must be [keypoints, 2 or 3], got {str(shape)[:40]}"
            )
        layout.kpt_shape = list(shape)
    flip = doc.get("flip_idx")
    if isinstance(flip, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in flip
    ):
        layout.flip_idx = list(flip)


def _near_misses(names: list[str]) -> list[str]:
    """Notes for files that look like a misspelt dataset YAML (data.yalm, data.yml.txt)."""
    notes = []
    for name in names:
        base = posixpath.basename(name).lower()
        if base.startswith("data.") and not base.endswith(YAML_SUFFIXES):
            notes.append(
                f"found {name}: did you mean data.yaml? The layout was detected"
                " without it and classes are named by placeholder"
            )
    return notes


def _stray_label_notes(items: list[Item], unused: list[str]) -> list[str]:
    """Warn, with the path, when an unlabeled image has a same-stem .txt elsewhere."""
    by_stem: dict[str, list[str]] = {}
    for name in unused:
        stem = posixpath.splitext(posixpath.basename(name))[0]
        by_stem.setdefault(stem, []).append(name)
    notes = []
    for item in items:
        if item.label is None:
            stem = posixpath.splitext(posixpath.basename(item.image))[0]
            for other in by_stem.get(stem, [])[:3]:
                notes.append(f"{item.image} has no label, but {other} has its name")
    return notes


def _common_root(names: list[str]) -> str:
    """With no YAML: a single top folder holding everything is the root."""
    tops = {n.split("/", 1)[0] for n in names if "/" in n}
    if len(tops) == 1 and all("/" in n for n in names):
        return tops.pop()
    return ""
