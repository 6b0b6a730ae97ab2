"""The training watchdog: a job whose trainer has gone quiet is `stalled`, then
`failed` with code `stalled`, and its trainer is killed so the GPU is free again.

The heartbeat is `jobs.heartbeat_at`. A local trainer moves it with every event
it sends (batches, epochs, beats while it sets up; appliance/worker.py), so a
frozen or hung trainer stops it even though its parent thread still waits. A run
streamed in from elsewhere (`args.remote`) moves it with each event it posts.
"""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..ids import now, parse_time

if TYPE_CHECKING:
    from .queue import JobQueue

logger = logging.getLogger(__name__)

_WATCHED = ("starting", "running", "stalled")


def quiet_seconds(job: dict, at: datetime) -> float:
    """Seconds since the job last gave a sign of life."""
    stamp = job["heartbeat_at"] or job["started_at"] or job["created_at"]
    return max((at - parse_time(stamp)).total_seconds(), 0.0)


def verdict(quiet: float, status: str, stall: float, fail: float) -> str | None:
    """What the watchdog does to a job quiet this long: 'fail', 'stall',
    'resume' (it spoke again) or nothing."""
    if quiet >= fail:
        return "fail"
    if quiet >= stall:
        return None if status == "stalled" else "stall"
    return "resume" if status == "stalled" else None


class Watchdog:
    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def interval(self) -> float:
        return min(max(self.queue.settings.stall_seconds / 4, 0.25), 15.0)

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, name="training-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.check()
            except Exception:
                logger.exception("the training watchdog failed a round")

    def check(self) -> None:
        """One round: judge every active training job, then start waiting ones
        on devices that are free."""
        settings = self.queue.settings
        db = self.queue.db
        marks = ",".join("?" for _ in _WATCHED)
        jobs = db.query(
            f"SELECT * FROM jobs WHERE kind = 'train' AND status IN ({marks})",
            list(_WATCHED),
        )
        at = datetime.now(UTC)
        for job in jobs:
            quiet = quiet_seconds(job, at)
            action = verdict(
                quiet, job["status"], settings.stall_seconds, settings.fail_seconds
            )
            if action == "stall":
                self._stall(job, quiet)
            elif action == "resume":
                db.update_job_if(job["id"], "stalled", status="running")
                logger.info("job %s speaks again; no longer stalled", job["id"])
            elif action == "fail":
                self._fail(job, quiet)
        self.queue.dispatch_training()

    def _stall(self, job: dict, quiet: float) -> None:
        message = f"stalled: no sign of life from the trainer for {quiet:.0f} s"
        if self.queue.db.update_job_if(
            job["id"], job["status"], status="stalled", message=message
        ):
            logger.warning("job %s %s", job["id"], message)

    def _fail(self, job: dict, quiet: float) -> None:
        message = (
            f"stalled: the trainer sent nothing for {quiet:.0f} s and was stopped;"
            " resume the model to continue from its last checkpoint"
        )
        error = {"message": message, "code": "stalled"}
        db = self.queue.db
        if not db.update_job_if(
            job["id"], job["status"], status="failed", error=error, message=message
        ):
            return  # it changed meanwhile (finished, cancelled)
        logger.warning("job %s failed: %s", job["id"], message)
        db.update_model(
            job["subject_id"],
            status="failed",
            training_error={**error, "timestamp": now()},
        )
        if not (job["args"] or {}).get("remote"):
            self.queue.children.kill(job["id"], "stalled")
