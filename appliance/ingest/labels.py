"""YOLO label files for every task: parsed, checked and normalised row by row
into the label shape of appliance.labels."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field

from ..labels import box_of_points
from .layout import MAX_CLASSES

#: Coordinates may overshoot [0, 1] by this much (rounding in exporters); they are
#: clipped and the file is reported as fixed.
TOLERANCE = 0.01
#: Values above this are taken for pixel coordinates rather than an overshoot.
PIXEL_HINT = 1.5
#: Changes smaller than this (rounding in the last printed digit) are not reported.
NOISE = 1e-5
_DIGITS = 6


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
    #: (reason, detail) when some of the image's annotations were refused one by
    #: one (COCO); with no labels left the image is stored with this error.
    error: tuple[str, str] | None = None
    #: Annotations refused one by one while parsing: (reason, detail) each.
    rejected: list[tuple[str, str]] = field(default_factory=list)


def rows_of(text: str) -> list[list[str]]:
    """The non-blank rows of a label file, as tokens."""
    return [tokens for tokens in (line.split() for line in text.splitlines()) if tokens]


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
    limit = MAX_CLASSES if class_count is None else class_count
    if cls >= limit:
        if class_count is None:
            detail = f"line {line_no}: class {cls} is over the limit of {MAX_CLASSES}"
        elif class_count == 0:
            detail = (
                f"line {line_no}: class {cls}, but the dataset YAML declares no"
                " classes (its names are empty)"
            )
        else:
            detail = (
                f"line {line_no}: class {cls} but the dataset has {class_count}"
                f" classes (0..{class_count - 1})"
            )
        raise LabelError("class_out_of_range", detail)
    return cls


def _numbers(tokens: list[str], line_no: int) -> list[float]:
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
    return values


def _unit(values: list[float], line_no: int) -> tuple[list[float], bool]:
    """Coordinates clipped into [0, 1] when they overshoot by the tolerance."""
    if values and max(values) > PIXEL_HINT:
        raise LabelError(
            "pixel_coordinates",
            f"line {line_no}: values up to {max(values):g} look like pixel coordinates;"
            " YOLO labels are normalised: divide x by the image width and y by its height",
        )
    if values and (min(values) < -TOLERANCE or max(values) > 1 + TOLERANCE):
        raise LabelError("out_of_bounds", f"line {line_no}: coordinates outside [0, 1]")
    clipped = [min(max(v, 0.0), 1.0) for v in values]
    return clipped, any(abs(a - b) > NOISE for a, b in zip(clipped, values))


def _clip_box(values: list[float], line_no: int) -> tuple[list[float], bool]:
    cx, cy, w, h = values
    x1, y1 = max(cx - w / 2, 0.0), max(cy - h / 2, 0.0)
    x2, y2 = min(cx + w / 2, 1.0), min(cy + h / 2, 1.0)
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        raise LabelError("degenerate_box", f"line {line_no}: box has no area")
    box = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
    changed = any(abs(a - b) > NOISE for a, b in zip(box, values, strict=True))
    return [round(v, _DIGITS) for v in box], changed


def _polygon(values: list[float], line_no: int) -> list[float]:
    xs, ys = values[0::2], values[1::2]
    if max(xs) - min(xs) <= 0 or max(ys) - min(ys) <= 0:
        raise LabelError("degenerate_box", f"line {line_no}: polygon has no area")
    return [round(v, _DIGITS) for v in values]


def infer_kpt_shape(lengths: Counter) -> list[int] | None:
    """[keypoints, dims] from the keypoint value counts of pose rows (columns after
    class and box): one consistent count, triples when it divides by three."""
    counts = [n for n in lengths if n > 0]
    if len(counts) != 1:
        return None
    n = counts[0]
    if n % 3 == 0:
        return [n // 3, 3]
    if n % 2 == 0:
        return [n // 2, 2]
    return None


def guess_kpt_shape(rows: list[list[str]]) -> tuple[list[int] | None, str | None]:
    """The keypoint shape pose rows imply when no kpt_shape is given: every row
    must have the same length 5 + k*d. d = 3 is taken when every third keypoint
    value is a visibility flag (0, 1 or 2), d = 2 when only pairs fit; a length
    both fit without flags, or rows of 9 values (kpt_shape [2, 2] or an obb row),
    are ambiguous. Returns (shape, None) or (None, why)."""
    ask = "; declare kpt_shape: [keypoints, 2 or 3] in data.yaml"
    lengths = {len(tokens) for tokens in rows}
    if not lengths:
        return None, None
    if len(lengths) != 1:
        return None, (
            f"pose rows of different lengths ({', '.join(map(str, sorted(lengths)))})"
            + ask
        )
    n = lengths.pop() - 5
    if n < 2:
        return None, None  # not pose rows at all: the parser says what they are
    flags = n % 3 == 0 and all(_is_flag(t[5 + i]) for t in rows for i in range(2, n, 3))
    if flags:
        return [n // 3, 3], None
    if n % 2 == 0 and n != 4:
        return [n // 2, 2], None
    why = (
        "rows of 9 values are either kpt_shape [2, 2] or obb corners"
        if n == 4
        else f"rows of {n + 5} values fit no keypoint shape with visibility flags"
    )
    return None, why + ask


def _is_flag(token: str, flags=(0.0, 1.0, 2.0)) -> bool:
    try:
        return float(token) in flags
    except ValueError:
        return False


def pose_like(rows: list[list[str]]) -> bool:
    """Rows that can only be pose rows: one length 5 + 3k, every third keypoint
    value a visibility flag, and at least one flag of 2 (no coordinate is 2)."""
    shape, _ = guess_kpt_shape(rows)
    if not shape or shape[1] != 3:
        return False
    return any(
        _is_flag(t[5 + i], (2.0,)) for t in rows for i in range(2, len(t) - 5, 3)
    )


class _Rows:
    """Per-row parsing for one task; counts what was clipped."""

    def __init__(
        self, task: str, class_count: int | None, kpt_shape, boxes_as_polygons=False
    ) -> None:
        self.task = task
        self.boxes_as_polygons = boxes_as_polygons
        self.converted = 0
        self.class_count = class_count
        self.kpt_shape = kpt_shape
        self.clipped = 0
        self._changed = False

    def label(self, tokens: list[str], line_no: int) -> dict:
        cls = _class_id(tokens[0], line_no, self.class_count)
        values = _numbers(tokens[1:], line_no)
        self._changed = False
        label = getattr(self, f"_{self.task}")(cls, values, line_no)
        self.clipped += self._changed
        return label

    def _coords(self, values: list[float], line_no: int) -> list[float]:
        clipped, changed = _unit(values, line_no)
        self._changed |= changed
        return clipped

    def _box(self, values: list[float], line_no: int) -> list[float]:
        box, changed = _clip_box(self._coords(values, line_no), line_no)
        self._changed |= changed
        return box

    def _detect(self, cls: int, values: list[float], line_no: int) -> dict:
        if len(values) == 4:
            return {"classId": cls, "bbox": self._box(values, line_no)}
        if len(values) >= 6 and len(values) % 2 == 0:
            points = _polygon(self._coords(values, line_no), line_no)
            bbox = box_of_points(points[0::2], points[1::2])
            return {"classId": cls, "bbox": bbox, "segments": points}
        raise LabelError(
            "malformed_row",
            f"line {line_no}: {len(values) + 1} values; a box row has 5 (class cx cy w h)",
        )

    def _segment(self, cls: int, values: list[float], line_no: int) -> dict:
        if len(values) == 4 and self.boxes_as_polygons:
            cx, cy, w, h = self._box(values, line_no)
            x1, y1, x2, y2 = cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2
            values = [x1, y1, x2, y1, x2, y2, x1, y2]
            self.converted += 1
        elif len(values) == 4:
            raise LabelError(
                "box_in_segment_dataset",
                f"line {line_no}: a box row (5 values) in a segment dataset; draw a polygon",
            )
        if len(values) < 6 or len(values) % 2:
            raise LabelError(
                "malformed_row",
                f"line {line_no}: {len(values) + 1} values; a polygon row has class"
                " and at least three x y pairs",
            )
        points = _polygon(self._coords(values, line_no), line_no)
        bbox = box_of_points(points[0::2], points[1::2])
        return {"classId": cls, "bbox": bbox, "segments": points}

    def _pose(self, cls: int, values: list[float], line_no: int) -> dict:
        shape = self.kpt_shape
        if shape and len(values) != 4 + shape[0] * shape[1]:
            raise LabelError(
                "kpt_shape_mismatch",
                f"line {line_no}: kpt_shape {list(shape)} expects"
                f" {5 + shape[0] * shape[1]} columns, found {len(values) + 1}",
            )
        if len(values) < 6:
            raise LabelError(
                "malformed_row",
                f"line {line_no}: {len(values) + 1} values; a pose row has class, box"
                " and keypoints",
            )
        guess = infer_kpt_shape(Counter({len(values) - 4: 1}))
        dims = shape[1] if shape else (guess[1] if guess else 2)
        box = self._box(values[:4], line_no)
        points = values[4:]
        coords = [v for i, v in enumerate(points) if i % dims < 2]
        coords = self._coords(coords, line_no)
        out, it = [], iter(coords)
        for i, v in enumerate(points):
            out.append(round(next(it), _DIGITS) if i % dims < 2 else v)
        return {"classId": cls, "bbox": box, "keypoints": out}

    def _classify(self, cls: int, values: list[float], line_no: int) -> dict:
        if values:
            raise LabelError(
                "task_mismatch", f"line {line_no}: a classification row is a class only"
            )
        return {"classId": cls}

    def _obb(self, cls: int, values: list[float], line_no: int) -> dict:
        if len(values) != 8:
            raise LabelError(
                "task_mismatch" if len(values) == 4 else "malformed_row",
                f"line {line_no}: {len(values) + 1} values; an obb row has 9"
                " (class x1 y1 x2 y2 x3 y3 x4 y4)",
            )
        corners = _polygon(self._coords(values, line_no), line_no)
        return {"classId": cls, "obb": corners}


def parse_yolo(
    text: str,
    task: str,
    class_count: int | None,
    kpt_shape: list[int] | None = None,
    boxes_as_polygons: bool = False,
) -> ParsedLabels:
    """Parse a YOLO label file for a task. Exact duplicate rows are dropped, tiny
    overshoots clipped; polygon rows in a detect dataset become boxes and keep
    their polygon. Raises LabelError for the whole file on the first bad row."""
    out = ParsedLabels()
    parser = _Rows(task, class_count, kpt_shape, boxes_as_polygons)
    seen: set[tuple[str, ...]] = set()
    kinds: set[str] = set()
    duplicates = 0
    for line_no, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        key = tuple(tokens)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        label = parser.label(tokens, line_no)
        if task in ("detect", "segment"):
            kinds.add("polygon" if "segments" in label else "box")
        out.labels.append(label)
    if task == "classify" and len(out.labels) > 1:
        raise LabelError("malformed_row", "a classified image has one class")
    if len(kinds) > 1:
        raise LabelError(
            "mixed_row_types",
            "the file mixes box rows (5 values) and polygon rows; use one kind per file",
        )
    if duplicates:
        out.fixes.append(
            f"removed {duplicates} duplicate row{'s' if duplicates > 1 else ''}"
        )
    if parser.converted:
        out.fixes.append(f"made {parser.converted} box rows into 4-point polygons")
    if parser.clipped:
        out.fixes.append(
            f"clipped {parser.clipped} row{'s' if parser.clipped > 1 else ''} to the image"
        )
    return out


def parse_detect(text: str, class_count: int | None) -> ParsedLabels:
    return parse_yolo(text, "detect", class_count)
