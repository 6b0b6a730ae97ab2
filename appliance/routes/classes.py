"""A dataset's classes and splits: class statistics, class merge and delete
(which rewrite every image's labels in one transaction), and split
redistribution. Both route families, like routes/datasets.py."""

from __future__ import annotations

import logging
import random

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from ..class_stats import StatsCache
from ..errors import Invalid
from ..web import field, reply, services
from .datasets import (
    ID,
    MAX_CLASSES,
    SLUG,
    SPLITS,
    check_settled,
    dataset_of,
    write_body,
)

logger = logging.getLogger(__name__)


async def class_stats(request: Request):
    """Class counts, histograms and heatmaps, cached while the dataset is
    unchanged (up to five minutes)."""
    dataset = dataset_of(request)
    state = request.app.state
    if not hasattr(state, "class_stats"):
        state.class_stats = StatsCache()
    stats, cached = await run_in_threadpool(
        state.class_stats.get, services(request).db, dataset
    )
    out = {**stats, "cached": cached}
    if "dataset_id" not in request.path_params:
        out.pop("sampled")  # the seed documents `sampled`; the contract does not
    return reply(out)


def _class_ids(body: dict, name: str, class_count: int) -> list[int]:
    """A list of existing class ids, each once, in ascending order."""
    values = field(body, name, list, required=True)
    if not values:
        raise Invalid(f"{name} must name at least one class")
    if len(values) > MAX_CLASSES:
        raise Invalid(f"{name} holds at most {MAX_CLASSES} class ids")
    for value in values:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise Invalid(f"{name} must hold class ids (integers from 0)")
        if value >= class_count:
            raise Invalid(
                f"class {value} does not exist (the dataset has {class_count})"
            )
    return sorted(set(values))


def _shift(removed: list[int], class_count: int) -> dict[int, int]:
    """Old index -> new index once `removed` classes are gone."""
    gone = set(removed)
    kept = [c for c in range(class_count) if c not in gone]
    return {old: new for new, old in enumerate(kept)}


def _colors_without(dataset: dict, names: list[str]) -> dict:
    details = dataset.get("details") or {}
    colors = details.get("classColors") or {}
    gone = set(names)
    return {k: v for k, v in colors.items() if k not in gone}


async def _rewrite_classes(
    request: Request, dataset: dict, removed: list[int], remap
) -> tuple[list[str], dict, int]:
    names = dataset["class_names"] or []
    gone = set(removed)
    kept = [n for i, n in enumerate(names) if i not in gone]
    colors = _colors_without(dataset, [names[i] for i in removed])
    details = {**(dataset.get("details") or {}), "classColors": colors}
    if not colors:
        details.pop("classColors")
    changed = await run_in_threadpool(
        services(request).db.rewrite_labels,
        dataset["id"],
        remap,
        class_names=kept,
        details=details,
    )
    logger.warning(
        "dataset %s: class indices changed (%d images rewritten); exports and"
        " versions made before no longer line up with its classes",
        dataset["id"],
        changed,
    )
    return kept, colors, changed


async def merge_classes(request: Request):
    """Relabel the source classes as the target, then drop the sources; every
    annotation is kept."""
    dataset = dataset_of(request, edit=True)
    body = await write_body(request)
    check_settled(dataset)
    count = len(dataset["class_names"] or [])
    target = field(body, "targetClassId", int, required=True)
    if not 0 <= target < count:
        raise Invalid(f"class {target} does not exist (the dataset has {count})")
    sources = [c for c in _class_ids(body, "sourceClassIds", count) if c != target]
    if not sources:
        raise Invalid("sourceClassIds must name a class other than the target")
    index = _shift(sources, count)
    new_target = index[target]
    for source in sources:
        index[source] = new_target

    def remap(labels: list[dict]) -> list[dict]:
        return [
            {**label, "classId": index.get(label.get("classId"), label.get("classId"))}
            for label in labels
        ]

    names, colors, _ = await _rewrite_classes(request, dataset, sources, remap)
    return reply(
        {
            "success": True,
            "classNames": names,
            "classColors": colors,
            "mergedClassIds": sources,
            "targetClassId": new_target,
        }
    )


async def delete_classes(request: Request):
    """Drop classes and their annotations; higher class ids shift down. An
    image left with no annotation becomes unlabelled."""
    dataset = dataset_of(request, edit=True)
    body = await write_body(request)
    check_settled(dataset)
    count = len(dataset["class_names"] or [])
    removed = _class_ids(body, "classIds", count)
    index = _shift(removed, count)
    deleted = 0

    def remap(labels: list[dict]) -> list[dict] | None:
        nonlocal deleted
        kept = [
            {**label, "classId": index[label["classId"]]}
            for label in labels
            if label.get("classId") in index
        ]
        deleted += len(labels) - len(kept)
        if len(kept) == len(labels):
            return kept  # nothing removed: a background image stays labelled
        return kept or None

    names, colors, _ = await _rewrite_classes(request, dataset, removed, remap)
    return reply(
        {
            "success": True,
            "classNames": names,
            "classColors": colors,
            "deletedClassIds": removed,
            "deletedAnnotations": deleted,
        }
    )


def _split_plan(percent: dict[str, int], seed: int):
    """A function from the id-ordered image ids to their new splits: shuffled by
    `seed`, then cut by the percentages (largest remainders rounded up)."""

    def plan(ids: list[str]) -> list[str]:
        n = len(ids)
        exact = {s: n * percent[s] / 100 for s in SPLITS}
        counts = {s: int(exact[s]) for s in SPLITS}
        for s in sorted(SPLITS, key=lambda s: exact[s] - counts[s], reverse=True):
            if sum(counts.values()) < n:
                counts[s] += 1
        order = list(range(n))
        random.Random(seed).shuffle(order)
        out = [""] * n
        cursor = 0
        for s in SPLITS:
            for position in order[cursor : cursor + counts[s]]:
                out[position] = s
            cursor += counts[s]
        return out

    return plan


async def redistribute(request: Request):
    """Reassign every image to train, val and test by percentages that total
    100; the same seed (default 0) gives the same assignment."""
    dataset = dataset_of(request, edit=True)
    check_settled(dataset, "redistribute its splits")
    body = await write_body(request)
    percent = {}
    for split in SPLITS:
        value = field(body, split, int, required=True)
        if not 0 <= value <= 100:
            raise Invalid(f"{split} must be a percentage from 0 to 100")
        percent[split] = value
    if sum(percent.values()) != 100:
        raise Invalid("train, val and test must total 100")
    seed = field(body, "seed", int, default=0)
    db = services(request).db
    if not db.dataset_stats(dataset["id"]).get("images"):
        raise Invalid("the dataset has no images to redistribute")
    counts, modified = await run_in_threadpool(
        db.assign_splits, dataset["id"], _split_plan(percent, seed)
    )
    return reply({"success": True, "splits": counts, "modified": modified})


_OPERATIONS = [
    ("/class-stats", "GET", class_stats),
    ("/classes/merge", "POST", merge_classes),
    ("/classes/delete", "POST", delete_classes),
    ("/splits/redistribute", "POST", redistribute),
]

# The seed's id routes first, as in routes/datasets.py.
routes = [
    *(Route(f"{ID}{tail}", fn, methods=[m]) for tail, m, fn in _OPERATIONS),
    *(Route(f"{SLUG}{tail}", fn, methods=[m]) for tail, m, fn in _OPERATIONS),
]
