"""Models: create, retrieve, list, files, training status and cancel, predict."""

from __future__ import annotations

import io
import sqlite3
import warnings

from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from ..errors import Conflict, Forbidden, Invalid, NotFound, TooLarge
from ..ids import SLUG_RE, is_id, new_id, slugify
from ..serialize import model_json, training_json
from ..vision import TASKS
from ..web import (
    can_edit,
    can_see,
    display_name,
    field,
    json_body,
    owner_for_write,
    q_int,
    reply,
    require_user,
    services,
    visible_owner,
)
from .projects import find_project

MAX_PREDICT_BYTES = 50 * 1024**2


def find_model(
    request: Request, owner: str, project: str | None = None, slug: str | None = None
) -> dict:
    """A model by id (seed routes) or by owner/project/model (contract routes)."""
    db = services(request).db
    if project is None:
        row = db.model(owner) if is_id(owner) else None
    else:
        owner_row = visible_owner(request, owner)
        project_row = db.project_by_slug(owner_row["id"], project)
        row = db.model_by_slug(project_row["id"], slug) if project_row else None
    if row is None or not can_see(request, row["owner_id"], row["visibility"]):
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
    return p["owner"], p.get("project"), p.get("model")


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
        if project is None:
            raise NotFound(f"Project {owner['username']}/{body['project']} not found")
    name = display_name(body["name"]) if body.get("name") is not None else None
    slug = (
        field(body, "model", str)
        or field(body, "slug", str)
        or (slugify(name) if name else None)
    )
    slug = slug or f"model-{new_id()[:8].lower()}"
    if not SLUG_RE.match(slug):
        raise Invalid("model must be lower-case letters, digits and dashes (1-128)")
    task = field(body, "task", str)
    if task is not None and task not in TASKS:
        raise Invalid(f"task must be one of: {', '.join(TASKS)}")
    try:
        row = db.create_model(
            project_id=project["id"],
            slug=slug,
            name=(name or slug)[:100],
            description=field(body, "description", str, default=""),
            task=task,
            train_args=field(body, "trainArgs", dict),
            environment=field(body, "environment", dict),
            metadata=field(body, "metadata", dict, default={}),
        )
    except sqlite3.IntegrityError:
        raise Conflict(
            f"Model {project['owner']}/{project['slug']}/{slug} already exists"
        ) from None
    return reply(
        {
            "id": row["id"],
            "owner": row["owner"],
            "project": row["project"],
            "model": row["slug"],
            "region": "us",
        },
        201,
    )


async def retrieve(request: Request):
    row = find_model(request, *_path(request))
    user = request.scope.get("user")
    epochs = services(request).db.epochs(row["id"])
    return reply(
        {
            "model": model_json(row, epochs),
            "isOwner": bool(user and user["id"] == row["owner_id"]),
        }
    )


async def list_models(request: Request):
    project = find_project(
        request, request.path_params["owner"], request.path_params["project"]
    )
    limit = q_int(request, "limit", 20, 1, 100)
    db = services(request).db
    rows = db.models_of_project(project["id"], limit)
    models = [model_json(r, db.epochs(r["id"])) for r in rows]
    for model in models:
        model.pop("metadata")  # the contract's list items carry no metadata
    return reply({"models": models, "region": "us"})


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


async def by_id(request: Request):
    """GET/POST/DELETE /api/models/{a}/{b}: a model id with a sub-resource, else a
    project's model list (GET only)."""
    first, second = request.path_params["owner"], request.path_params["project"]
    if is_id(first):
        request.path_params.clear()
        request.path_params["owner"] = first
        handler = {
            ("GET", "files"): files,
            ("GET", "training"): training,
            ("DELETE", "training"): cancel_training,
            ("POST", "predict"): predict,
        }.get((request.method, second))
        if handler:
            return await handler(request)
    if request.method == "GET":
        return await list_models(request)
    raise NotFound("Not found")


async def retrieve_by_id(request: Request):
    return await retrieve(request)


routes = [
    Route("/api/models", create, methods=["POST"]),
    Route("/api/models/{owner}", retrieve_by_id, methods=["GET"]),
    Route("/api/models/{owner}/{project}", by_id, methods=["GET", "POST", "DELETE"]),
    Route("/api/models/{owner}/{project}/{model}", retrieve, methods=["GET"]),
    Route("/api/models/{owner}/{project}/{model}/files", files, methods=["GET"]),
    Route("/api/models/{owner}/{project}/{model}/training", training, methods=["GET"]),
    Route(
        "/api/models/{owner}/{project}/{model}/training",
        cancel_training,
        methods=["DELETE"],
    ),
    Route("/api/models/{owner}/{project}/{model}/predict", predict, methods=["POST"]),
]
