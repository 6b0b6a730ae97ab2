"""The export job: convert a model's weights in a child process, keep the file."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..ids import now
from .children import describe_exit

if TYPE_CHECKING:
    from .queue import JobQueue

logger = logging.getLogger(__name__)


def run_export(queue: JobQueue, job: dict) -> None:
    db, blobs = queue.db, queue.blobs
    export = db.export(job["subject_id"])
    if export is None:
        queue.finish(job["id"], "failed", error={"message": "export no longer exists"})
        return
    weights = blobs.path("models", export["model_id"], "best.pt")
    workdir = queue.settings.runs / job["id"]
    workdir.mkdir(parents=True, exist_ok=True)
    # Export beside a private copy, since ultralytics writes its output next to the weights.
    local = workdir / "model.pt"
    shutil.copyfile(weights, local)
    db.update_export(export["id"], status="running", started_at=now())
    spec = {
        "home": str(queue.settings.home),
        "weights": str(local),
        "format": export["format"],
        "args": export["args"] or {},
    }
    result = queue.children.run(
        job["id"],
        "export",
        spec,
        workdir,
        queue.child_env(),
        lambda event: None,
        lambda: queue.cancel_requested(job["id"]),
        lambda: queue.beat(job["id"]),
    )
    done = result.last("done")
    if done and result.returncode == 0 and not result.stopped:
        output = Path(done["output"])
        filename, source = _packaged(output, workdir)
        target = blobs.path("exports", export["id"], filename)
        blobs.put_file(target, source)
        db.update_export(
            export["id"],
            status="completed",
            filename=filename,
            file_size=target.stat().st_size,
            completed_at=now(),
            error=None,
        )
        queue.finish(job["id"], "completed")
        return
    if result.stopped == "cancelled":
        db.update_export(export["id"], status="cancelled", completed_at=now())
        queue.finish(job["id"], "cancelled")
        return
    error = result.last("error")
    if result.stopped == "shutdown":
        message, status = (
            "the appliance stopped while this export was running",
            "interrupted",
        )
    else:
        detail = (
            error["message"]
            if error
            else f"the exporter {describe_exit(result.returncode)}"
        )
        message, status = (
            f"{detail}\n{queue.log_tail(workdir / 'export.log')}".strip(),
            "failed",
        )
    db.update_export(
        export["id"], status="failed", error={"message": message, "timestamp": now()}
    )
    queue.finish(job["id"], status, error={"message": message})


def _packaged(output: Path, workdir: Path) -> tuple[str, Path]:
    """A single file to serve: the export itself, or a zip of an export folder."""
    if output.is_dir():
        archive = shutil.make_archive(
            str(workdir / output.name), "zip", output.parent, output.name
        )
        return Path(archive).name, Path(archive)
    return output.name, output
