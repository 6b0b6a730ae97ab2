"""Classification folder trees: split/class/img, class/split/img or class/img.

The class-to-index map is built once, by name over every split (sorted, as
ultralytics does), so a split missing a class never shifts the others."""

from __future__ import annotations

import posixpath

from .images import MAX_IMAGE_BYTES
from .labels import ParsedLabels
from .layout import _SPLIT_ALIASES, IMAGE_SUFFIXES
from .plan import Context, Entry, Plan
from .sources import Source, read_member

_NOT_CLASSES = frozenset({"images", "labels"})


def _image_parts(names: list[str]) -> list[list[str]]:
    return [
        n.split("/")
        for n in names
        if posixpath.splitext(n)[1].lower() in IMAGE_SUFFIXES
    ]


def _strip_common(parts: list[list[str]]) -> int:
    """How many leading folders every image shares (keeping at least class/img)."""
    shared = 0
    shortest = min(len(p) for p in parts)
    while shared < shortest - 2 and len({p[shared] for p in parts}) == 1:
        shared += 1
    return shared


def _stem(name: str) -> str:
    return posixpath.splitext(posixpath.basename(name))[0]


def find_tree(names: list[str]) -> tuple[str, int] | None:
    """(layout, prefix depth) when the images form a classification tree. A
    `.txt` named like an image is a YOLO label, so the upload is not a tree; a
    README.txt or classes.txt beside the folders does not count."""
    image_stems = {
        _stem(n) for n in names if posixpath.splitext(n)[1].lower() in IMAGE_SUFFIXES
    }
    if any(n.endswith(".txt") and _stem(n) in image_stems for n in names):
        return None
    parts = _image_parts(names)
    if not parts:
        return None
    skip = _strip_common(parts)
    rel = [p[skip:] for p in parts]
    depths = {len(p) for p in rel}
    if depths == {3}:
        if all(p[0].lower() in _SPLIT_ALIASES for p in rel):
            return "split/class/img", skip
        if all(p[1].lower() in _SPLIT_ALIASES for p in rel):
            return "class/split/img", skip
        return None
    if depths == {2}:
        folders = {p[0].lower() for p in rel}
        if len(folders) < 2 or folders & (_NOT_CLASSES | set(_SPLIT_ALIASES)):
            return None
        return "class/img", skip
    return None


def plan_classify(source: Source, names: list[str], tree: tuple[str, int]) -> Plan:
    layout, skip = tree
    found = []
    for name in names:
        parts = name.split("/")
        if posixpath.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
            continue
        rel = parts[skip:]
        if layout == "split/class/img":
            split, label = _SPLIT_ALIASES[rel[0].lower()], rel[1]
        elif layout == "class/split/img":
            label, split = rel[0], _SPLIT_ALIASES[rel[1].lower()]
        else:
            label, split = rel[0], "train"
        found.append((name, split, label))
    classes = sorted({label for _, _, label in found})
    index = {label: i for i, label in enumerate(classes)}
    plan = Plan(format="classify", class_names=classes, task="classify")
    plan.notes.append(f"classification tree ({layout}), {len(classes)} classes")
    for split in sorted({split for _, split, _ in found}):
        present = {label for _, s, label in found if s == split}
        missing = [c for c in classes if c not in present]
        if missing:
            plan.notes.append(f"class {', '.join(missing)} absent from {split}")
    for name, split, label in found:
        plan.entries.append(
            Entry(
                path=name,
                name=posixpath.basename(name),
                split=split,
                read=lambda n=name: read_member(source, n, MAX_IMAGE_BYTES),
                labels=_maker(index[label]),
            )
        )
    for name in names:
        if posixpath.splitext(name)[1].lower() not in IMAGE_SUFFIXES:
            detail = "not an image of the classification tree"
            plan.verdicts.append((name, "rejected", "not_used", detail))
    return plan


def _maker(class_id: int):
    def make(ctx: Context, width: int, height: int) -> ParsedLabels:
        return ParsedLabels(labels=[{"classId": class_id}])

    return make
