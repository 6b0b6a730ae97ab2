"""Model operations beyond create and read, in both route families: update,
delete to the trash, download (a signed URL) and download counts, clone, and
the weights of a `.pt` uploaded through /api/upload (read without running its
code, by appliance/checkpoints.py)."""

from __future__ import annotations

import logging
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from ..checkpoints import BadCheckpoint, Checkpoint, read_checkpoint
from ..errors import Conflict, Invalid, NotFound
from ..ids import SLUG_RE, now, slugify
from ..serialize import REGION
from ..web import (
    choice_field,
    display_name,
    field,
    json_body,
    owner_for_write,
    reply,
    require_clone_rights,
    require_user,
    services,
    short_field,
)
from .models import (
    editable_model,
    epoch_rows,
    model_of,
    slug_conflict,
    weights_path,
)
from .projects import (
    LICENSES,
    check_metadata,
    find_project,
    free_slug,
    stop_training,
)

logger = logging.getLogger(__name__)

STATUSES = (
    "pending",
    "untrained",
    "starting",
    "running",
    "completed",
    "failed",
    "cancelled",
)
_ACTIVE = ("queued", "starting", "running")


# -- download ------------------------------------------------------------------


async def download(request: Request):
    """A signed URL to the model's weights (the URL's last segment is
    `best.pt`, which `YOLO()` needs to pick its loader)."""
    model = model_of(request)
    path = weights_path(request, model)
    if path is None:
        raise NotFound("this model has no weights to download yet")
    svc = services(request)
    return reply(
        {
            "downloadUrl": svc.signer.url(f"/files/models/{model['id']}/best.pt"),
            "filename": f"{model['slug']}.pt",
            "size": path.stat().st_size,
            "expiresAt": datetime.fromtimestamp(svc.signer.expiry(), UTC).strftime(
                "%Y-%m-%dT%H:%M:%S.000Z"
            ),
        }
    )


async def track_download(request: Request):
    """Count one download of the model's weights."""
    model = model_of(request)
    count = services(request).db.count_download(model["id"])
    return reply({"success": True, "downloadCount": count})


# -- update and trash ------------------------------------------------------------

_PATCHABLE = frozenset(
    {
        "starred",
        "name",
        "color",
        "description",
        "metadata",
        "status",
        "license",
        "datasetSlug",
        "projectId",
        "trainArgs",
        "trainResults",
        "epochs",
        "bestEpoch",
        "bestFitness",
        "version",
        "trainingError",
    }
)
_NULLABLE = frozenset({"color", "datasetSlug"})


def _training_error(body: dict) -> dict:
    error = field(body, "trainingError", dict)
    message = short_field(error, "message", 1000)
    if not message:
        raise Invalid("trainingError.message is required")
    out = {"message": message, "timestamp": field(error, "timestamp", str) or now()}
    if (code := short_field(error, "code", 50)) is not None:
        out["code"] = code
    return out


def _dataset_link(request: Request, body: dict, model: dict) -> str | None:
    slug = body["datasetSlug"]
    if slug is None:
        return None
    if not isinstance(slug, str) or len(slug) > 100:
        raise Invalid("datasetSlug must be a dataset slug")
    dataset = services(request).db.dataset_by_slug(model["owner_id"], slug)
    if dataset is None or dataset.get("deleted_at"):
        raise NotFound(f"Dataset {model['owner']}/{slug} not found")
    return dataset["id"]


def _move_target(request: Request, body: dict, model: dict) -> str:
    target = find_project(request, field(body, "projectId", str))
    if target["owner_id"] != model["owner_id"]:
        raise Invalid("a model moves only between projects of its own workspace")
    return target["id"]


async def update(request: Request):
    """PATCH a model. A new display name also renames the slug."""
    model = model_of(request, edit=True)
    db = services(request).db
    body = await json_body(request)
    unknown = sorted(set(body) - _PATCHABLE)
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(unknown)}")
    nulls = sorted(k for k, v in body.items() if v is None and k not in _NULLABLE)
    if nulls:
        raise Invalid(f"{', '.join(nulls)} must not be null")
    if "starred" in body:
        raise Invalid("this appliance does not keep stars")
    fields: dict = {}
    details = dict(model.get("details") or {})
    if "name" in body:
        fields["name"] = display_name(body["name"])
        fields["slug"] = slugify(fields["name"]) or model["slug"]
    if "description" in body:
        fields["description"] = short_field(body, "description", 1000) or ""
    if "metadata" in body:
        fields["metadata"] = check_metadata(field(body, "metadata", dict))
    if "status" in body:
        status = choice_field(body, "status", STATUSES)
        job = db.latest_job(model["id"], "train")
        if job and job["status"] in _ACTIVE:
            raise Conflict("the status of a model that is training cannot be set")
        fields["status"] = status
    if "trainArgs" in body:
        fields["train_args"] = check_metadata(field(body, "trainArgs", dict))
    if "epochs" in body:
        epochs = field(body, "epochs", (int, float))
        if epochs < 0 or epochs != int(epochs):
            raise Invalid("epochs must be a whole number")
        base = fields.get("train_args", model["train_args"] or {})
        fields["train_args"] = {**base, "epochs": int(epochs)}
    if "bestEpoch" in body:
        fields["best_epoch"] = int(field(body, "bestEpoch", (int, float)))
    if "bestFitness" in body:
        fields["best_fitness"] = float(field(body, "bestFitness", (int, float)))
    if "trainingError" in body:
        fields["training_error"] = _training_error(body)
    if "datasetSlug" in body:
        fields["dataset_id"] = _dataset_link(request, body, model)
    if "projectId" in body:
        fields["project_id"] = _move_target(request, body, model)
    if "color" in body:
        color = body["color"]
        if color is None:
            details.pop("color", None)
        else:
            details["color"] = short_field(body, "color", 7)
    if (license_ := choice_field(body, "license", LICENSES)) is not None:
        details["license"] = license_
    if (version := short_field(body, "version", 50)) is not None:
        details["version"] = version
    if details != (model.get("details") or {}):
        fields["details"] = details
    epochs = epoch_rows(body)
    if fields:
        try:
            db.update_model(model["id"], **fields)
        except sqlite3.IntegrityError:
            target = db.project(fields.get("project_id", model["project_id"]))
            raise slug_conflict(
                request, target, fields.get("slug", model["slug"])
            ) from None
    for epoch in epochs:
        db.record_epoch(model["id"], epoch["epoch"], epoch["metrics"], epoch["fitness"])
    out = {"success": True, "model": fields.get("slug", model["slug"])}
    if "datasetSlug" in body:
        out["datasetLinked"] = fields["dataset_id"] is not None
    return reply(out)


async def delete(request: Request):
    """Move a model to the trash (restorable for 30 days)."""
    model = model_of(request, edit=True)
    stop_training(request, [model["id"]])
    services(request).db.trash_model(model["id"])
    logger.info("model %s moved to the trash", model["id"])
    return reply({"success": True})


# -- clone -------------------------------------------------------------------------


def copy_model(request: Request, source: dict, project_id: str, **fields) -> dict:
    """Copy a model (row, per-epoch metrics, weights) into a project. The
    weights are shared by a hard link where the disk allows it, else copied:
    weights are only ever replaced whole (written aside, then renamed), never
    rewritten in place, so a shared file never changes under either model."""
    db, blobs = services(request).db, services(request).blobs
    if "slug" not in fields:
        taken = {
            r["slug"]
            for r in db.query(
                "SELECT slug FROM models WHERE project_id = ?", [project_id]
            )
        }
        fields["slug"] = free_slug(taken, source["slug"])
    row = db.clone_model_row(source, project_id, **fields)
    weights = blobs.path("models", source["id"], "best.pt")
    if row["weights_size"] and weights.is_file():
        target = blobs.path("models", row["id"], "best.pt")
        target.parent.mkdir(parents=True, exist_ok=True)
        aside = blobs.tmp / f"link-{row['id']}"
        try:
            os.link(weights, aside)
            os.replace(aside, target)
        except OSError:
            aside.unlink(missing_ok=True)
            blobs.put_file(target, weights)
    elif row["weights_size"]:
        db.update_model(row["id"], weights_size=None)
        row = db.model(row["id"])
    return row


_CLONE_FIELDS = frozenset(
    {
        "owner",
        "project",
        "model",
        "name",
        "description",
        "targetProjectSlug",
        "modelName",
    }
)


async def clone(request: Request):
    """Copy a model the caller may see into a project of a workspace the caller
    edits (their own by default). Contract body: project, model?, name?;
    seed body: targetProjectSlug, modelName?."""
    require_user(request)
    source = model_of(request)
    require_clone_rights(request, source, "model")
    body = await json_body(request)
    unknown = sorted(set(body) - _CLONE_FIELDS)
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(unknown)}")
    owner = owner_for_write(request, field(body, "owner", str))
    db = services(request).db
    project_slug = field(body, "project", str) or field(
        body, "targetProjectSlug", str, required=True
    )
    project = db.project_by_slug(owner["id"], project_slug)
    if project is None or project.get("deleted_at"):
        raise NotFound(f"Project {owner['username']}/{project_slug} not found")
    fields: dict = {}
    given = body.get("name") or body.get("modelName")
    if given is not None:
        fields["name"] = display_name(given)
    slug = field(body, "model", str) or (slugify(fields["name"]) if given else None)
    if slug is not None:
        if not SLUG_RE.match(slug):
            raise Invalid("model must be lower-case letters, digits and dashes (1-128)")
        if db.query_one(
            "SELECT id FROM models WHERE project_id = ? AND slug = ?",
            [project["id"], slug],
        ):
            raise Invalid(f"model {owner['username']}/{project_slug}/{slug} exists")
        fields["slug"] = slug
    if "description" in body:
        fields["description"] = short_field(body, "description", 1000) or ""
    row = await run_in_threadpool(copy_model, request, source, project["id"], **fields)
    logger.info("model %s cloned into %s", source["id"], row["id"])
    return reply(
        {
            "id": row["id"],
            "owner": row["owner"],
            "project": row["project"],
            "model": row["slug"],
            "name": row["name"],
            "region": REGION,
        },
        201,
    )


# -- checkpoint uploads ------------------------------------------------------------

#: Train arguments that name places on the uploader's machine.
_LOCAL_ARGS = frozenset({"save_dir", "project", "name", "source", "cfg", "tracker"})
_DEVICES = ("0", "auto", "cpu", "mps")


def _train_args_of(checkpoint: Checkpoint) -> dict:
    """The checkpoint's train arguments as the contract shows them: paths of
    the uploader's machine left out, `data` kept only as a ul:// URI, `model`
    as a file name, empty values dropped."""
    args = {}
    for key, value in checkpoint.train_args.items():
        if key in _LOCAL_ARGS or value is None:
            continue
        if key == "data" and not (isinstance(value, str) and value.startswith("ul://")):
            continue
        if key == "model" and isinstance(value, str) and not value.startswith("ul://"):
            value = Path(value).name
        if key == "device" and str(value) not in _DEVICES:
            continue
        if key == "cache" and isinstance(value, bool):
            value = "ram" if value else "false"
        args[key] = value
    return args


def _utc_text(value: str | None) -> str | None:
    """A checkpoint's ISO date in the contract's form (a date without a zone
    is read as UTC); None when it is not a date."""
    try:
        stamp = datetime.fromisoformat(value or "")
    except ValueError:
        return None
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def attach_checkpoint(request: Request, session: dict, path: Path) -> None:
    """Make an uploaded `.pt` (an upload session of asset type `models`, whose
    assetId is the model's id) that model's weights, after reading it without
    running any of its code (appliance/checkpoints.py)."""
    model = editable_model(request, session["asset_id"])
    db = services(request).db
    job = db.latest_job(model["id"], "train")
    if model["weights_size"] or (job and job["status"] in _ACTIVE):
        raise Conflict("this model already has weights or is training")
    try:
        checkpoint = read_checkpoint(path)
    except BadCheckpoint as exc:
        logger.warning("checkpoint upload for %s refused: %s", model["id"], exc)
        raise Invalid(f"invalid checkpoint: {exc}") from None
    if model["task"] and model["task"] != checkpoint.task:
        raise Invalid(
            f"the checkpoint is a {checkpoint.task} model but this model's task"
            f" is {model['task']}"
        )
    blobs = services(request).blobs
    target = blobs.put_file(blobs.path("models", model["id"], "best.pt"), path)
    train_args = _train_args_of(checkpoint)
    details = dict(model.get("details") or {})
    if checkpoint.version:
        details["version"] = checkpoint.version[:50]
    completed_at = _utc_text(checkpoint.date) or now()
    db.clear_epochs(model["id"])
    for epoch, metrics in checkpoint.results:
        db.record_epoch(model["id"], epoch, metrics, metrics.get("fitness"))
    db.update_model(
        model["id"],
        task=checkpoint.task,
        class_names=checkpoint.class_names,
        train_args=train_args or None,
        metrics=checkpoint.metrics or None,
        best_fitness=checkpoint.best_fitness,
        weights_size=target.stat().st_size,
        status="completed",
        completed_at=completed_at,
        details=details,
    )
    logger.info(
        "model %s: %s checkpoint with %d classes attached",
        model["id"],
        checkpoint.task,
        len(checkpoint.class_names),
    )


ID = "/api/models/{model_id:id}"
SLUG = "/api/models/{owner}/{project}/{model}"

#: Operations on one model, offered in both route families.
_OPERATIONS = [
    ("", "PATCH", update),
    ("", "DELETE", delete),
    ("/download", "GET", download),
    ("/track-download", "POST", track_download),
    ("/clone", "POST", clone),
]

routes = [
    *(Route(f"{ID}{tail}", fn, methods=[m]) for tail, m, fn in _OPERATIONS),
    *(Route(f"{SLUG}{tail}", fn, methods=[m]) for tail, m, fn in _OPERATIONS),
]
