"""A dataset's class statistics, in the contract's DatasetClassStatsResponse
shape: per-class counts, image and annotation histograms, and two 20x20
heatmaps.

Counts come from SQL over every image (class counts aggregate the labels'
JSON in SQLite; sizes, formats and objects per image come from one streamed
pass over plain columns). Annotation geometry (box sizes, points, centres) is
read from the labels themselves, from at most SAMPLE_LIMIT labelled images
spread evenly over the dataset; above that, `sampleSize` says how many.

Results are kept in memory for CACHE_SECONDS, keyed on the dataset's
`updated_at`, which every write to the dataset or its images changes."""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from typing import Any

from .labels import kpt_dims
from .store import Database

#: Labelled images whose annotation geometry is read; above this, a sample.
SAMPLE_LIMIT = 10_000
CACHE_SECONDS = 300
GRID = 20
_BINS = 20
_DISCRETE_SPAN = 50
_CACHE_SIZE = 256


def _nice(step: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at least `step`."""
    if step <= 0:
        return 1
    power = 10 ** math.floor(math.log10(step))
    for factor in (1, 2, 5, 10):
        if factor * power >= step:
            return factor * power
    return 10 * power


def histogram(values: list[float], *, size: float | None = None) -> list[dict]:
    """Counts per bin, lowest first. Integers spanning fewer than 50 values get
    one bin each (size 1); other values get about 20 bins of a round width."""
    if not values:
        return []
    low, high = min(values), max(values)
    if size is None:
        integral = all(float(v).is_integer() for v in values)
        size = (
            1
            if integral and high - low < _DISCRETE_SPAN
            else _nice((high - low) / _BINS)
        )
    counts = Counter(math.floor(v / size) for v in values)
    return [
        {"bin": round(k * size, 6), "count": n, "size": size}
        for k, n in sorted(counts.items())
    ]


def _grid() -> list[list[int]]:
    return [[0] * GRID for _ in range(GRID)]


def _cell(value: float, low: float, high: float) -> int:
    if high <= low:
        return 0
    return min(int((value - low) / (high - low) * GRID), GRID - 1)


def _box(label: dict) -> list[float] | None:
    """[cx, cy, w, h] of a label: its bbox, or the extent of its obb corners."""
    if label.get("bbox"):
        return label["bbox"]
    corners = label.get("obb")
    if corners:
        xs, ys = corners[0::2], corners[1::2]
        return [
            (min(xs) + max(xs)) / 2,
            (min(ys) + max(ys)) / 2,
            max(xs) - min(xs),
            max(ys) - min(ys),
        ]
    return None


def _points(label: dict, kpt_shape: list[int] | None) -> int | None:
    if label.get("segments"):
        return len(label["segments"]) // 2
    if label.get("keypoints"):
        points = label["keypoints"]
        return len(points) // kpt_dims(points, kpt_shape)
    if label.get("obb"):
        return 4
    return None


def _geometry(db: Database, dataset: dict) -> dict[str, Any]:
    rows, labelled = db.label_sample(dataset["id"], SAMPLE_LIMIT)
    kpt_shape = (dataset.get("metadata") or {}).get("kptShape")
    widths, heights, norm_w, norm_h, points = [], [], [], [], []
    location = _grid()
    images = 0
    for width, height, text in rows:
        images += 1
        for label in json.loads(text):
            count = _points(label, kpt_shape)
            if count is not None:
                points.append(count)
            box = _box(label)
            if box is None:
                continue
            cx, cy, w, h = box
            norm_w.append(w)
            norm_h.append(h)
            widths.append(round(w * width))
            heights.append(round(h * height))
            location[_cell(cy, 0, 1)][_cell(cx, 0, 1)] += 1
    return {
        "images": images,
        "sampled": labelled > images,
        "pointsHistogram": histogram(points),
        "bboxWidthHistogram": histogram(widths),
        "bboxHeightHistogram": histogram(heights),
        "bboxWidthNormHistogram": histogram(norm_w, size=0.05),
        "bboxHeightNormHistogram": histogram(norm_h, size=0.05),
        "locationHeatmap": {
            "bins": location,
            "maxCount": max(max(row) for row in location),
        },
    }


def _columns(db: Database, dataset_id: str) -> dict[str, Any]:
    widths, heights, sizes, objects = [], [], [], []
    formats: Counter[str] = Counter()
    for width, height, size, ext, label_count in db.image_columns(dataset_id):
        widths.append(width)
        heights.append(height)
        sizes.append(size)
        objects.append(label_count)
        formats[ext] += 1
    dims = _grid()
    low_w, high_w = (min(widths), max(widths)) if widths else (0, 0)
    low_h, high_h = (min(heights), max(heights)) if heights else (0, 0)
    for width, height in zip(widths, heights, strict=True):
        dims[_cell(height, low_h, high_h)][_cell(width, low_w, high_w)] += 1
    return {
        "widthHistogram": histogram(widths),
        "heightHistogram": histogram(heights),
        "fileSizeHistogram": histogram(sizes),
        "objectsPerImageHistogram": histogram(objects),
        "formatDistribution": dict(formats),
        "dimensionHeatmap": {
            "bins": dims,
            "maxCount": max(max(row) for row in dims),
            "minWidth": low_w,
            "maxWidth": high_w,
            "minHeight": low_h,
            "maxHeight": high_h,
        },
    }


def compute(db: Database, dataset: dict) -> dict[str, Any]:
    """The statistics of a dataset, without `cached`."""
    names = dataset["class_names"] or []
    counts = {cls: (n, images) for cls, n, images in db.class_counts(dataset["id"])}
    classes = [
        {
            "classId": cls,
            "count": counts.get(cls, (0, 0))[0],
            "imageCount": counts.get(cls, (0, 0))[1],
        }
        for cls in sorted(set(range(len(names))) | set(counts))
    ]
    columns = _columns(db, dataset["id"])
    geometry = _geometry(db, dataset)
    image_stats = {
        key: columns.get(key, geometry.get(key))
        for key in (
            "widthHistogram",
            "heightHistogram",
            "pointsHistogram",
            "formatDistribution",
            "fileSizeHistogram",
            "objectsPerImageHistogram",
            "bboxWidthHistogram",
            "bboxHeightHistogram",
            "bboxWidthNormHistogram",
            "bboxHeightNormHistogram",
        )
    }
    out: dict[str, Any] = {
        "classes": classes,
        "imageStats": image_stats,
        "locationHeatmap": geometry["locationHeatmap"],
        "dimensionHeatmap": columns["dimensionHeatmap"],
        "classNames": names,
        "sampled": geometry["sampled"],
    }
    if geometry["sampled"]:
        out["sampleSize"] = geometry["images"]
    return out


class StatsCache:
    """Computed statistics per dataset, reused while the dataset's `updated_at`
    is unchanged and for at most CACHE_SECONDS."""

    def __init__(self, ttl: float = CACHE_SECONDS) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[str, float, dict]] = {}

    def get(self, db: Database, dataset: dict) -> tuple[dict[str, Any], bool]:
        """The statistics and whether they came from the cache."""
        key = dataset["id"]
        with self._lock:
            entry = self._entries.get(key)
        if entry and entry[0] == dataset["updated_at"]:
            if time.monotonic() - entry[1] < self.ttl:
                return entry[2], True
        stats = compute(db, dataset)
        with self._lock:
            if len(self._entries) >= _CACHE_SIZE:
                oldest = min(self._entries, key=lambda k: self._entries[k][1])
                del self._entries[oldest]
            self._entries[key] = (dataset["updated_at"], time.monotonic(), stats)
        return stats, False
