"""Class names: the source's classes mapped onto the dataset's, by name, with the
caller's `classMapping` (incoming name -> index, name, or None to drop)."""

from __future__ import annotations

from typing import Any

from ..errors import Invalid
from .layout import MAX_CLASSES, MAX_NAME_LENGTH

Mapping = dict[int, int | None]


def check_class_mapping(value: Any) -> dict[str, int | str | None]:
    """The ingest body's classMapping, validated."""
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_CLASSES:
        raise Invalid(f"classMapping must be an object of at most {MAX_CLASSES} names")
    for key, target in value.items():
        if not 1 <= len(key) <= 1000:
            raise Invalid("classMapping names must be 1-1000 characters")
        if target is None:
            continue
        if isinstance(target, bool) or not isinstance(target, int | str):
            raise Invalid(f"classMapping[{key!r}] must be an index, a name or null")
        if isinstance(target, int) and not 0 <= target < MAX_CLASSES:
            raise Invalid(
                f"classMapping[{key!r}] must be between 0 and {MAX_CLASSES - 1}"
            )
        if isinstance(target, str) and not (
            target.strip() and len(target) <= MAX_NAME_LENGTH and target.isprintable()
        ):
            raise Invalid(f"classMapping[{key!r}] must be a printable class name")
    return value


def map_classes(
    existing: list[str],
    incoming: list[str],
    class_mapping: dict[str, int | str | None],
) -> tuple[list[str], Mapping]:
    """The dataset's class names after this ingest, and incoming index -> dataset
    index (None: the class is dropped). New names are appended."""
    names = list(existing)
    position = {name: i for i, name in enumerate(names)}
    mapping: Mapping = {}
    for index, name in enumerate(incoming):
        target = class_mapping.get(name, name)
        if target is None:
            mapping[index] = None
            continue
        if isinstance(target, int):
            while len(names) <= target:
                position.setdefault(f"class{len(names)}", len(names))
                names.append(f"class{len(names)}")
            mapping[index] = target
            continue
        if target not in position:
            position[target] = len(names)
            names.append(target)
        mapping[index] = position[target]
    return names, mapping


def apply(labels: list[dict], mapping: Mapping) -> tuple[list[dict], int]:
    """Labels with dataset class ids; returns them and how many were dropped."""
    out = []
    for label in labels:
        target = mapping.get(label["classId"], label["classId"])
        if target is not None:
            out.append({**label, "classId": target})
    return out, len(labels) - len(out)
