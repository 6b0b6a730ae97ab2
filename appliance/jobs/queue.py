"""The job queue: a SqliteHuey in its own file, consumed by threads inside the
appliance process. Our jobs table is the durable truth; Huey only carries ids.

Training jobs wait for a device: at most one runs on each GPU (or on the CPU when
there is none) and the rest stay `queued`, handed to Huey as devices free up. A
watchdog thread marks a training job `stalled` when its trainer goes quiet, then
fails it and kills the trainer (appliance/jobs/watchdog.py)."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from pathlib import Path

from huey import SqliteHuey
from huey.consumer import Consumer

from .. import gpus, hooks, vision
from ..blobs import BlobStore
from ..errors import ApplianceError
from ..ids import now
from ..settings import Settings
from ..store import Database
from .children import Children
from .watchdog import Watchdog

logger = logging.getLogger(__name__)
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class JobInterrupted(Exception):
    """Raised inside a job that must stop because the appliance is stopping."""


class _QuietConsumer(Consumer):
    """A consumer that leaves signal handling to the server that embeds it."""

    def _set_signal_handlers(self) -> None:
        return None


class JobQueue:
    def __init__(self, settings: Settings, db: Database, blobs: BlobStore) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.children = Children()
        self.huey = SqliteHuey(
            name="appliance", filename=str(settings.queue_path), results=False
        )
        self._handlers: dict[str, Callable[[dict], None]] = {}
        self._task = self.huey.task(name="appliance.run_job")(self._run_job)
        self._consumer: Consumer | None = None
        self.watchdog = Watchdog(self)

    @functools.cached_property
    def devices(self) -> list[gpus.Device]:
        """The devices training jobs are placed on, one job per device at a time."""
        return gpus.local_devices(self.settings.device)

    def register(self, kind: str, handler: Callable[[dict], None]) -> None:
        self._handlers[kind] = handler

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        self.recover()
        # A training job holds a thread while its trainer runs: with one per
        # device, a thread is still left for ingests and exports.
        workers = max(self.settings.workers, len(self.devices) + 1)
        self._consumer = _QuietConsumer(
            self.huey,
            workers=workers,
            periodic=False,
            check_worker_health=False,
            max_delay=1.0,
        )
        self._consumer.start()
        self.watchdog.start()
        self.dispatch_training()
        logger.info(
            "job queue started with %d workers; training on %s",
            workers,
            ", ".join(d.gpu_type for d in self.devices),
        )

    def stop(self) -> None:
        """End running children, stop the consumer and leave no job 'running'."""
        self.watchdog.stop()
        self.children.stop_all()
        if self._consumer:
            self._consumer.stop(graceful=False)
            for _, worker in self._consumer.worker_threads:
                worker.join(timeout=5)
        for job in self.db.active_jobs():
            if job["status"] != "queued":
                self._interrupt(job, "the appliance stopped while this job was running")
        logger.info("job queue stopped")

    def recover(self) -> None:
        """After a crash: running jobs are interrupted; queued ones are queued again."""
        for job in self.db.active_jobs():
            if job["status"] == "queued":
                if job["kind"] != "train":
                    self._task(job["id"])  # training waits for dispatch_training
            else:
                self._interrupt(
                    job, "the appliance restarted while this job was running"
                )

    def _interrupt(self, job: dict, message: str) -> None:
        self._end_badly(job, "interrupted", message, "interrupted")

    def _fail(self, job: dict, message: str) -> None:
        self._end_badly(job, "failed", message, f"{job['kind']}_failed")

    def _end_badly(self, job: dict, status: str, message: str, code: str) -> None:
        """End a job as failed or interrupted, and say so on what it was working on."""
        self.finish(job["id"], status, error={"message": message, "code": code})
        stamp = now()
        subject = job["subject_id"]
        if job["kind"] == "train":
            error = {"message": message, "code": code, "timestamp": stamp}
            self.db.update_model(subject, status="failed", training_error=error)
        elif job["kind"] == "ingest":
            if status == "interrupted":
                message += "; ingest again to retry"
            # A dataset that had images before keeps them, and stays usable.
            had_images = self.db.dataset_stats(subject).get("images", 0) > 0
            error = {"message": message, "timestamp": stamp}
            status = "ready" if had_images else "failed"
            self.db.update_dataset(subject, status=status, processing_error=error)
        elif job["kind"] == "export":
            error = {"message": message, "timestamp": stamp}
            self.db.update_export(subject, status="failed", error=error)

    # -- submitting --------------------------------------------------------

    def submit(
        self, kind: str, subject_id: str, user_id: str | None, args: dict | None = None
    ) -> dict:
        job = self.db.create_job(kind, subject_id, user_id, args)
        if kind == "train":
            self.dispatch_training()
        else:
            self._task(job["id"])
        return job

    def dispatch_training(self) -> None:
        """Hand Huey as many waiting training jobs, oldest first, as devices are
        free. Handing one twice is harmless: only one claim succeeds."""
        busy = {
            row["device"]
            for row in self.db.query(
                "SELECT device FROM jobs WHERE kind = 'train' AND device IS NOT NULL"
                " AND status IN ('starting', 'running', 'stalled')"
            )
        }
        free = [d for d in self.devices if d.index not in busy]
        if not free:
            return
        waiting = self.db.query(
            "SELECT id, args FROM jobs WHERE kind = 'train' AND status = 'queued'"
            " ORDER BY created_at, rowid"
        )
        for job in waiting:
            wanted = (job["args"] or {}).get("deviceIndex")
            device = next((d for d in free if wanted in (None, d.index)), None)
            if device is None:
                continue
            free.remove(device)
            self._task(job["id"])
            if not free:
                return

    def queue_position(self, job: dict) -> int | None:
        """1 for the next training job to start, and so on; None unless waiting."""
        if job["kind"] != "train" or job["status"] != "queued":
            return None
        return 1 + self.db.scalar(
            "SELECT count(*) FROM jobs WHERE kind = 'train' AND status = 'queued'"
            " AND (created_at < ? OR (created_at = ? AND rowid < (SELECT rowid FROM jobs WHERE id = ?)))",
            [job["created_at"], job["created_at"], job["id"]],
        )

    def cancel(self, job_id: str) -> None:
        # A trainer checks for this file after every batch: no wait for the
        # parent's next look at the database.
        run = self.settings.runs / job_id
        if run.is_dir():
            (run / "cancel").touch()
        with self.db.atomic() as db:
            db.execute(
                "UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?",
                [now(), job_id],
            )
            db.execute(
                "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status = 'queued'",
                [now(), job_id],
            )

    # -- running -----------------------------------------------------------

    def _claim(self, job_id: str) -> dict | None:
        job = self.db.job(job_id)
        if job is not None and job["kind"] == "train":
            return self._claim_device(job)
        with self.db.atomic() as db:
            cursor = db.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, updated_at = ?, heartbeat_at = ?"
                " WHERE id = ? AND status = 'queued'",
                [now(), now(), now(), job_id],
            )
            claimed = cursor.rowcount == 1
        return self.db.job(job_id) if claimed else None

    def _claim_device(self, job: dict) -> dict | None:
        """Take a free device for a training job, in one transaction with the
        check that it is free: the job becomes `starting` on that device."""
        wanted = (job["args"] or {}).get("deviceIndex")
        with self.db.atomic() as db:
            busy = {
                row[0]
                for row in db.execute(
                    "SELECT device FROM jobs WHERE kind = 'train' AND device IS NOT NULL"
                    " AND status IN ('starting', 'running', 'stalled')"
                ).fetchall()
            }
            device = next(
                (
                    d
                    for d in self.devices
                    if d.index not in busy and wanted in (None, d.index)
                ),
                None,
            )
            if device is None:
                return None  # stays queued; dispatched again when a device frees
            stamp = now()
            cursor = db.execute(
                "UPDATE jobs SET status = 'starting', device = ?, started_at = ?,"
                " updated_at = ?, heartbeat_at = ? WHERE id = ? AND status = 'queued'",
                [device.index, stamp, stamp, stamp, job["id"]],
            )
            claimed = cursor.rowcount == 1
        return self.db.job(job["id"]) if claimed else None

    def _run_job(self, job_id: str) -> None:
        job = self._claim(job_id)
        if job is None:
            return  # cancelled while queued, already taken, or no device free
        try:
            self._run_claimed(job)
        finally:
            if job["kind"] == "train":
                self.dispatch_training()

    def _run_claimed(self, job: dict) -> None:
        job_id = job["id"]
        handler = self._handlers[job["kind"]]
        logger.info("job %s (%s) started", job_id, job["kind"])
        try:
            handler(job)
        except JobInterrupted:
            logger.warning("job %s interrupted by shutdown", job_id)
            self._interrupt(job, "the appliance stopped while this job was running")
        except ApplianceError as exc:
            logger.warning("job %s failed: %s", job_id, exc.message)
            self._fail(job, exc.message)
        except Exception as exc:
            logger.exception("job %s crashed", job_id)
            self._fail(job, f"internal error: {exc.__class__.__name__}: {exc}")

    # -- helpers for handlers ----------------------------------------------

    def progress(
        self, job_id: str, percent: float, message: str, *, interruptible: bool = False
    ) -> None:
        """Record progress. An in-process job passes interruptible=True to learn
        here that the appliance is stopping (JobInterrupted)."""
        if interruptible and self.children.stopping.is_set():
            raise JobInterrupted(job_id)
        self.db.update_job(
            job_id,
            progress=round(min(max(percent, 0.0), 100.0), 1),
            message=message,
            heartbeat_at=now(),
        )

    def beat(self, job_id: str) -> None:
        self.db.update_job(job_id, heartbeat_at=now())

    def device(self, index: str | None) -> gpus.Device | None:
        return next((d for d in self.devices if d.index == index), None)

    def finish(
        self,
        job_id: str,
        status: str,
        *,
        result: dict | None = None,
        error: dict | None = None,
    ) -> None:
        fields: dict = {"status": status, "error": error}
        if result is not None:
            fields["result"] = result
        if status == "completed":
            fields["progress"] = 100.0
        self.db.update_job(job_id, **fields)
        hooks.job_finished(self.db, job_id, status, error)

    def cancel_requested(self, job_id: str) -> bool:
        return bool(
            self.db.scalar("SELECT cancel_requested FROM jobs WHERE id = ?", [job_id])
        )

    def child_env(self) -> dict[str, str]:
        return vision.offline_environment(self.settings.home)

    @staticmethod
    def log_tail(path: Path, lines: int = 15) -> str:
        if not path.exists():
            return ""
        text = _ANSI.sub("", path.read_text(errors="replace"))
        kept = [line.rstrip() for line in text.splitlines() if line.strip()]
        return "\n".join(kept[-lines:])
