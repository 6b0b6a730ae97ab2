"""YOLO archives (and images-only ones): a plan from the layout, with every label
file read once up front so the task and keypoint shape can be inferred."""

from __future__ import annotations

import posixpath
from collections import Counter

from .images import MAX_IMAGE_BYTES
from .labels import (
    LabelError,
    ParsedLabels,
    guess_kpt_shape,
    parse_yolo,
    pose_like,
    rows_of,
)
from .layout import IMAGE_SUFFIXES, VIDEO_SUFFIXES, YAML_SUFFIXES, Layout, discover
from .plan import Context, Entry, MemberError, Plan
from .sources import Source, read_member, read_text
from .video import MAX_VIDEO_BYTES, split_of_path

MAX_LABEL_BYTES = 16 * 1024**2


def plan_yolo(source: Source, names: list[str]) -> Plan:
    layout = discover(names, lambda n: read_text(source, n))
    plan = Plan(
        format="yolo" if layout.yaml_name or _has_labels(layout) else "raw",
        class_names=layout.names if layout.yaml_name else None,
        task=layout.task or ("pose" if layout.kpt_shape else None),
        kpt_shape=layout.kpt_shape,
        flip_idx=layout.flip_idx,
        notes=list(layout.notes),
    )
    lengths: Counter = Counter()
    all_rows: list[list[str]] = []
    for item in layout.items:
        text, error = _label_text(source, item.label)
        if text is not None:
            for tokens in rows_of(text):
                lengths[len(tokens)] += 1
                all_rows.append(tokens)
                plan.max_class_id = max(plan.max_class_id, _int_or(tokens[0], -1))
        plan.entries.append(
            Entry(
                path=item.image,
                name=posixpath.basename(item.image),
                split=item.split,
                read=_reader(source, item.image),
                labels=None if item.label is None else _maker(text, error),
                label_path=item.label,
            )
        )
    if plan.task is None and lengths and set(lengths) == {9}:
        plan.obb_rows = True
    if plan.kpt_shape is None and all_rows:
        plan.kpt_guess, plan.kpt_problem = guess_kpt_shape(all_rows)
        plan.pose_rows = plan.task is None and pose_like(all_rows)
    plan.entries += _videos(source, names, layout)
    _other_files(plan, names, layout)
    return plan


def _what(name: str) -> str:
    """Why a file is neither an image nor a label, saying what it is."""
    base = posixpath.basename(name)
    suffix = posixpath.splitext(base)[1].lower()
    if not suffix and base.startswith(".") and "." in base[1:]:
        hidden = "." + base.lstrip(".").rsplit(".", 1)[-1]
        return (
            f"{base} is a hidden file (its name starts with a dot and has nothing"
            f" before {hidden}), not read as an image; give it a name"
        )
    if not suffix:
        return f"{base} has no suffix: only images, label .txt and YAML files are read"
    return f"{base} is a {suffix} file: only images, label .txt and YAML files are read"


def _has_labels(layout: Layout) -> bool:
    return any(item.label for item in layout.items)


def _int_or(token: str, default: int) -> int:
    try:
        return int(float(token))
    except (ValueError, OverflowError):
        return default


def _reader(source: Source, name: str):
    return lambda: read_member(source, name, MAX_IMAGE_BYTES)


def _label_text(
    source: Source, name: str | None
) -> tuple[str | None, MemberError | None]:
    if name is None:
        return None, None
    try:
        return read_member(source, name, MAX_LABEL_BYTES).decode(
            "utf-8", "replace"
        ), None
    except MemberError as exc:
        return None, exc


def _maker(text: str | None, error: MemberError | None):
    def make(ctx: Context, width: int, height: int) -> ParsedLabels:
        if error is not None:
            raise LabelError(error.reason, error.detail)
        return parse_yolo(
            text or "", ctx.task, ctx.class_count, ctx.kpt_shape, ctx.boxes_as_polygons
        )

    return make


def _videos(source: Source, names: list[str], layout: Layout) -> list[Entry]:
    prefix = layout.root + "/" if layout.root else ""
    return [
        Entry(
            path=name,
            name=posixpath.basename(name),
            split=split_of_path(
                name[len(prefix) :] if name.startswith(prefix) else name
            ),
            read=lambda n=name: read_member(source, n, MAX_VIDEO_BYTES),
            video=True,
        )
        for name in names
        if posixpath.splitext(name)[1].lower() in VIDEO_SUFFIXES
    ]


def _other_files(plan: Plan, names: list[str], layout: Layout) -> None:
    images = {item.image for item in layout.items}
    labels = {item.label for item in layout.items if item.label}
    if layout.yaml_name:
        detail = "the dataset description (class names, splits)"
        plan.verdicts.append((layout.yaml_name, "accepted", None, detail))
    voc = 0
    for name in names:
        if name in images or name in labels or name == layout.yaml_name:
            continue
        suffix = posixpath.splitext(name)[1].lower()
        if suffix in VIDEO_SUFFIXES:
            continue
        if name in layout.orphan_labels:
            plan.verdicts.append(
                (name, "rejected", "orphan_label", "no image with this stem")
            )
        elif suffix in IMAGE_SUFFIXES:
            detail = f"not under {layout.root or 'the root'}"
            plan.verdicts.append((name, "rejected", "outside_dataset_root", detail))
        elif suffix == ".xml":
            voc += 1
            detail = "Pascal VOC XML is detected but not imported"
            plan.verdicts.append((name, "rejected", "voc_not_imported", detail))
        elif suffix == ".txt" or name.lower().endswith(YAML_SUFFIXES):
            plan.verdicts.append(
                (name, "rejected", "not_used", "not a label of any image")
            )
        else:
            plan.verdicts.append((name, "rejected", "unsupported_file", _what(name)))
    if voc:
        plan.notes.append(
            f"found {voc} Pascal VOC XML file{'s' if voc > 1 else ''}: VOC labels are"
            " not imported, so their images come in unlabeled; convert them to YOLO"
            " labels to keep them"
        )
