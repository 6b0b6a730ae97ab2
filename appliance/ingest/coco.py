"""COCO instances JSON: boxes for detect, polygons for segment, keypoints for pose.

Categories are matched by name. Pixel coordinates are normalised by the size of
the decoded image, never by the sizes the JSON claims. RLE masks and crowd
annotations are refused one by one, with a reason."""

from __future__ import annotations

import json
import math
import posixpath
from typing import Any

from ..errors import Invalid
from .images import MAX_IMAGE_BYTES
from .labels import LabelError, ParsedLabels, parse_yolo
from .layout import _SPLIT_ALIASES
from .plan import Context, Entry, Plan
from .sources import Source, read_member, read_text


def find_coco(source: Source, names: list[str]) -> list[tuple[str, dict]]:
    """The COCO instance files of an archive, parsed."""
    found = []
    for name in names:
        if not name.lower().endswith(".json"):
            continue
        try:
            doc = json.loads(read_text(source, name))
        except (ValueError, Invalid):
            continue
        if isinstance(doc, dict) and {"images", "annotations", "categories"} <= set(
            doc
        ):
            found.append((name, doc))
    return found


def _split_of(json_name: str) -> str:
    words = json_name.lower().replace(".", "_").replace("/", "_").split("_")
    for word in reversed(words):
        for alias, split in _SPLIT_ALIASES.items():
            if word.startswith(alias):
                return split
    return "train"


def plan_coco(source: Source, names: list[str], docs: list[tuple[str, dict]]) -> Plan:
    plan = Plan(format="coco")
    categories: dict[str, int] = {}
    by_base: dict[str, list[str]] = {}
    for name in names:
        by_base.setdefault(posixpath.basename(name), []).append(name)
    used: set[str] = set()
    for json_name, doc in docs:
        used.add(json_name)
        cat_index = _categories(doc, categories, plan)
        annotations = _annotations_by_image(doc, json_name, cat_index, plan)
        split = _split_of(json_name)
        for image in _list(doc, "images"):
            file_name = str(image.get("file_name", ""))
            member = _member(json_name, file_name, set(names), by_base)
            if member is None or member in used:
                detail = f"{json_name} names {file_name!r}, which is not in the archive"
                plan.verdicts.append(
                    (file_name or json_name, "rejected", "missing_image", detail)
                )
                continue
            used.add(member)
            plan.entries.append(
                Entry(
                    path=member,
                    name=posixpath.basename(member),
                    split=split,
                    read=lambda n=member: read_member(source, n, MAX_IMAGE_BYTES),
                    labels=_maker(annotations.get(image.get("id"), [])),
                    label_path=json_name,
                )
            )
    plan.class_names = [
        name for name, _ in sorted(categories.items(), key=lambda kv: kv[1])
    ]
    for name in names:
        if name not in used:
            plan.verdicts.append(
                (name, "ignored", "not_used", "not named by a COCO file")
            )
    plan.notes.append(f"COCO instances: {', '.join(n for n, _ in docs)}")
    return plan


def _list(doc: dict, key: str) -> list[dict]:
    value = doc.get(key)
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _categories(doc: dict, categories: dict[str, int], plan: Plan) -> dict[Any, int]:
    """Category id -> index of its name in the plan's classes (shared across files)."""
    out = {}
    for cat in _list(doc, "categories"):
        name = str(cat.get("name", "")).strip() or f"class{cat.get('id')}"
        out[cat.get("id")] = categories.setdefault(name, len(categories))
        points = cat.get("keypoints")
        if isinstance(points, list) and points and plan.kpt_shape is None:
            plan.kpt_shape = [len(points), 3]
    return out


def _annotations_by_image(
    doc: dict, json_name: str, cat_index: dict, plan: Plan
) -> dict[Any, list[dict]]:
    out: dict[Any, list[dict]] = {}
    for ann in _list(doc, "annotations"):
        where = f"{json_name}#annotation {ann.get('id')}"
        segmentation = ann.get("segmentation")
        if ann.get("iscrowd") or isinstance(segmentation, dict):
            detail = "RLE masks and crowd annotations are not imported; draw polygons"
            plan.verdicts.append((where, "rejected", "rle_annotation", detail))
            continue
        if ann.get("category_id") not in cat_index:
            detail = f"category {ann.get('category_id')} is not in categories"
            plan.verdicts.append((where, "rejected", "class_out_of_range", detail))
            continue
        out.setdefault(ann.get("image_id"), []).append(
            {**ann, "_class": cat_index[ann["category_id"]]}
        )
    return out


def _member(json_name: str, file_name: str, members: set[str], by_base) -> str | None:
    if not file_name or file_name.startswith("/") or ".." in file_name.split("/"):
        return None
    folder = posixpath.dirname(json_name)
    for candidate in (
        posixpath.join(folder, file_name),
        posixpath.join(posixpath.dirname(folder), file_name),
        file_name,
    ):
        if candidate in members:
            return candidate
    matches = by_base.get(posixpath.basename(file_name), [])
    return matches[0] if len(matches) == 1 else None


def _row(ann: dict, task: str, width: int, height: int) -> list[float] | None:
    """The YOLO row for one annotation in pixels, normalised by the real image size."""
    cls = ann["_class"]
    bbox = ann.get("bbox")
    box = None
    if isinstance(bbox, list) and len(bbox) == 4 and all(_num(v) for v in bbox):
        x, y, w, h = bbox
        box = [(x + w / 2) / width, (y + h / 2) / height, w / width, h / height]
    polygons = [
        p for p in ann.get("segmentation") or [] if isinstance(p, list) and len(p) >= 6
    ]
    if task == "segment" or (task == "detect" and polygons and box is None):
        if not polygons:
            return None
        polygon = max(polygons, key=len)
        return [
            cls,
            *[v / (width if i % 2 == 0 else height) for i, v in enumerate(polygon)],
        ]
    if box is None:
        return None
    if task == "pose":
        points = ann.get("keypoints") or []
        coords = [
            v / (width if i % 3 == 0 else height) if i % 3 < 2 else v
            for i, v in enumerate(points)
        ]
        return [cls, *box, *coords]
    return [cls, *box]


def _num(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _maker(annotations: list[dict]):
    def make(ctx: Context, width: int, height: int) -> ParsedLabels:
        if ctx.task not in ("detect", "segment", "pose"):
            raise LabelError(
                "task_mismatch", f"COCO instances cannot make {ctx.task} labels"
            )
        rows = []
        for ann in annotations:
            row = _row(ann, ctx.task, width, height)
            if row is None:
                raise LabelError(
                    "missing_geometry",
                    f"annotation {ann.get('id')} has no {'polygon' if ctx.task == 'segment' else 'box'}",
                )
            rows.append(
                " ".join(repr(float(v)) if i else str(v) for i, v in enumerate(row))
            )
        return parse_yolo("\n".join(rows), ctx.task, ctx.class_count, ctx.kpt_shape)

    return make
