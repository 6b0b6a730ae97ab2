"""Job handlers that run in a queue thread, not a child process: they need no
ultralytics. Ingest (the archive and Pillow) and the GDPR export (a zip)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import ApplianceError
from ..gdpr import build_export
from ..ingest import IngestOptions, run_ingest
from ..signing import Signer, load_secret
from ..sweep import forget_upload

if TYPE_CHECKING:
    from .queue import JobQueue

logger = logging.getLogger(__name__)


def _signer(queue: JobQueue) -> Signer:
    settings = queue.settings
    return Signer(
        load_secret(settings.home / "secret.key"),
        settings.base_url,
        settings.signed_url_ttl,
    )


def run_ingest_job(queue: JobQueue, job: dict) -> None:
    args = job["args"]
    archive = queue.blobs.path("uploads", args["sessionId"], "data")
    options = IngestOptions(
        conflict_policy=args.get("conflictPolicy") or "skip",
        target_split=args.get("targetSplit"),
        class_mapping=args.get("classMapping") or {},
        image_metadata=args.get("imageMetadata") or {},
        dry_run=bool(args.get("dryRun")),
        extend_classes=bool(args.get("extendClasses")),
        boxes_as_polygons=bool(args.get("boxesAsPolygons")),
        filename=args.get("filename") or "upload.zip",
    )
    try:
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
            _signer(queue),
        )
    except Exception as exc:
        if not options.dry_run:
            raise
        # A dry run leaves the dataset alone, even when the upload is unusable.
        if isinstance(exc, ApplianceError):
            message = exc.message
        else:
            logger.exception("dry-run ingest %s crashed", job["id"])
            message = f"internal error: {exc.__class__.__name__}"
        queue.finish(
            job["id"], "failed", error={"message": message, "code": "ingest_failed"}
        )
        return
    queue.finish(job["id"], "completed", result=summary)
    if not options.dry_run:
        # The archive is in the dataset now; the session cannot be ingested again.
        queue.db.update_upload(args["sessionId"], status="consumed")
        forget_upload(queue.blobs, args["sessionId"])


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
