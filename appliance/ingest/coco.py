"""COCO instances JSON: boxes for detect, polygons for segment, keypoints for pose.

Categories are matched by name. Pixel coordinates are normalised by the size of
the decoded image, never by the sizes the JSON claims. RLE masks and crowd
annotations are refused one by one, with a reason; an image left with no
annotation that was not refused is stored with an error, not as background.

COCO coordinates are pixels by design. A box or polygon that runs past the image
edge by at most COCO_TOLERANCE of its side is clipped (`fixed`, `clipped`); one that
runs further is refused alone (`out_of_bounds`), and the image's other annotations
are kept. Annotations naming an image id the file does not list are refused
(`missing_image`)."""

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

#: How far past the image edge (a fraction of its width or height) a COCO shape
#: may run and still be clipped to the image rather than refused.
COCO_TOLERANCE = 0.05


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
        plan.verdicts.append((json_name, "accepted", None, "COCO annotations"))
        cat_index = _categories(doc, categories, plan)
        annotations, refused = _annotations_by_image(doc, json_name, cat_index, plan)
        split = _split_of(json_name)
        image_ids = {image.get("id") for image in _list(doc, "images")}
        for image_id, anns in annotations.items():
            if image_id not in image_ids:
                for ann in anns:
                    plan.verdicts.append(
                        (
                            f"{json_name}#annotation {ann.get('id')}",
                            "rejected",
                            "missing_image",
                            f"image id {image_id!r} is not in {json_name}'s images",
                        )
                    )
        for image in _list(doc, "images"):
            file_name = str(image.get("file_name", "")).replace("\\", "/")
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
                    labels=_maker(
                        annotations.get(image.get("id"), []),
                        refused.get(image.get("id")),
                    ),
                    label_path=json_name,
                )
            )
    plan.class_names = [
        name for name, _ in sorted(categories.items(), key=lambda kv: kv[1])
    ]
    for name in names:
        if name not in used:
            plan.verdicts.append(
                (name, "rejected", "not_used", "not named by a COCO file")
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
) -> tuple[dict[Any, list[dict]], dict[Any, tuple[str, str]]]:
    """Usable annotations by image id, and for each image id the first refusal."""
    out: dict[Any, list[dict]] = {}
    refused: dict[Any, tuple[str, str]] = {}
    for ann in _list(doc, "annotations"):
        where = f"{json_name}#annotation {ann.get('id')}"
        segmentation = ann.get("segmentation")
        if ann.get("iscrowd") or isinstance(segmentation, dict):
            reason = "rle_annotation"
            detail = "RLE masks and crowd annotations are not imported; draw polygons"
        elif ann.get("category_id") not in cat_index:
            reason = "class_out_of_range"
            detail = f"category {ann.get('category_id')} is not in categories"
        else:
            out.setdefault(ann.get("image_id"), []).append(
                {**ann, "_class": cat_index[ann["category_id"]]}
            )
            continue
        plan.verdicts.append((where, "rejected", reason, detail))
        refused.setdefault(
            ann.get("image_id"), (reason, f"annotation {ann.get('id')}: {detail}")
        )
    return out, refused


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


def _inside(value: float, side: int, what: str) -> tuple[float, bool]:
    """A pixel coordinate clipped to [0, side] when it runs past by a little."""
    if -COCO_TOLERANCE * side <= value <= side * (1 + COCO_TOLERANCE):
        clipped = min(max(value, 0.0), float(side))
        return clipped, clipped != value
    raise LabelError(
        "out_of_bounds",
        f"{what} reaches {value:g} px, past the image's {side} px by more than"
        f" {COCO_TOLERANCE:.0%}",
    )


def _row(
    ann: dict, task: str, width: int, height: int
) -> tuple[list[float] | None, bool]:
    """The YOLO row for one annotation in pixels, normalised by the real image
    size, and whether it had to be clipped to the image."""
    cls = ann["_class"]
    what = f"annotation {ann.get('id')}"
    bbox = ann.get("bbox")
    box, clipped = None, False
    if isinstance(bbox, list) and len(bbox) == 4 and all(_num(v) for v in bbox):
        x, y, w, h = bbox
        x1, c1 = _inside(x, width, what)
        y1, c2 = _inside(y, height, what)
        x2, c3 = _inside(x + w, width, what)
        y2, c4 = _inside(y + h, height, what)
        clipped = c1 or c2 or c3 or c4
        box = [
            (x1 + x2) / 2 / width,
            (y1 + y2) / 2 / height,
            (x2 - x1) / width,
            (y2 - y1) / height,
        ]
    polygons = [
        p
        for p in ann.get("segmentation") or []
        if isinstance(p, list) and len(p) >= 6 and all(_num(v) for v in p)
    ]
    if task == "segment" or (task == "detect" and polygons and box is None):
        if not polygons:
            return None, False
        points = []
        for i, v in enumerate(max(polygons, key=len)):
            side = width if i % 2 == 0 else height
            value, changed = _inside(v, side, what)
            clipped |= changed
            points.append(value / side)
        return [cls, *points], clipped
    if box is None:
        return None, False
    if task == "pose":
        points = ann.get("keypoints") or []
        if not all(_num(v) for v in points):
            raise LabelError("malformed_row", f"{what}: keypoints must be numbers")
        coords = []
        for i, v in enumerate(points):
            if i % 3 < 2:
                side = width if i % 3 == 0 else height
                v, changed = _inside(v, side, what)
                clipped |= changed
                v /= side
            coords.append(v)
        return [cls, *box, *coords], clipped
    return [cls, *box], clipped


def _num(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _maker(annotations: list[dict], refused: tuple[str, str] | None = None):
    """Labels of one image: each annotation is checked alone, so one bad
    annotation is refused without the others (the first refusal is the image's
    error when none is left)."""

    def make(ctx: Context, width: int, height: int) -> ParsedLabels:
        if ctx.task not in ("detect", "segment", "pose"):
            raise LabelError(
                "task_mismatch", f"COCO instances cannot make {ctx.task} labels"
            )
        out = ParsedLabels(error=refused)
        clipped = errors = 0
        for ann in annotations:
            try:
                label, was_clipped = _label(ann, ctx, width, height)
            except LabelError as exc:
                errors += 1
                out.error = out.error or (exc.reason, exc.detail)
                out.rejected.append((exc.reason, exc.detail))
                continue
            out.labels.append(label)
            clipped += was_clipped
        if errors and out.labels:
            reason, detail = out.error or ("", "")
            out.fixes.append(
                f"dropped {errors} refused annotation{'s' if errors > 1 else ''}"
                f" ({reason}: {detail}); the others were kept"
            )
        if clipped:
            out.fixes.insert(
                0,
                f"clipped {clipped} annotation{'s' if clipped > 1 else ''} to the image",
            )
        return out

    return make


def _label(ann: dict, ctx: Context, width: int, height: int) -> tuple[dict, bool]:
    row, clipped = _row(ann, ctx.task, width, height)
    if row is None:
        shape = "polygon" if ctx.task == "segment" else "box"
        raise LabelError(
            "missing_geometry", f"annotation {ann.get('id')} has no {shape}"
        )
    text = " ".join(repr(float(v)) if i else str(v) for i, v in enumerate(row))
    try:
        parsed = parse_yolo(text, ctx.task, ctx.class_count, ctx.kpt_shape)
    except LabelError as exc:
        # The row was made here from pixels: a YOLO hint would mislead.
        detail = exc.detail.replace("line 1", f"annotation {ann.get('id')}", 1)
        raise LabelError(exc.reason, detail) from None
    return parsed.labels[0], clipped
