"""Models: create, list, completed, retrieve, files; training status and
cancel; predict. Both route families: the contract's owner/project/model
paths and the seed's model-id paths (`GET /api/models?projectId=` lists for
the seed). Updates, the trash, downloads, clones and checkpoint uploads are
in routes/model_ops.py."""

from __future__ import annotations

import io
import logging
import sqlite3
import warnings

from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from ..errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from ..ids import SLUG_RE, is_id, new_id, slugify
from ..serialize import REGION, model_json, model_summary_json, training_json
from ..store._jobs import ACTIVE
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
    short_field,
    visible_owner,
)
from .projects import check_metadata, find_project

logger = logging.getLogger(__name__)

MAX_PREDICT_BYTES = 50 * 1024**2


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


def model_of(request: Request, *, edit: bool = False) -> dict:
    """The model a route names, in either family: `{model_id:id}` (seed) or
    `{owner}/{project}/{model}` (contract); with edit, the caller must be an
    editor of its workspace."""
    if edit:
        return editable_model(request, *_path(request))
    return find_model(request, *_path(request))


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


def slug_conflict(request: Request, project: dict, slug: str) -> Conflict:
    name = f"{project['owner']}/{project['slug']}/{slug}"
    if services(request).db.slug_in_trash("models", "project_id", project["id"], slug):
        return Conflict(
            f"Model {name} is in the trash: restore it or delete it permanently"
        )
    return Conflict(f"Model {name} already exists")


def epoch_rows(body: dict) -> list[dict]:
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
        if (value := short_field(body, name, most)) is not None:
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
    description = short_field(body, "description", 1000) or ""
    epochs = epoch_rows(body)
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
        raise slug_conflict(request, project, slug) from None
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
    device = services(request).queue.device(job["device"])
    compute = device and {
        "gpuType": device.gpu_type,
        "gpuDisplayName": device.display_name,
        "gpuMemoryGb": device.memory_gb,
    }
    return reply({"job": training_json(job, model, db.epochs(model["id"]), compute)})


async def cancel_training(request: Request):
    model = editable_model(request, *_path(request))
    svc = services(request)
    job = svc.db.latest_job(model["id"], "train")
    if job is None or job["status"] not in ACTIVE:
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


ID = "/api/models/{model_id:id}"
SLUG = "/api/models/{owner}/{project}/{model}"

#: Operations on one model, offered in both route families (updates, trash,
#: downloads and clones are in routes/model_ops.py).
_OPERATIONS = [
    ("", "GET", retrieve),
    ("/files", "GET", files),
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
