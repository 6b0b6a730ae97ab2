"""Split rules: an ingest that leaves val empty moves some of train there (as the
Platform and its client do), and the Ready rule training relies on."""

from __future__ import annotations

import random

#: Share of train moved to an empty val, at least one image, with a fixed seed.
AUTO_VAL_FRACTION = 0.1
AUTO_VAL_SEED = 0


def auto_split(rows: list[dict]) -> int:
    """Move ~10% of the train rows to val; returns how many moved."""
    train = sorted(
        (r for r in rows if r["split"] == "train"), key=lambda r: (r["name"], r["hash"])
    )
    if len(train) < 2:
        return 0
    random.Random(AUTO_VAL_SEED).shuffle(train)
    count = max(1, int(len(train) * AUTO_VAL_FRACTION))
    for row in train[:count]:
        row["split"] = "val"
    return count


def not_ready_reason(dataset: dict, stats: dict) -> str | None:
    """Why a dataset cannot train yet, or None when it is Ready: processed, an
    image in train, one in val or test, and a labeled image with an annotation
    (background images alone do not count)."""
    if dataset["status"] == "processing":
        return "the dataset is still processing an ingest"
    if dataset["status"] != "ready":
        return "the dataset's last ingest failed"
    if not stats.get("train"):
        return "no image in the train split"
    if not stats.get("val") and not stats.get("test"):
        return "no image in the val or test split"
    if not stats.get("annotations"):
        return "no labeled image"
    return None
