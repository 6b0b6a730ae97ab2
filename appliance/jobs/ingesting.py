"""Job handlers that run in a queue thread, not a child process: they need no
ultralytics. Ingest (the archive and Pillow) and the GDPR export (a zip)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..gdpr import build_export
from ..ingest import IngestOptions, run_ingest

if TYPE_CHECKING:
    from .queue import JobQueue


def run_ingest_job(queue: JobQueue, job: dict) -> None:
    args = job["args"]
    archive = queue.blobs.path("uploads", args["sessionId"], "data")
    options = IngestOptions(
        conflict_policy=args.get("conflictPolicy") or "skip",
        target_split=args.get("targetSplit"),
    )
    summary = run_ingest(
        queue.db,
        queue.blobs,
        job["subject_id"],
        job["id"],
        archive,
        options,
        lambda percent, message: queue.progress(
            job["id"], percent, message, interruptible=True
        ),
    )
    queue.finish(job["id"], "completed", result=summary)


def run_gdpr_export(queue: JobQueue, job: dict) -> None:
    target = queue.blobs.path("gdpr", job["id"], "export.zip")
    size = build_export(
        queue.db,
        queue.blobs,
        job["subject_id"],
        target,
        lambda percent, message: queue.progress(
            job["id"], percent, message, interruptible=True
        ),
    )
    queue.finish(job["id"], "completed", result={"size": size})
