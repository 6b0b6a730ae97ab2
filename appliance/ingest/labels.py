"""YOLO detection label files: parsed, checked and normalised row by row."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .layout import MAX_CLASSES

#: Coordinates may overshoot [0, 1] by this much (rounding in exporters); they are
#: clipped and the file is reported as fixed.
TOLERANCE = 0.01


class LabelError(ValueError):
    """A label file that cannot be used; `reason` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class ParsedLabels:
    labels: list[dict] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)


def _class_id(token: str, line_no: int, class_count: int | None) -> int:
    try:
        value = float(token)
    except ValueError:
        raise LabelError(
            "malformed_row", f"line {line_no}: class {token!r} is not a number"
        ) from None
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise LabelError(
            "malformed_row",
            f"line {line_no}: class {token!r} is not a non-negative integer",
        )
    cls = int(value)
    if class_count is None and cls >= MAX_CLASSES:
        raise LabelError(
            "class_out_of_range",
            f"line {line_no}: class {cls} is over the limit of {MAX_CLASSES}",
        )
    if class_count is not None and cls >= class_count:
        raise LabelError(
            "class_out_of_range",
            f"line {line_no}: class {cls} but the dataset has {class_count} classes (0..{class_count - 1})",
        )
    return cls


def _coords(tokens: list[str], line_no: int) -> tuple[list[float], bool]:
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        raise LabelError(
            "malformed_row", f"line {line_no}: coordinates must be numbers"
        ) from None
    if not all(math.isfinite(v) for v in values):
        raise LabelError(
            "malformed_row", f"line {line_no}: coordinates must be finite numbers"
        )
    if max(values) > 1.5:
        raise LabelError(
            "pixel_coordinates",
            f"line {line_no}: values up to {max(values):g} look like pixel coordinates;"
            " YOLO labels are normalised: divide x by the image width and y by its height",
        )
    if min(values) < -TOLERANCE or max(values) > 1 + TOLERANCE:
        raise LabelError("out_of_bounds", f"line {line_no}: coordinates outside [0, 1]")
    clipped = [min(max(v, 0.0), 1.0) for v in values]
    return clipped, clipped != values


def _box_row(cls: int, values: list[float], line_no: int) -> tuple[dict, bool]:
    cx, cy, w, h = values
    x1, y1, x2, y2 = (
        max(cx - w / 2, 0.0),
        max(cy - h / 2, 0.0),
        min(cx + w / 2, 1.0),
        min(cy + h / 2, 1.0),
    )
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        raise LabelError("degenerate_box", f"line {line_no}: box has no area")
    box = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    changed = any(abs(a - b) > 1e-9 for a, b in zip(box, values, strict=True))
    return {"classId": cls, "bbox": [round(v, 6) for v in box]}, changed


def _polygon_row(cls: int, values: list[float], line_no: int) -> dict:
    xs, ys = values[0::2], values[1::2]
    x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        raise LabelError("degenerate_box", f"line {line_no}: polygon has no area")
    bbox = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    return {
        "classId": cls,
        "bbox": [round(v, 6) for v in bbox],
        "segments": [round(v, 6) for v in values],
    }


def parse_detect(text: str, class_count: int | None) -> ParsedLabels:
    """Parse a detection label file. Polygon rows become boxes and keep their
    polygon; exact duplicate rows are dropped; tiny overshoots are clipped."""
    out = ParsedLabels()
    seen: set[tuple[str, ...]] = set()
    duplicates = clipped = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        key = tuple(tokens)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        cls = _class_id(tokens[0], line_no, class_count)
        count = len(tokens) - 1
        if count == 4:
            values, was_clipped = _coords(tokens[1:], line_no)
            label, changed = _box_row(cls, values, line_no)
            clipped += was_clipped or changed
        elif count >= 6 and count % 2 == 0:
            values, was_clipped = _coords(tokens[1:], line_no)
            label = _polygon_row(cls, values, line_no)
            clipped += was_clipped
        else:
            raise LabelError(
                "malformed_row",
                f"line {line_no}: {len(tokens)} values; a box row has 5 (class cx cy w h)",
            )
        out.labels.append(label)
    if duplicates:
        out.fixes.append(
            f"removed {duplicates} duplicate row{'s' if duplicates > 1 else ''}"
        )
    if clipped:
        out.fixes.append(
            f"clipped {clipped} row{'s' if clipped > 1 else ''} to the image"
        )
    return out
