"""The training job: lay the dataset out, train in a child process, keep the
metrics and the weights."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from .. import hooks
from ..ids import now
from .children import describe_exit
from .materialise import materialise

if TYPE_CHECKING:
    from .queue import JobQueue

logger = logging.getLogger(__name__)


def run_training(queue: JobQueue, job: dict) -> None:
    db, settings = queue.db, queue.settings
    model_id = job["subject_id"]
    args = dict(job["args"]["trainArgs"])
    resume = job["args"].get("resume")
    workdir = settings.runs / job["id"]
    # A resumed run writes into the run it continues (ultralytics keeps save_dir).
    run_dir = Path(resume["runDir"]) if resume else workdir / "train"
    cancel_file = workdir / "cancel"
    workdir.mkdir(parents=True, exist_ok=True)

    queue.progress(job["id"], 0, "laying out the dataset")
    data_yaml, digest = materialise(
        db, queue.blobs, settings.home / "datasets", job["args"]["datasetId"]
    )
    if not db.update_job_if(job["id"], "starting", message="starting the trainer"):
        return  # the watchdog or a cancel ended it while the dataset was laid out
    model = db.model(model_id)
    db.update_model(
        model_id,
        status="running",
        started_at=now(),
        metadata={**((model or {}).get("metadata") or {}), "datasetSnapshot": digest},
    )
    if not resume:
        db.clear_epochs(model_id)
    device = job["device"] or settings.device
    named = args.pop("model")
    spec = {
        "home": str(settings.home),
        # A model of the appliance's own (ul://owner/project/model) trains from
        # that model's weights, resolved when the job was started.
        "model": job["args"].get("baseWeights") or named,
        "data": str(data_yaml),
        "args": {
            k: v
            for k, v in args.items()
            if k not in ("data", "project", "name", "device")
        },
        "project": str(workdir),
        "device": device
        if args.get("device") in (None, "auto") or job["device"]
        else args["device"],
        "cancel_file": str(cancel_file),
        "beat_seconds": min(2.0, settings.stall_seconds / 4),
    }
    if resume:
        spec["resume"] = resume["checkpoint"]
    total = int(spec["args"].get("epochs", 100))
    warnings: list[str] = []
    system: dict = {}

    def on_event(event: dict) -> None:
        kind = event.get("event")
        if isinstance(event.get("system"), dict):
            system.update(event["system"])
        if kind == "epoch":
            epoch = int(event["epoch"])
            db.record_epoch(model_id, epoch, event["metrics"], event.get("fitness"))
            epochs = int(event.get("epochs") or total)
            db.update_job(job["id"], result={"system": system})
            queue.progress(
                job["id"],
                100.0 * (epoch + 1) / max(epochs, 1),
                f"epoch {epoch + 1}/{epochs}",
            )
            hooks.training_event(
                db,
                job,
                "training.epoch",
                epoch=epoch + 1,
                epochs=epochs,
                metrics=event["metrics"],
            )
        elif kind == "started":
            first = int(event.get("start_epoch") or 0)
            db.update_job_if(job["id"], "starting", status="running")
            queue.progress(
                job["id"],
                0,
                f"training on {event.get('device')}"
                + (f" from epoch {first + 1}" if first else ""),
            )
            hooks.training_event(
                db, job, "training.started", device=event.get("device")
            )
        elif kind == "beat":
            db.update_job(job["id"], result={"system": system})
        elif kind == "warning":
            message = str(event.get("message"))
            logger.warning("job %s: %s", job["id"], message)
            warnings.append(message)
            queue.progress(job["id"], 0, f"warning: {message}")

    def should_cancel() -> bool:
        cancelled = queue.cancel_requested(job["id"])
        if cancelled and not cancel_file.exists():
            cancel_file.touch()
        return cancelled

    result = queue.children.run(
        job["id"],
        "train",
        spec,
        workdir,
        queue.child_env(),
        on_event,
        should_cancel,
        lambda: queue.beat(job["id"]),
    )
    done = result.last("done")
    weights = _keep_weights(queue, model_id, run_dir, done)
    if result.stopped == "stalled":
        return  # the watchdog has failed the job and the model already
    finished = done and result.returncode == 0 and result.stopped != "shutdown"
    if finished:
        cancelled = done.get("cancelled") or result.stopped == "cancelled"
        status = "cancelled" if cancelled else "completed"
        db.update_model(
            model_id,
            status=status,
            metrics=done.get("metrics") or None,
            best_fitness=done.get("best_fitness"),
            best_epoch=done.get("best_epoch"),
            class_names=done.get("class_names"),
            task=done.get("task"),
            completed_at=now(),
            training_error=None,
        )
        outcome: dict = {"weights": bool(weights), "system": system}
        if warnings:
            outcome["warnings"] = warnings
        queue.finish(job["id"], status, result=outcome)
        return
    error = result.last("error")
    if result.stopped == "cancelled":
        db.update_model(model_id, status="cancelled", completed_at=now())
        queue.finish(job["id"], "cancelled", result={"system": system})
        return
    if result.stopped == "shutdown":
        message, code, status = (
            "the appliance stopped while this job was running; resume the model to"
            " continue from its last checkpoint",
            "interrupted",
            "interrupted",
        )
    elif error is None and result.returncode < 0 and result.stopped is None:
        # Killed from outside (the OOM killer, an operator): the run itself did
        # not fail, and its last checkpoint can carry on.
        message, code, status = (
            f"the trainer {describe_exit(result.returncode)}; resume the model to"
            " continue from its last checkpoint",
            "interrupted",
            "interrupted",
        )
    else:
        detail = (
            error["message"]
            if error
            else f"the trainer {describe_exit(result.returncode)}"
        )
        message, code, status = (
            f"{detail}\n{queue.log_tail(workdir / 'train.log')}".strip(),
            "training_failed",
            "failed",
        )
    db.update_model(
        model_id,
        status="failed",
        training_error={"message": message, "code": code, "timestamp": now()},
    )
    queue.finish(
        job["id"],
        status,
        error={"message": message, "code": code},
        result={"system": system},
    )


def _keep_weights(
    queue: JobQueue, model_id: str, run_dir: Path, done: dict | None
) -> Path | None:
    """Store the run's best weights (else its last) on the model, even when the run
    ended early, so they can still be downloaded, exported and deployed."""
    candidates = []
    if done and done.get("weights"):
        candidates.append(Path(done["weights"]))
    candidates += [run_dir / "weights" / "best.pt", run_dir / "weights" / "last.pt"]
    source = next((p for p in candidates if p.is_file()), None)
    if source is None:
        return None
    target = queue.blobs.path("models", model_id, "best.pt")
    queue.blobs.put_file(target, source)
    queue.db.update_model(model_id, weights_size=target.stat().st_size)
    logger.info(
        "model %s: kept %s (%d bytes)", model_id, source.name, target.stat().st_size
    )
    return target
