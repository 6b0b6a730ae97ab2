"""The ingest job handler: runs in a queue thread, not a child process; it needs
no ultralytics, only the archive and Pillow."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
