"""Models: create, list, completed, retrieve, update, trash, files, download,
download count, clone, checkpoint uploads; training status and cancel;
predict. Both route families: the contract's owner/project/model paths and
the seed's model-id paths (`GET /api/models?projectId=` lists for the seed)."""

from __future__ import annotations

import io
import logging
import os
import sqlite3
import warnings
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from ..checkpoints import BadCheckpoint, Checkpoint, read_checkpoint
from ..errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from ..ids import SLUG_RE, is_id, new_id, now, slugify
from ..serialize import REGION, model_json, model_summary_json, training_json
from ..vision import TASKS
from ..web import (
    can_edit,
    can_see,
    display_name,
    field,
    json_body,
    owner_for_write,
    q_choice,
    q_int,
    reply,
    require_user,
    services,
    visible_owner,
)
from .projects import LICENSES, check_metadata, choice, find_project, free_slug, short

logger = logging.getLogger(__name__)

MAX_PREDICT_BYTES = 50 * 1024**2
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


def find_model(
    request: Request, owner: str, project: str | None = None, slug: str | None = None
) -> dict:
    """A model by id (seed routes) or by owner/project/model (contract routes),
    hidden with 404 from anyone who may not see it, and while it or its
    project is in the trash."""
    db = services(request).db
    if project is None:
        row = db.model(owner) if is_id(owner) else None
    else:
        owner_row = visible_owner(request, owner)
        project_row = db.project_by_slug(owner_row["id"], project)
        row = db.model_by_slug(project_row["id"], slug) if project_row else None
    if (
        row is None
        or row.get("deleted_at")
        or row.get("project_deleted_at")
        or not can_see(request, row["owner_id"], row["visibility"])
    ):
        raise NotFound("Model not found")
    return row


def editable_model(request: Request, *path: str | None) -> dict:
    require_user(request)
    row = find_model(request, *path)
    if not can_edit(request, row["owner_id"]):
        raise Forbidden("You cannot change this model")
    return row


def _path(request: Request) -> tuple[str, str | None, str | None]:
    p = request.path_params
    if "model_id" in p:
        return p["model_id"], None, None
    return p["owner"], p.get("project"), p.get("model")


def _model_slug(body: dict, name: str | None) -> str:
    slug = (
        field(body, "model", str)
        or field(body, "slug", str)
        or (slugify(name) if name else None)
    )
    slug = slug or f"model-{new_id()[:8].lower()}"
    if not SLUG_RE.match(slug):
        raise Invalid("model must be lower-case letters, digits and dashes (1-128)")
    return slug


def _taken(request: Request, project: dict, slug: str) -> Conflict:
    name = f"{project['owner']}/{project['slug']}/{slug}"
    if services(request).db.slug_in_trash("models", "project_id", project["id"], slug):
        return Conflict(
            f"Model {name} is in the trash: restore it or delete it permanently"
        )
    return Conflict(f"Model {name} already exists")


def _epoch_rows(body: dict) -> list[dict]:
    """`trainResults` as per-epoch rows: epoch, metrics (numbers), fitness."""
    results = field(body, "trainResults", list, default=[])
    if len(results) > 10_000:
        raise Invalid("trainResults holds at most 10000 epochs")
    rows = []
    for item in results:
        if not isinstance(item, dict):
            raise Invalid("trainResults items must be objects")
        epoch = field(item, "epoch", (int, float), required=True)
        metrics = field(item, "metrics", dict, default={})
        if (
            epoch < 0
            or epoch != int(epoch)
            or not all(
                isinstance(v, int | float) and not isinstance(v, bool)
                for v in metrics.values()
            )
        ):
            raise Invalid("trainResults: epoch is a whole number, metrics numbers")
        rows.append(
            {
                "epoch": int(epoch),
                "metrics": metrics,
                "fitness": field(item, "fitness", (int, float)),
            }
        )
    return rows


def _create_fields(body: dict) -> dict:
    """The optional model fields a create may carry."""
    fields: dict = {
        "metadata": check_metadata(field(body, "metadata", dict, default={}))
    }
    if (args := field(body, "trainArgs", dict)) is not None:
        fields["train_args"] = check_metadata(args)
    if (epochs := field(body, "epochs", (int, float))) is not None:
        fields["train_args"] = {**fields.get("train_args", {}), "epochs": int(epochs)}
    if (metrics := field(body, "metrics", dict)) is not None:
        fields["metrics"] = metrics
    if (environment := field(body, "environment", dict)) is not None:
        fields["environment"] = environment
    details = {}
    for name, most in (("version", 50), ("docs", 4096)):
        if (value := short(body, name, most)) is not None:
            details[name] = value
    fields["details"] = details
    if (completed := field(body, "completedAt", str)) is not None:
        fields["completed_at"] = completed
    return fields


async def create(request: Request):
    require_user(request)
    body = await json_body(request)
    db = services(request).db
    if body.get("projectId"):
        project = find_project(request, field(body, "projectId", str))
        owner_for_write(request, project["owner"])
    else:
        owner = owner_for_write(request, field(body, "owner", str))
        project = db.project_by_slug(
            owner["id"], field(body, "project", str, required=True)
        )
        if project is None or project.get("deleted_at"):
            raise NotFound(f"Project {owner['username']}/{body['project']} not found")
    name = display_name(body["name"]) if body.get("name") is not None else None
    slug = _model_slug(body, name)
    task = field(body, "task", str)
    if task is not None and task not in TASKS:
        raise Invalid(f"task must be one of: {', '.join(TASKS)}")
    description = short(body, "description", 1000) or ""
    epochs = _epoch_rows(body)
    try:
        row = db.create_model(
            project_id=project["id"],
            slug=slug,
            name=(name or slug)[:100],
            description=description,
            task=task,
            **_create_fields(body),
        )
    except sqlite3.IntegrityError:
        raise _taken(request, project, slug) from None
    for epoch in epochs:
        db.record_epoch(row["id"], epoch["epoch"], epoch["metrics"], epoch["fitness"])
    out = {
        "id": row["id"],
        "owner": row["owner"],
        "project": row["project"],
        "model": row["slug"],
    }
    if "projectId" in body:  # the seed's form reads the id as modelId
        out["modelId"] = row["id"]
    return reply({**out, "region": REGION}, 201)


async def retrieve(request: Request):
    row = find_model(request, *_path(request))
    if request.query_params.get("analysis") == "1":
        return reply({"analysis": None})
    user = request.scope.get("user")
    epochs = services(request).db.epochs(row["id"])
    return reply(
        {
            "model": model_json(row, epochs),
            "isOwner": bool(user and user["id"] == row["owner_id"]),
        }
    )


def _list_items(request: Request, rows: list[dict], charts: bool = True) -> list:
    db = services(request).db
    models = []
    for row in rows:
        model = model_json(row, db.epochs(row["id"]) if charts else [])
        model.pop("metadata")  # the contract's list items carry no metadata
        if not charts:
            model.pop("trainResults")
        models.append(model)
    return models


async def list_models(request: Request):
    project = find_project(
        request, request.path_params["owner"], request.path_params["project"]
    )
    limit = q_int(request, "limit", 20, 1, 100)
    rows = services(request).db.models_of_project(project["id"], limit)
    return reply({"models": _list_items(request, rows), "region": REGION})


async def list_seed(request: Request):
    """GET /api/models?projectId= (seed): a project's models; `ids` narrows
    the list, `fields=summary` leaves out the per-epoch charts."""
    project_id = request.query_params.get("projectId")
    if not project_id:
        raise Invalid("projectId is required")
    project = find_project(request, project_id)
    limit = q_int(request, "limit", 20, 1, 100)
    fields = q_choice(request, "fields", ("summary", "charts"), "charts")
    db = services(request).db
    ids = [i for i in request.query_params.get("ids", "").split(",") if i]
    rows = (
        db.models_by_ids(project["id"], ids)[:limit]
        if ids
        else db.models_of_project(project["id"], limit)
    )
    models = _list_items(request, rows, charts=fields == "charts")
    for model in models:
        model.update(_id=model["id"], slug=model["model"], projectId=project["id"])
    return reply({"models": models, "region": REGION})


async def completed(request: Request):
    """GET /api/models/completed: trained models with weights in the caller's
    workspaces (or in `owner`, one of them), newest first."""
    user = require_user(request)
    db = services(request).db
    owners = db.workspaces_of(user["id"])
    name = request.query_params.get("owner")
    if name:
        owner = visible_owner(request, name)
        if owner["id"] not in owners:
            raise NotFound(f"Owner {name} not found")
        owners = [owner["id"]]
    rows = db.completed_models(owners, q_int(request, "limit", 50, 1, 500))
    models = []
    for row in rows:
        item = model_summary_json(row, 0)
        item.pop("epochCount")
        item.update(
            owner=row["owner"],
            project=row["project"],
            projectName=row["project_name"],
            projectId=row["project_id"],
            uri=f"ul://{row['owner']}/{row['project']}/{row['slug']}",
        )
        if row["class_names"]:
            item["classNames"] = row["class_names"]
        if row["completed_at"]:
            item["completedAt"] = row["completed_at"]
        models.append(item)
    return reply({"models": models, "region": REGION})


def weights_path(request: Request, model: dict):
    path = services(request).blobs.path("models", model["id"], "best.pt")
    return path if path.is_file() else None


async def files(request: Request):
    model = find_model(request, *_path(request))
    path = weights_path(request, model)
    if path is None:
        return reply({"files": []})
    url = services(request).signer.url(f"/files/models/{model['id']}/best.pt")
    return reply(
        {
            "files": [
                {"name": "best.pt", "size": path.stat().st_size, "downloadUrl": url}
            ]
        }
    )


async def training(request: Request):
    model = find_model(request, *_path(request))
    db = services(request).db
    job = db.latest_job(model["id"], "train")
    if job is None:
        return reply({"job": None})
    return reply({"job": training_json(job, model, db.epochs(model["id"]))})


async def cancel_training(request: Request):
    model = editable_model(request, *_path(request))
    svc = services(request)
    job = svc.db.latest_job(model["id"], "train")
    if job is None or job["status"] not in ("queued", "starting", "running"):
        raise Conflict("this model has no active training job")
    svc.queue.cancel(job["id"])
    if job["status"] == "queued":
        svc.db.update_model(model["id"], status="cancelled")
    return reply({"success": True, "status": "cancelled"})


def _form_float(form, name: str, default: float, low: float, high: float) -> float:
    raw = form.get(name)
    if raw in (None, ""):
        return default
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise Invalid(f"{name} must be a number") from None
    if not low <= value <= high:
        raise Invalid(f"{name} must be between {low:g} and {high:g}")
    return value


async def predict(request: Request):
    model = find_model(request, *_path(request))
    svc = services(request)
    weights = weights_path(request, model)
    if weights is None:
        raise Invalid("this model has no trained weights yet")
    form = await request.form(max_files=1, max_fields=20)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        if form.get("source"):
            raise Invalid(
                "this appliance is offline: send the image as the multipart field 'file'"
            )
        raise Invalid("send an image as the multipart field 'file'")
    data = await upload.read(MAX_PREDICT_BYTES + 1)
    if len(data) > MAX_PREDICT_BYTES:
        raise TooLarge(f"images up to {MAX_PREDICT_BYTES} bytes are accepted")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
        image = image.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge("the image has too many pixels to decode safely") from None
    except (UnidentifiedImageError, ImportError, OSError, ValueError, SyntaxError):
        raise Invalid("invalid_image: the file is not a readable image") from None
    conf = _form_float(form, "conf", 0.25, 0.0, 1.0)
    iou = _form_float(form, "iou", 0.7, 0.0, 1.0)
    imgsz = int(_form_float(form, "imgsz", 640, 32, 4096))
    decimals = int(_form_float(form, "decimals", 5, 0, 10))
    normalize = str(form.get("normalize", "false")).lower() in ("true", "1")
    result = await run_in_threadpool(
        svc.predictor.predict,
        weights,
        image,
        conf=conf,
        iou=iou,
        imgsz=imgsz,
        normalize=normalize,
        decimals=decimals,
        device=svc.settings.device,
    )
    return reply(result)


# -- download ------------------------------------------------------------------


async def download(request: Request):
    """A signed URL to the model's weights (the URL's last segment is
    `best.pt`, which `YOLO()` needs to pick its loader)."""
    model = find_model(request, *_path(request))
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
    model = find_model(request, *_path(request))
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
    message = short(error, "message", 1000)
    if not message:
        raise Invalid("trainingError.message is required")
    out = {"message": message, "timestamp": field(error, "timestamp", str) or now()}
    if (code := short(error, "code", 50)) is not None:
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
    model = editable_model(request, *_path(request))
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
        fields["description"] = short(body, "description", 1000) or ""
    if "metadata" in body:
        fields["metadata"] = check_metadata(field(body, "metadata", dict))
    if "status" in body:
        status = choice(body, "status", STATUSES)
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
            details["color"] = short(body, "color", 7)
    if (license_ := choice(body, "license", LICENSES)) is not None:
        details["license"] = license_
    if (version := short(body, "version", 50)) is not None:
        details["version"] = version
    if details != (model.get("details") or {}):
        fields["details"] = details
    epochs = _epoch_rows(body)
    if fields:
        try:
            db.update_model(model["id"], **fields)
        except sqlite3.IntegrityError:
            target = db.project(fields.get("project_id", model["project_id"]))
            raise _taken(request, target, fields.get("slug", model["slug"])) from None
    for epoch in epochs:
        db.record_epoch(model["id"], epoch["epoch"], epoch["metrics"], epoch["fitness"])
    out = {"success": True, "model": fields.get("slug", model["slug"])}
    if "datasetSlug" in body:
        out["datasetLinked"] = fields["dataset_id"] is not None
    return reply(out)


async def delete(request: Request):
    """Move a model to the trash (restorable for 30 days)."""
    model = editable_model(request, *_path(request))
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
    source = find_model(request, *_path(request))
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
        fields["description"] = short(body, "description", 1000) or ""
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
    ("", "GET", retrieve),
    ("", "PATCH", update),
    ("", "DELETE", delete),
    ("/files", "GET", files),
    ("/download", "GET", download),
    ("/track-download", "POST", track_download),
    ("/clone", "POST", clone),
    ("/training", "GET", training),
    ("/training", "DELETE", cancel_training),
    ("/predict", "POST", predict),
]

routes = [
    Route("/api/models", list_seed, methods=["GET"]),
    Route("/api/models", create, methods=["POST"]),
    Route("/api/models/completed", completed, methods=["GET"]),
    *(Route(f"{ID}{tail}", fn, methods=[m]) for tail, m, fn in _OPERATIONS),
    Route("/api/models/{owner}/{project}", list_models, methods=["GET"]),
    *(Route(f"{SLUG}{tail}", fn, methods=[m]) for tail, m, fn in _OPERATIONS),
]
