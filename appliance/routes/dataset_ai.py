"""Dataset analysis and auto-annotation: embeddings and their 2-D clustering
layout, one-image predictions (contract and seed), and the batch annotate job.

`POST .../annotate` is an appliance extension: neither the contract nor the seed
names a route that annotates many images at once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from .. import embeddings
from ..errors import Conflict, Forbidden, Invalid, NotFound
from ..ids import IMAGE_ID_RE, is_id
from ..jobs import annotating
from ..store._jobs import ACTIVE
from ..web import (
    can_edit,
    can_see,
    field,
    json_body,
    q_bool,
    q_int,
    reply,
    require_user,
    services,
)
from .datasets import ID, SLUG, dataset_of
from .models import find_model, weights_path

_URI = re.compile(
    r"^ul://([a-z0-9][a-z0-9-]*)/([a-z0-9][a-z0-9-]*)/([a-z0-9][a-z0-9-]*)$"
)
#: The Platform's own models, usable here when the operator put their weights in
#: the data home's weights/ folder (nothing is downloaded).
OFFICIAL_OWNER = "ultralytics"
MAX_LAYOUT_PAGE = 50_000


# -- models ------------------------------------------------------------------


@dataclass(frozen=True)
class _Chosen:
    """A model to run: its weights, the URI it is reported as, and its imgsz."""

    weights: Path
    uri: str
    imgsz: int
    model_id: str | None


def _imgsz(model: dict) -> int:
    value = (model.get("train_args") or {}).get("imgsz")
    return value if isinstance(value, int) and 32 <= value <= 1280 else 640


def _from_row(request: Request, model: dict) -> _Chosen:
    weights = weights_path(request, model)
    if weights is None:
        raise Invalid("this model has no trained weights yet")
    uri = f"ul://{model['owner']}/{model['project']}/{model['slug']}"
    return _Chosen(weights, uri, _imgsz(model), model["id"])


def choose_model(request: Request, dataset: dict, ref: str | None) -> _Chosen:
    """The model a request names (`ul://owner/project/model` or a model id), or the
    latest model trained on this dataset that has weights and the caller may see."""
    if ref is None:
        db = services(request).db
        for row in db.trained_models_of_dataset(dataset["id"]):
            model = db.model(row["id"])
            if model and can_see(request, model["owner_id"], model["visibility"]):
                if weights_path(request, model):
                    return _from_row(request, model)
        raise Invalid(
            "modelId is required: no model with weights was trained on this dataset"
        )
    match = _URI.match(ref)
    if match:
        owner, project, slug = match.groups()
        if owner == OFFICIAL_OWNER:
            local = services(request).settings.home / "weights" / f"{slug}.pt"
            if local.is_file():
                return _Chosen(local, ref, 640, None)
            raise NotFound(
                f"Model {ref} is not on this offline appliance; put {slug}.pt in the"
                " data home's weights folder to use it"
            )
        return _from_row(request, find_model(request, owner, project, slug))
    if is_id(ref):
        return _from_row(request, find_model(request, ref))
    raise Invalid("modelId must be ul://owner/project/model or a model id")


def _thresholds(body: dict, iou_default: float) -> tuple[float, float]:
    conf = field(body, "confidence", (int, float), default=0.25)
    iou = field(body, "iou", (int, float), default=iou_default)
    if not 0.01 <= conf <= 1:
        raise Invalid("confidence must be between 0.01 and 1")
    if not 0 <= iou <= 0.95:
        raise Invalid("iou must be between 0 and 0.95")
    return float(conf), float(iou)


async def _predict(
    request: Request,
    dataset: dict,
    image: dict,
    chosen: _Chosen,
    body: dict,
    iou: float,
):
    """Run the model on a stored image; `iou` is the default IoU (the contract's
    0.7, the seed's 0.45)."""
    svc = services(request)
    conf, iou = _thresholds(body, iou)
    path = svc.blobs.image_path(image["hash"], image["ext"])
    picture = await run_in_threadpool(annotating.open_image, path)
    predicted = await run_in_threadpool(
        svc.predictor.annotate,
        chosen.weights,
        picture,
        conf=conf,
        iou=iou,
        imgsz=chosen.imgsz,
        device=svc.settings.device,
    )
    mapping = annotating.plan(dataset, predicted["task"], predicted["names"])
    return mapping, annotating.convert(mapping, predicted["labels"]), predicted


async def image_predict(request: Request):
    """POST /api/images/{imageId}/predict: predictions for one image in its
    dataset's classes; nothing is saved (the editor saves what the user keeps)."""
    require_user(request)
    image_id = request.path_params["image_id"]
    if not IMAGE_ID_RE.match(image_id.lower()):
        raise Invalid("imageId must be 24 hexadecimal digits")
    db = services(request).db
    image = db.image(image_id.lower())
    dataset = db.dataset(image["dataset_id"]) if image else None
    if dataset is None or not can_see(
        request, dataset["owner_id"], dataset["visibility"]
    ):
        raise NotFound("Image not found")
    if not can_edit(request, dataset["owner_id"]):
        raise Forbidden("Update permission required")
    body = await json_body(request)
    chosen = choose_model(request, dataset, field(body, "modelId", str, required=True))
    _, labels, predicted = await _predict(request, dataset, image, chosen, body, 0.7)
    return reply(
        {
            "success": True,
            "predictions": labels,
            "modelUsed": chosen.uri,
            "inferenceTime": predicted["seconds"],
        }
    )


async def dataset_predict(request: Request):
    """POST /api/datasets/{datasetId}/predict (seed): auto-annotate one image by
    hash. An unlabeled image keeps the predictions as its labels (`saved`);
    `overwrite: true` replaces labels it already has."""
    dataset = dataset_of(request, edit=True)
    body = await json_body(request)
    digest = field(body, "imageHash", str, required=True)
    image = services(request).db.image_by_hash(dataset["id"], digest)
    if image is None:
        raise NotFound("Image not found")
    chosen = choose_model(request, dataset, field(body, "modelId", str))
    overwrite = field(body, "overwrite", bool, default=False)
    mapping, labels, predicted = await _predict(
        request, dataset, image, chosen, body, 0.45
    )
    unlabeled = image["labels"] is None or image["label_count"] == 0
    saved = bool(labels) and (unlabeled or overwrite)
    if saved:
        annotating.save(services(request).db, dataset, mapping, image["id"], labels)
    return reply(
        {
            "success": True,
            "predictions": labels,
            "modelUsed": chosen.uri,
            "inferenceTime": predicted["seconds"],
            "imageId": image["id"],
            "saved": saved,
        }
    )


# -- the batch annotate job ------------------------------------------------------


def _active(db, dataset_id: str, kind: str) -> dict | None:
    job = db.latest_job(dataset_id, kind)
    return job if job and job["status"] in ACTIVE else None


async def annotate(request: Request):
    """POST .../annotate (extension): queue a model run over the dataset's
    unlabeled images (or the `imageIds` given) that writes their labels."""
    dataset = dataset_of(request, edit=True)
    user = require_user(request)
    body = await json_body(request)
    svc = services(request)
    chosen = choose_model(request, dataset, field(body, "modelId", str))
    conf, iou = _thresholds(body, 0.7)
    image_ids = field(body, "imageIds", list)
    if image_ids is not None and not all(
        isinstance(i, str) and IMAGE_ID_RE.match(i) for i in image_ids
    ):
        raise Invalid("imageIds must be a list of 24-hex image ids")
    only_unlabeled = field(body, "onlyUnlabeled", bool, default=image_ids is None)
    if dataset["status"] == "processing":
        raise Conflict(
            "the dataset is processing an ingest; annotate it when it is ready"
        )
    if _active(svc.db, dataset["id"], "annotate"):
        raise Conflict("an annotate job is already running for this dataset")
    task, names = await run_in_threadpool(svc.predictor.task_and_names, chosen.weights)
    annotating.plan(dataset, task, names)  # refuse a mismatch now, not in the job
    job = svc.queue.submit(
        "annotate",
        dataset["id"],
        user["id"],
        {
            "weights": str(chosen.weights),
            "modelId": chosen.uri,
            "confidence": conf,
            "iou": iou,
            "imgsz": chosen.imgsz,
            "onlyUnlabeled": only_unlabeled,
            "imageIds": image_ids,
        },
    )
    return reply({"jobId": job["id"], "status": "queued"}, 202)


async def annotate_cancel(request: Request):
    """DELETE .../annotate (extension): cancel the dataset's running annotate job;
    labels already written stay."""
    dataset = dataset_of(request, edit=True)
    svc = services(request)
    job = _active(svc.db, dataset["id"], "annotate")
    if job is not None:
        svc.queue.cancel(job["id"])
    return reply({"cancelled": job["id"] if job else None})


# -- embeddings ----------------------------------------------------------------


def _active_json(job: dict | None) -> dict | None:
    if job is None:
        return None
    progress = (job.get("result") or {}).get("progress")
    return {
        "id": job["id"],
        "status": "queued" if job["status"] == "queued" else "running",
        "progress": progress,
        "createdAt": job["created_at"],
    }


async def embeddings_status(request: Request):
    dataset = dataset_of(request)
    db = services(request).db
    analysis = db.analysis(dataset["id"])
    return reply(
        {
            "analyzedAt": analysis["analyzed_at"] if analysis else None,
            "embeddingsCount": analysis["count"] if analysis else 0,
            "latestImageAt": db.latest_image_at(dataset["id"]),
            "activeJob": _active_json(_active(db, dataset["id"], "embeddings")),
        }
    )


async def embeddings_start(request: Request):
    """Start an analysis. Features come from `modelId` when given (or from the
    latest model trained on this dataset), else from the built-in descriptor;
    `{"feature": "builtin"}` insists on the descriptor."""
    dataset = dataset_of(request, edit=True)
    user = require_user(request)
    body = await json_body(request)
    svc = services(request)
    feature = field(body, "feature", str, default="auto")
    if feature not in ("auto", "builtin", "model"):
        raise Invalid("feature must be auto, builtin or model")
    chosen = None
    if feature == "model" or body.get("modelId") is not None:
        chosen = choose_model(request, dataset, field(body, "modelId", str))
    elif feature == "auto":
        try:
            chosen = choose_model(request, dataset, None)
        except Invalid:
            chosen = None
    if dataset["status"] == "processing":
        raise Conflict(
            "the dataset is processing an ingest; analyze it when it is ready"
        )
    if not svc.db.dataset_stats(dataset["id"]).get("images"):
        raise Conflict("the dataset has no images to analyze")
    if _active(svc.db, dataset["id"], "embeddings"):
        raise Conflict("an analysis is already running for this dataset")
    args = {"feature": embeddings.FEATURE}
    if chosen is not None:
        args = {
            "feature": f"model:{chosen.uri}",
            "weights": str(chosen.weights),
            "modelId": chosen.model_id,
            "imgsz": min(chosen.imgsz, 320),
        }
    job = svc.queue.submit("embeddings", dataset["id"], user["id"], args)
    return reply({"jobId": job["id"]}, 202)


async def embeddings_cancel(request: Request):
    """Cancel the running analysis; `?clear=true` (an extension) also forgets the
    stored one."""
    dataset = dataset_of(request, edit=True)
    svc = services(request)
    job = _active(svc.db, dataset["id"], "embeddings")
    if job is not None:
        svc.queue.cancel(job["id"])
    if q_bool(request, "clear", False):
        analysis = svc.db.analysis(dataset["id"])
        if analysis:
            svc.db.delete_analysis(dataset["id"])
            svc.blobs.path("embeddings", dataset["id"], analysis["file"]).unlink(
                missing_ok=True
            )
    return reply({"cancelled": job["id"] if job else None})


def _load(request: Request, dataset: dict, analysis: dict) -> dict[str, np.ndarray]:
    path = services(request).blobs.path("embeddings", dataset["id"], analysis["file"])
    if not path.is_file():
        raise NotFound("Analysis not found; analyze the dataset again")
    return embeddings.load(path)


async def clustering(request: Request):
    """The analysis' 2-D layout, one entry per image still in the dataset, paged;
    `?clusters=true` (an extension) adds each image's k-means cluster."""
    dataset = dataset_of(request)
    offset = q_int(request, "offset", 0, 0, 10**9)
    limit = q_int(request, "limit", MAX_LAYOUT_PAGE, 1, MAX_LAYOUT_PAGE)
    with_clusters = q_bool(request, "clusters", False)
    db = services(request).db
    analysis = db.analysis(dataset["id"])
    if analysis is None:
        raise NotFound("Analysis not found; start one with POST .../embeddings")
    stored = await run_in_threadpool(_load, request, dataset, analysis)
    present = {r["id"] for r in db.image_refs(dataset["id"])}
    keep = [i for i, image_id in enumerate(stored["ids"]) if str(image_id) in present]
    page = keep[offset : offset + limit]
    rows = db.images_by_id(dataset["id"], [str(stored["ids"][i]) for i in page])
    images = []
    for i in page:
        row = rows.get(str(stored["ids"][i]))
        if row is None:
            continue  # deleted between the two reads
        entry = _layout_entry(row, stored, i)
        if with_clusters:
            entry["cluster"] = int(stored["clusters"][i])
        images.append(entry)
    end = offset + len(page)
    return reply(
        {
            "images": images,
            "total": len(keep),
            "offset": offset,
            "limit": limit,
            "hasMore": end < len(keep),
            "nextOffset": end if end < len(keep) else None,
            "updatedAt": analysis["analyzed_at"],
        }
    )


def _layout_entry(row: dict, stored: dict, i: int) -> dict:
    labels = row["labels"] or []
    return {
        "id": row["id"],
        "umapX": round(float(stored["coords"][i][0]), 5),
        "umapY": round(float(stored["coords"][i][1]), 5),
        "split": row["split"] if row["split"] in ("train", "val", "test") else None,
        "classIds": sorted({int(label["classId"]) for label in labels}),
        "width": row["width"],
        "height": row["height"],
        "bytes": row["bytes"],
        "labelCount": row["label_count"],
        "labeled": row["label_count"] > 0,
        "missing": bool(stored["failed"][i]),
    }


routes = [
    Route(f"{ID}/embeddings", embeddings_status, methods=["GET"]),
    Route(f"{ID}/embeddings", embeddings_start, methods=["POST"]),
    Route(f"{ID}/embeddings", embeddings_cancel, methods=["DELETE"]),
    Route(f"{ID}/images/clustering", clustering, methods=["GET"]),
    Route(f"{ID}/predict", dataset_predict, methods=["POST"]),
    Route(f"{ID}/annotate", annotate, methods=["POST"]),
    Route(f"{ID}/annotate", annotate_cancel, methods=["DELETE"]),
    Route(f"{SLUG}/embeddings", embeddings_status, methods=["GET"]),
    Route(f"{SLUG}/embeddings", embeddings_start, methods=["POST"]),
    Route(f"{SLUG}/embeddings", embeddings_cancel, methods=["DELETE"]),
    Route(f"{SLUG}/images/clustering", clustering, methods=["GET"]),
    Route(f"{SLUG}/annotate", annotate, methods=["POST"]),
    Route(f"{SLUG}/annotate", annotate_cancel, methods=["DELETE"]),
    Route("/api/images/{image_id}/predict", image_predict, methods=["POST"]),
]
