"""The embeddings job: describe every image of a dataset, lay them out in 2-D and
cluster them (see appliance.embeddings), and keep the result as one numpy file
per dataset in the blob store."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import embeddings
from ..errors import ApplianceError
from .annotating import open_image

if TYPE_CHECKING:
    from ..vision import Predictor
    from .queue import JobQueue

logger = logging.getLogger(__name__)

_BATCH = 16


class _Progress:
    """Counters shown as the contract's activeJob.progress while the job runs."""

    def __init__(self, queue: JobQueue, job_id: str, total: int) -> None:
        self.queue, self.job_id = queue, job_id
        self.state: dict[str, Any] = {
            "stage": "embedding",
            "percent": 0.0,
            "processed": 0,
            "total": total,
            "failedDownloads": 0,
            "failedInference": 0,
        }
        self._last = 0.0

    def update(self, *, force: bool = False, **changes: Any) -> None:
        self.state.update(changes)
        moment = time.monotonic()
        if not force and moment - self._last < 0.5:
            return
        self._last = moment
        total = max(self.state["total"], 1)
        if self.state["stage"] == "embedding":
            self.state["percent"] = round(80.0 * self.state["processed"] / total, 1)
        self.queue.db.update_job(self.job_id, result={"progress": dict(self.state)})
        self.queue.progress(
            self.job_id,
            self.state["percent"],
            f"{self.state['stage']}: {self.state['processed']} of {self.state['total']}",
            interruptible=True,
        )


def run_embeddings(queue: JobQueue, predictor: Predictor, job: dict) -> None:
    db, blobs, args = queue.db, queue.blobs, job["args"]
    dataset_id = job["subject_id"]
    started = time.monotonic()
    refs = db.image_refs(dataset_id)
    progress = _Progress(queue, job["id"], len(refs))
    progress.update(force=True)
    weights = Path(args["weights"]) if args.get("weights") else None
    rows: list[np.ndarray | None] = []
    for start in range(0, len(refs), _BATCH):
        if queue.cancel_requested(job["id"]):
            queue.finish(job["id"], "cancelled", result={"progress": progress.state})
            return
        batch = refs[start : start + _BATCH]
        if weights is None:
            rows += _describe(blobs, batch, progress)
        else:
            rows += _embed(queue, predictor, weights, args, batch, progress)
        progress.update(processed=len(rows))

    failed = np.array([r is None for r in rows], dtype=bool)
    width = next((len(r) for r in rows if r is not None), embeddings.DIMENSIONS)
    vectors = np.zeros((len(rows), width), np.float32)
    for i, row in enumerate(rows):
        if row is not None:
            vectors[i] = row
    vectors = embeddings.normalise_rows(vectors)
    progress.update(stage="umap", percent=80.0, force=True)
    good = np.flatnonzero(~failed)
    layout = embeddings.analyse(
        vectors[good],
        lambda stage, pct: progress.update(stage=stage, percent=80 + pct / 5),
    )
    coords = np.zeros((len(rows), 2), np.float32)
    clusters = np.full(len(rows), -1, np.int32)
    coords[good], clusters[good] = layout.coords, layout.clusters

    name = f"{job['id']}.npz"
    target = blobs.path("embeddings", dataset_id, name)
    with blobs.writer(target) as handle:
        embeddings.save(
            handle,
            [r["id"] for r in refs],
            vectors,
            embeddings.Analysis(coords, clusters),
            failed,
        )
    previous = db.analysis(dataset_id)
    db.save_analysis(
        dataset_id,
        job_id=job["id"],
        feature=args.get("feature", embeddings.FEATURE),
        model_id=args.get("modelId"),
        dims=int(vectors.shape[1]),
        count=int(len(good)),
        failed=int(failed.sum()),
        file=name,
    )
    if previous and previous["file"] != name:
        blobs.path("embeddings", dataset_id, previous["file"]).unlink(missing_ok=True)
    sizes = np.bincount(layout.clusters) if len(good) else np.zeros(0, int)
    queue.finish(
        job["id"],
        "completed",
        result={
            "feature": args.get("feature", embeddings.FEATURE),
            "images": len(rows),
            "embedded": int(len(good)),
            "failedDownloads": progress.state["failedDownloads"],
            "failedInference": progress.state["failedInference"],
            "dimensions": int(vectors.shape[1]),
            "clusterSizes": [int(s) for s in sizes],
            "seconds": round(time.monotonic() - started, 3),
        },
    )


def _describe(blobs, batch: list[dict], progress: _Progress) -> list:
    out = []
    for ref in batch:
        try:
            data = blobs.image_path(ref["hash"], ref["ext"]).read_bytes()
            out.append(embeddings.describe(data))
        except (OSError, ValueError) as exc:
            logger.warning("image %s not embedded: %s", ref["id"], exc)
            progress.state["failedDownloads"] += 1
            out.append(None)
    return out


def _embed(queue, predictor, weights: Path, args: dict, batch: list, progress) -> list:
    images: list[Any] = []
    for ref in batch:
        try:
            images.append(open_image(queue.blobs.image_path(ref["hash"], ref["ext"])))
        except ApplianceError as exc:
            logger.warning("image %s not read: %s", ref["id"], exc)
            progress.state["failedDownloads"] += 1
            images.append(None)
    readable = [im for im in images if im is not None]
    try:
        vectors = iter(
            predictor.embed(
                weights, readable, imgsz=args["imgsz"], device=queue.settings.device
            )
            if readable
            else []
        )
    except (RuntimeError, ValueError) as exc:
        logger.warning("embedding a batch failed: %s", exc)
        progress.state["failedInference"] += len(readable)
        return [None] * len(images)
    return [
        None if im is None else np.asarray(next(vectors), np.float32) for im in images
    ]
