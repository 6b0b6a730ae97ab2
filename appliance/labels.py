"""One image's annotations, in the contract's shape, for every task.

A label is a dict with a `classId` and the geometry its task needs, all
coordinates normalised to 0..1 in the displayed (EXIF-applied) image:

- detect:   {"classId", "bbox": [cx, cy, w, h]}  (a polygon may ride along in
            "segments", kept from segment-style source files)
- segment:  {"classId", "bbox", "segments": [x1, y1, x2, y2, ...]}  (>= 3 points)
- pose:     {"classId", "bbox", "keypoints": [x, y, (v), ...]}  one consistent
            shape per dataset, pairs or triples
- obb:      {"classId", "obb": [x1, y1, x2, y2, x3, y3, x4, y4]}
- classify: {"classId"}  (one per image)

`check` validates what a client sends; `to_row` and `from_row` convert to and
from the rows of Ultralytics NDJSON (and YOLO label files), which carry the same
numbers in task order: boxes `[c, cx, cy, w, h]`, segments `[c, x1, y1, ...]`,
pose `[c, cx, cy, w, h, k...]`, obb `[c, x1, y1, ... x4, y4]`, classification
`[c]`."""

from __future__ import annotations

import math
from typing import Any

from .errors import Invalid

TASKS = ("detect", "segment", "pose", "obb", "classify")
#: The key of NDJSON's `annotations` object that carries each task's rows.
NDJSON_KEYS = {
    "detect": "boxes",
    "segment": "segments",
    "pose": "pose",
    "obb": "obb",
    "classify": "classification",
}
MAX_POINTS = 10_000
_DIGITS = 6


def _numbers(value: Any, where: str, what: str) -> list[float]:
    if not isinstance(value, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        for v in value
    ):
        raise Invalid(f"{where}.{what} must be a list of finite numbers")
    if len(value) > MAX_POINTS:
        raise Invalid(f"{where}.{what} has more than {MAX_POINTS} numbers")
    return [float(v) for v in value]


def _unit(values: list[float], where: str, what: str) -> list[float]:
    if any(v < 0 or v > 1 for v in values):
        raise Invalid(f"{where}.{what} must be normalised to 0..1")
    return [round(v, _DIGITS) for v in values]


def box_of_points(xs: list[float], ys: list[float]) -> list[float]:
    """The [cx, cy, w, h] box around some points."""
    x1, x2, y1, y2 = min(xs), max(xs), min(ys), max(ys)
    return [
        round((x1 + x2) / 2, _DIGITS),
        round((y1 + y2) / 2, _DIGITS),
        round(x2 - x1, _DIGITS),
        round(y2 - y1, _DIGITS),
    ]


def _bbox(label: dict, where: str, required: bool) -> list[float] | None:
    if "bbox" not in label:
        if required:
            raise Invalid(f"{where}.bbox is required")
        return None
    bbox = _unit(_numbers(label["bbox"], where, "bbox"), where, "bbox")
    if len(bbox) != 4:
        raise Invalid(f"{where}.bbox must be [x_center, y_center, width, height]")
    if bbox[2] <= 0 or bbox[3] <= 0:
        raise Invalid(f"{where}.bbox must have a width and a height")
    return bbox


def kpt_dims(keypoints: list[float], kpt_shape: list[int] | None) -> int:
    """2 or 3 numbers per keypoint: from the dataset's kpt_shape when known."""
    if kpt_shape:
        return int(kpt_shape[1])
    return 3 if len(keypoints) % 3 == 0 and len(keypoints) % 2 else 2


def check(
    task: str,
    label: Any,
    class_count: int,
    where: str = "label",
    kpt_shape: list[int] | None = None,
) -> dict:
    """A client's label, validated for the dataset's task and rounded; raises
    Invalid naming the field at fault."""
    if not isinstance(label, dict):
        raise Invalid(f"{where} must be an object")
    allowed = {"classId", "bbox", "segments", "keypoints", "obb", "skeletonId"}
    unknown = sorted(set(label) - allowed)
    if unknown:
        raise Invalid(f"{where} has unknown fields: {', '.join(unknown)}")
    class_id = label.get("classId")
    if not isinstance(class_id, int) or isinstance(class_id, bool):
        raise Invalid(f"{where}.classId must be an integer")
    top = max(class_count, 1)
    if not 0 <= class_id < top:
        raise Invalid(f"{where}.classId must be between 0 and {top - 1}")
    out: dict[str, Any] = {"classId": class_id}
    if task == "classify":
        return out
    if task == "obb":
        if "obb" not in label:
            raise Invalid(f"{where}.obb is required for an obb dataset")
        corners = _unit(_numbers(label["obb"], where, "obb"), where, "obb")
        if len(corners) != 8:
            raise Invalid(f"{where}.obb must be four corners [x1, y1, ... x4, y4]")
        out["obb"] = corners
        return out
    if task == "segment" or (task == "detect" and "segments" in label):
        if "segments" in label:
            points = _unit(
                _numbers(label["segments"], where, "segments"), where, "segments"
            )
            if len(points) < 6 or len(points) % 2:
                raise Invalid(f"{where}.segments must be at least three [x, y] points")
            out["segments"] = points
            out["bbox"] = _bbox(label, where, False) or box_of_points(
                points[0::2], points[1::2]
            )
            return out
        raise Invalid(f"{where}.segments is required for a segment dataset")
    out["bbox"] = _bbox(label, where, True)
    if task == "pose":
        if "keypoints" not in label:
            raise Invalid(f"{where}.keypoints is required for a pose dataset")
        points = _numbers(label["keypoints"], where, "keypoints")
        dims = kpt_dims(points, kpt_shape)
        expected = kpt_shape[0] * kpt_shape[1] if kpt_shape else None
        if not points or len(points) % dims or (expected and len(points) != expected):
            want = f"{expected} numbers" if expected else f"a multiple of {dims}"
            raise Invalid(
                f"{where}.keypoints must hold {want} (x, y{', v' if dims == 3 else ''}"
                " per keypoint)"
            )
        for i, v in enumerate(points):
            if i % dims < 2 and not 0 <= v <= 1:
                raise Invalid(f"{where}.keypoints coordinates must be in 0..1")
        out["keypoints"] = [round(v, _DIGITS) for v in points]
        if isinstance(label.get("skeletonId"), str):
            out["skeletonId"] = label["skeletonId"][:128]
    return out


def check_all(
    task: str, labels: Any, class_count: int, kpt_shape: list[int] | None = None
) -> list[dict]:
    if not isinstance(labels, list):
        raise Invalid("labels must be a list")
    if task == "classify" and len(labels) > 1:
        raise Invalid("a classify image has at most one label")
    return [
        check(task, label, class_count, f"labels[{n}]", kpt_shape)
        for n, label in enumerate(labels)
    ]


def to_row(task: str, label: dict) -> list[float | int] | None:
    """The NDJSON / YOLO-file row for a label, or None when the label carries
    nothing this task can use (e.g. a box-only label in a segment dataset)."""
    cls = label["classId"]
    if task == "classify":
        return [cls]
    if task == "obb":
        return [cls, *label["obb"]] if label.get("obb") else None
    if task == "segment":
        return [cls, *label["segments"]] if label.get("segments") else None
    if not label.get("bbox"):
        return None
    if task == "pose":
        return [cls, *label["bbox"], *label.get("keypoints", [])]
    return [cls, *label["bbox"]]


def from_row(
    task: str, row: list, kpt_shape: list[int] | None = None
) -> dict[str, Any]:
    """A label from an NDJSON row (already known to be numbers). Raises
    ValueError with a short reason when the row's length does not fit the task."""
    cls, values = int(row[0]), [round(float(v), _DIGITS) for v in row[1:]]
    if task == "classify":
        return {"classId": cls}
    if task == "obb":
        if len(values) != 8:
            raise ValueError(f"an obb row has 9 values, found {len(row)}")
        return {"classId": cls, "obb": values}
    if task == "segment" or (task == "detect" and len(values) > 4):
        if len(values) < 6 or len(values) % 2:
            raise ValueError(f"a polygon row has an odd or short length {len(row)}")
        return {
            "classId": cls,
            "bbox": box_of_points(values[0::2], values[1::2]),
            "segments": values,
        }
    if len(values) < 4:
        raise ValueError(f"a box row has 5 values, found {len(row)}")
    label: dict[str, Any] = {"classId": cls, "bbox": values[:4]}
    if task == "pose":
        points = values[4:]
        if kpt_shape and len(points) != kpt_shape[0] * kpt_shape[1]:
            raise ValueError(
                f"kpt_shape {kpt_shape} expects {5 + kpt_shape[0] * kpt_shape[1]}"
                f" values per row, found {len(row)}"
            )
        label["keypoints"] = points
    elif len(values) != 4:
        raise ValueError(f"a box row has 5 values, found {len(row)}")
    return label


def infer_kpt_shape(labels: list[dict]) -> list[int] | None:
    """[keypoints, dims] from the first pose label, as the Platform infers it."""
    for label in labels:
        points = label.get("keypoints")
        if points:
            dims = kpt_dims(points, None)
            return [len(points) // dims, dims]
    return None
