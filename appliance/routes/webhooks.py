"""The sync endpoints stock ultralytics calls while it trains with
`project=owner/proj` (ultralytics/utils/callbacks/platform.py): the run trains
wherever `yolo train` runs and streams into the appliance.

`training_started` finds or makes the model owner/proj/name and opens a training
job for it that no local worker runs (`args.remote`); every later event names the
model by id. The job shows through the ordinary model and training routes: epochs
as they end, the console log, its weights once uploaded. A cancel through the
appliance is answered `cancelled: true`, and the client stops after the epoch.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from .. import hooks, weights
from ..errors import Conflict, Invalid, NotFound
from ..ids import SLUG_RE, now, slugify
from ..store._jobs import ACTIVE
from ..vision import TASKS
from ..web import field, json_body, owner_for_write, reply, require_user, services
from .datasets import find_dataset
from .models import editable_model

logger = logging.getLogger(__name__)

EVENTS = frozenset(
    {
        "training_started",
        "training_progress",
        "epoch_end",
        "system_metrics",
        "console_output",
        "checkpoint_saved",
        "training_complete",
        "training_failed",
    }
)
#: Past this much text a console chunk is cut (ultralytics sends at most 5 lines).
MAX_CHUNK_CHARS = 64 * 1024
_ENDED = ("completed", "failed", "cancelled")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: Sent from the client's thread pool, so they may land after training_complete.
_LATE = frozenset({"epoch_end", "console_output", "checkpoint_saved"})
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}\.pt$")

_log_lock = threading.Lock()
#: Chunk ids already written per job, so a retried chunk is written once.
_seen_chunks: OrderedDict[str, set[int]] = OrderedDict()


# -- finding the model a run streams into ----------------------------------


def _split_project(project: str, username: str) -> tuple[str, str]:
    """`owner/proj` as the client slugified it; a bare name is the caller's own."""
    owner, _, slug = project.partition("/") if "/" in project else ("", "", project)
    owner = (owner or username).lower()  # usernames are lower case
    if not SLUG_RE.match(slug):
        raise Invalid("project must be owner/project with a slug of [a-z0-9-]")
    return owner, slug


def _project_for(request: Request, project: str) -> dict:
    user = require_user(request)
    owner_name, slug = _split_project(project, user["username"])
    owner = owner_for_write(request, owner_name)
    db = services(request).db
    row = db.project_by_slug(owner["id"], slug)
    if row is None:
        try:
            row = db.create_project(
                owner_id=owner["id"], slug=slug, name=slug, visibility="private"
            )
        except sqlite3.IntegrityError:  # another run made it just now
            return db.project_by_slug(owner["id"], slug)
        logger.info("project %s/%s made for a streamed run", owner["username"], slug)
    return row


def _fresh(db, model: dict) -> bool:
    """A model nothing has trained yet, which a new run may take."""
    return (
        model["status"] == "pending"
        and not model["weights_size"]
        and db.latest_job(model["id"], "train") is None
    )


def _model_for_run(request: Request, project: dict, name: str) -> dict:
    """owner/proj/name, else name-2, name-3...: a run never writes over a model that
    was trained before (the Platform does the same)."""
    db = services(request).db
    base = slugify(name or "train") or "train"
    for n in range(1, 1000):
        slug = base if n == 1 else f"{base[:120]}-{n}"
        row = db.model_by_slug(project["id"], slug)
        if row is None:
            try:
                return db.create_model(
                    project_id=project["id"], slug=slug, name=slug[:100]
                )
            except sqlite3.IntegrityError:  # another run took this name just now
                continue
        if _fresh(db, row):
            return row
    raise Conflict(f"too many runs named {base} in this project")


def _model_of_event(request: Request, body: dict) -> dict:
    model_id = field(body, "modelId", str)
    if model_id:
        return editable_model(request, model_id)
    project = field(body, "project", str)
    if not project:
        raise Invalid("send modelId (or project and name)")
    user = require_user(request)
    owner, slug = _split_project(project, user["username"])
    name = slugify(field(body, "name", str, default="train")) or "train"
    return editable_model(request, owner, slug, name)


# -- values as ultralytics sends them --------------------------------------


def _typed(value: Any) -> Any:
    """trainArgs arrive stringified ("epochs": "2"); give numbers, booleans and
    None back their type, keep everything else as the text it is."""
    if not isinstance(value, str):
        return value
    special = {"True": True, "False": False, "None": None}
    if value in special:
        return special[value]
    for kind in (int, float):
        try:
            number = kind(value)
        except ValueError:
            continue
        return number if math.isfinite(number) else value
    return value


def _train_args(raw: dict) -> dict[str, Any]:
    args = {str(k)[:100]: _typed(v) for k, v in raw.items()}
    if "cache" in args:  # the Platform's values: ram, disk or false
        args["cache"] = {True: "ram", False: "false", None: "false"}.get(
            args["cache"], str(args["cache"]).lower()
        )
    return args


def _numbers(mapping: Any) -> dict[str, float]:
    if not isinstance(mapping, dict):
        return {}
    out = {}
    for key, value in mapping.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out[str(key)[:100]] = round(float(value), 6)
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


# -- events ----------------------------------------------------------------


def _reply(event: str, model: dict, job: dict | None, **extra: Any) -> dict:
    out: dict[str, Any] = {"received": True, "event": event, "modelId": model["id"]}
    if job is not None and (job["cancel_requested"] or job["status"] == "cancelled"):
        out["cancelled"] = True
    return {**out, **extra}


def _started(request: Request, user: dict, body: dict, data: dict) -> dict:
    svc = services(request)
    db = svc.db
    if field(body, "modelId", str):
        model = editable_model(request, body["modelId"])  # a resumed run
    else:
        project = _project_for(request, field(body, "project", str, required=True))
        model = _model_for_run(request, project, field(body, "name", str) or "train")
    latest = db.latest_job(model["id"], "train")
    if latest and latest["status"] in ACTIVE:
        if not latest["args"].get("remote"):
            raise Conflict("this model is training on the appliance already")
        svc.queue.finish(
            latest["id"],
            "interrupted",
            error={"message": "a new run took over", "code": "interrupted"},
        )
    train_args = _train_args(field(data, "trainArgs", dict, default={}))
    if not train_args and model["train_args"]:  # a resume that sent none
        train_args = dict(model["train_args"])
    if "epochs" in data and isinstance(data["epochs"], int):
        train_args["epochs"] = data["epochs"]
    run = 1 + db.scalar(
        "SELECT count(*) FROM jobs WHERE subject_id = ? AND kind = 'train'",
        [model["id"]],
    )
    job = db.create_job(
        "train",
        model["id"],
        user["id"],
        {"remote": True, "run": run, "trainArgs": train_args},
        status="running",
    )
    task = train_args.get("task")
    changes: dict[str, Any] = {
        "status": "running",
        "started_at": now(),
        "completed_at": None,
        "training_error": None,
        "train_args": train_args,
        "environment": field(data, "environment", dict) or model["environment"],
        "task": task if task in TASKS else model["task"],
    }
    dataset = _dataset_of(request, train_args.get("data"))
    if dataset:
        changes["dataset_id"] = dataset["id"]
    db.update_model(model["id"], **changes)
    if run == 1 or not body.get("modelId"):
        db.clear_epochs(model["id"])
    hooks.training_event(db, job, "training.started", device=data.get("device"))
    _console_path(request, job["id"]).parent.mkdir(parents=True, exist_ok=True)
    logger.info(
        "model %s/%s/%s: run %d streams in from %s",
        model["owner"],
        model["project"],
        model["slug"],
        run,
        (data.get("environment") or {}).get("hostname", "a client"),
    )
    base = svc.settings.base_url
    return {
        "received": True,
        "event": "training_started",
        "mode": "remote",
        "modelId": model["id"],
        "runId": run,
        "modelSlug": model["slug"],
        "modelUrl": f"{base}/{model['owner']}/{model['project']}/{model['slug']}",
    }


def _dataset_of(request: Request, data: Any) -> dict | None:
    """The local dataset a `ul://owner/datasets/slug` names, when the caller sees it."""
    if not isinstance(data, str) or not data.startswith("ul://"):
        return None
    parts = data[5:].split("/")
    if len(parts) != 3 or parts[1] != "datasets":
        return None
    try:
        return find_dataset(request, parts[0], parts[2])
    except NotFound:
        return None


def _epoch_end(request: Request, model: dict, job: dict, data: dict) -> None:
    db = services(request).db
    epoch = field(data, "epoch", int, required=True)
    total = field(job["args"].get("trainArgs", {}), "epochs", int, default=0)
    metrics = _numbers(data.get("metrics"))
    if total and epoch >= total:
        # ultralytics' extra epoch_end: the final validation of best.pt, which
        # training_complete repeats (and then has the last word)
        if job["status"] not in _ENDED:
            db.update_model(model["id"], metrics=metrics)
        return
    if epoch < 0:
        raise Invalid("data.epoch must be 0 or more")
    if job["status"] in _ENDED:
        # Late, after training_complete: keep an epoch that is missing, no more.
        if all(e["epoch"] != epoch for e in db.epochs(model["id"])):
            db.record_epoch(model["id"], epoch, metrics, _number(data.get("fitness")))
        return
    db.record_epoch(model["id"], epoch, metrics, _number(data.get("fitness")))
    hooks.training_event(
        db, job, "training.epoch", epoch=epoch + 1, epochs=total, metrics=metrics
    )
    changes: dict[str, Any] = {}
    if _number(data.get("best_fitness")) is not None:
        changes["best_fitness"] = float(data["best_fitness"])
    if isinstance(data.get("modelInfo"), dict):
        changes["metadata"] = {
            **(model.get("metadata") or {}),
            "modelInfo": _numbers(data["modelInfo"]),
        }
    if changes:
        db.update_model(model["id"], **changes)
    percent = 100.0 * (epoch + 1) / total if total else 0.0
    db.update_job(
        job["id"],
        progress=round(min(percent, 100.0), 1),
        message=f"epoch {epoch + 1}/{total or '?'}",
        heartbeat_at=now(),
    )


def _console_path(request: Request, job_id: str):
    return services(request).settings.runs / job_id / "train.log"


def _console(request: Request, job: dict, data: dict) -> None:
    content = field(data, "content", str, default="")[:MAX_CHUNK_CHARS]
    chunk = data.get("chunkId")
    with _log_lock:
        seen = _seen_chunks.setdefault(job["id"], set())
        _seen_chunks.move_to_end(job["id"])
        while len(_seen_chunks) > 64:
            _seen_chunks.popitem(last=False)
        if isinstance(chunk, int):
            if chunk in seen:
                return
            seen.add(chunk)
        if content.strip():
            path = _console_path(request, job["id"])
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(content if content.endswith("\n") else content + "\n")
    changes: dict[str, Any] = {"heartbeat_at": now()}
    bars = data.get("progress")
    if isinstance(bars, dict) and bars and job["status"] not in _ENDED:
        # the live progress bar, as the job's one-line status
        latest = _ANSI.sub("", str(list(bars.values())[-1])).strip()
        if latest:
            changes["message"] = latest[-300:]
    services(request).db.update_job(job["id"], **changes)


def _adopt_weights(request: Request, model: dict, reference: Any) -> str | None:
    """Make an uploaded checkpoint the model's weights, once it has been read
    safely. Returns why not, or None when the weights are in place."""
    svc = services(request)
    if not isinstance(reference, str):
        return "no checkpoint was uploaded"
    parts = reference.split("/")
    if len(parts) != 5 or parts[:3] != ["models", model["id"], "checkpoints"]:
        return f"{reference} is not a checkpoint of this model"
    session = svc.db.upload(parts[3])
    if (
        session is None
        or session["asset_type"] != "checkpoint"
        or session["asset_id"] != model["id"]
    ):
        return f"{reference} is not a checkpoint of this model"
    source = svc.blobs.path("uploads", session["id"], "data")
    if session["status"] == "adopted":
        return None  # already, by checkpoint_saved before training_complete
    if session["status"] not in ("uploaded", "completed") or not source.is_file():
        return "the checkpoint upload has not arrived"
    try:
        weights.read_checkpoint(source)
    except weights.CheckpointError as exc:
        logger.warning("model %s: refused a checkpoint: %s", model["id"], exc.message)
        svc.db.update_upload(session["id"], status="rejected")
        svc.blobs.remove_tree("uploads", session["id"])
        return exc.message
    target = svc.blobs.path("models", model["id"], "best.pt")
    svc.blobs.put_file(target, source)
    svc.db.update_model(model["id"], weights_size=target.stat().st_size)
    svc.db.update_upload(session["id"], status="adopted")
    svc.blobs.remove_tree("uploads", session["id"])  # a long run uploads every 15 min
    return None


def _complete(request: Request, model: dict, job: dict, data: dict) -> str | None:
    svc = services(request)
    results = field(data, "results", dict, default={})
    problem = None
    if results.get("modelPath"):
        problem = _adopt_weights(request, model, results["modelPath"])
    names = data.get("classNames")
    cancelled = bool(job["cancel_requested"]) or job["status"] == "cancelled"
    status = "cancelled" if cancelled else "completed"
    changes: dict[str, Any] = {
        "status": status,
        "completed_at": now(),
        "training_error": None,
        "best_fitness": _number(results.get("bestFitness")),
        "best_epoch": results.get("bestEpoch")
        if isinstance(results.get("bestEpoch"), int)
        else None,
    }
    metrics = _numbers(results.get("metrics"))
    if metrics:
        changes["metrics"] = metrics
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        changes["class_names"] = names
    svc.db.update_model(model["id"], **changes)
    weights_kept = bool(svc.db.model(model["id"])["weights_size"])
    svc.queue.finish(job["id"], status, result={"weights": weights_kept})
    return problem


def _failed(request: Request, model: dict, job: dict, data: dict) -> None:
    svc = services(request)
    detail = data.get("error") or data.get("message") or "the run failed"
    message = str(detail.get("message") if isinstance(detail, dict) else detail)
    error = {"message": message[:2000], "code": "training_failed"}
    svc.db.update_model(
        model["id"], status="failed", training_error={**error, "timestamp": now()}
    )
    svc.queue.finish(job["id"], "failed", error=error)


def _handle(request: Request, user: dict, body: dict) -> dict:
    event = field(body, "event", str, required=True)
    if event not in EVENTS:
        raise Invalid(f"event must be one of: {', '.join(sorted(EVENTS))}")
    data = field(body, "data", dict, default={})
    if event == "training_started":
        return _started(request, user, body, data)
    db = services(request).db
    model = _model_of_event(request, body)
    job = db.latest_job(model["id"], "train")
    if job is None or not job["args"].get("remote"):
        raise Conflict("this model has no streamed run; send training_started first")
    if job["status"] == "interrupted":
        # The appliance restarted while the client went on training: carry on.
        db.update_job(job["id"], status="running", error=None)
        db.update_model(model["id"], status="running", training_error=None)
        job = db.job(job["id"])
    if job["status"] in _ENDED and event not in _LATE:
        return _reply(event, model, job, ignored="stale_instance")
    extra: dict[str, Any] = {}
    if event == "epoch_end":
        _epoch_end(request, model, job, data)
    elif event == "console_output":
        _console(request, job, data)
    elif event == "checkpoint_saved":
        problem = _adopt_weights(request, model, data.get("modelPath"))
        if problem:
            extra["warning"] = problem
    elif event == "training_complete":
        problem = _complete(request, model, job, data)
        if problem:
            extra["warning"] = problem
    elif event == "training_failed":
        _failed(request, model, job, data)
    else:
        db.update_job(job["id"], heartbeat_at=now())
    return _reply(event, model, db.job(job["id"]), **extra)


async def training_metrics(request: Request):
    user = require_user(request)
    body = await json_body(request)
    return reply(await run_in_threadpool(_handle, request, user, body))


async def upload_checkpoint(request: Request):
    """A signed PUT target for the run's checkpoint; the file becomes the model's
    weights when an event names it (checkpoint_saved or training_complete)."""
    user = require_user(request)
    body = await json_body(request)
    svc = services(request)
    model = _model_of_event(request, body)
    filename = field(body, "filename", str, required=True)
    if not _FILENAME.match(filename):
        raise Invalid("filename must be a plain .pt name: letters, digits, '.-_'")
    size = field(body, "size", int)
    limit = svc.settings.max_upload_bytes
    if size is not None and not 0 < size <= limit:
        raise Invalid(f"size must be between 1 and {limit} bytes")
    expires = svc.signer.expiry()
    session = svc.db.create_upload(
        user_id=user["id"],
        asset_type="checkpoint",
        asset_id=model["id"],
        filename=filename,
        content_type="application/octet-stream",
        total_bytes=size or 0,  # 0: any size up to the appliance's limit
        expires_at=datetime.fromtimestamp(expires, UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z"
        ),
    )
    path = f"models/{model['id']}/checkpoints/{session['id']}/{filename}"
    return reply(
        {
            "uploadUrl": svc.signer.url(f"/uploads/{session['id']}", method="PUT"),
            "gcsPath": path,
            "uploadPath": path,
            "modelId": model["id"],
        }
    )


routes = [
    Route("/api/webhooks/training/metrics", training_metrics, methods=["POST"]),
    Route("/api/webhooks/models/upload", upload_checkpoint, methods=["POST"]),
]
