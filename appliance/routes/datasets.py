"""Datasets: create, list, retrieve, ingest, images. Both route families: the
contract's owner/slug paths and the seed's dataset-id paths."""

from __future__ import annotations

import sqlite3

from starlette.requests import Request
from starlette.routing import Route

from ..archive import refuse_encrypted
from ..errors import Conflict, Forbidden, Invalid, NotFound
from ..ids import is_id
from ..ingest.classes import check_class_mapping
from ..ingest.metadata import check_image_metadata
from ..serialize import dataset_json, image_json
from ..store._datasets import IMAGE_SORTS
from ..vision import TASKS
from ..web import (
    can_edit,
    can_see,
    field,
    json_body,
    owner_for_write,
    q_bool,
    q_choice,
    q_int,
    reply,
    require_user,
    resource_fields,
    services,
    visible_owner,
)
from .upload import finish_upload, upload_path

VISIBILITIES = ("public", "private")
SPLITS = ("train", "val", "test")
CONFLICT_POLICIES = ("skip", "keep_both", "replace")


def _dataset_out(request: Request, row: dict, *, detail: bool = False) -> dict:
    db = services(request).db
    stats = db.dataset_stats(row["id"])
    versions = db.dataset_versions(row["id"]) if detail else None
    return dataset_json(row, stats, detail=detail, versions=versions)


def find_dataset(request: Request, owner: str, slug: str | None = None) -> dict:
    """A dataset by id (seed routes) or by owner and slug (contract routes),
    hidden with 404 from anyone who may not see it."""
    db = services(request).db
    if slug is None:
        row = db.dataset(owner) if is_id(owner) else None
    else:
        row = db.dataset_by_slug(visible_owner(request, owner)["id"], slug)
    if row is None or not can_see(request, row["owner_id"], row["visibility"]):
        raise NotFound("Dataset not found")
    return row


def editable_dataset(request: Request, owner: str, slug: str | None = None) -> dict:
    require_user(request)
    row = find_dataset(request, owner, slug)
    if not can_edit(request, row["owner_id"]):
        raise Forbidden("You cannot change this dataset")
    return row


def dataset_of(request: Request, *, edit: bool = False) -> dict:
    """The dataset a route names, in either family: `{dataset_id:id}` (seed) or
    `{owner}/{dataset}` (contract). With edit, the caller must be an editor."""
    params = request.path_params
    if "dataset_id" in params:
        key, slug = params["dataset_id"], None
    else:
        key, slug = params["owner"], params["dataset"]
    if edit:
        return editable_dataset(request, key, slug)
    return find_dataset(request, key, slug)


async def create(request: Request):
    require_user(request)
    body = await json_body(request)
    owner = owner_for_write(request, field(body, "owner", str))
    fields = resource_fields(body, "dataset")
    task = field(body, "task", str, default="detect")
    if task not in TASKS:
        raise Invalid(f"task must be one of: {', '.join(TASKS)}")
    class_names = field(body, "classNames", list, default=[])
    if not all(isinstance(n, str) for n in class_names):
        raise Invalid("classNames must be a list of strings")
    slug = fields["slug"]
    try:
        row = services(request).db.create_dataset(
            owner_id=owner["id"], task=task, class_names=class_names, **fields
        )
    except sqlite3.IntegrityError:
        raise Conflict(f"Dataset {owner['username']}/{slug} already exists") from None
    return reply(
        {
            "id": row["id"],
            "owner": row["owner"],
            "dataset": row["slug"],
            "region": "us",
        },
        201,
    )


async def list_datasets(request: Request):
    """GET /api/datasets/{owner}: the owner's datasets the caller may see."""
    owner = visible_owner(request, request.path_params["owner"])
    limit = q_int(request, "limit", 1000, 1, 1000)
    db = services(request).db
    rows = [
        r
        for r in db.datasets_of(owner["id"], 1_000_000)
        if can_see(request, r["owner_id"], r["visibility"])
    ]
    return reply(
        {
            "datasets": [_dataset_out(request, r) for r in rows[:limit]],
            "total": len(rows),
            "region": "us",
        }
    )


async def retrieve(request: Request):
    return reply({"dataset": _dataset_out(request, dataset_of(request), detail=True)})


async def _start_ingest(request: Request, dataset: dict, body: dict):
    user = require_user(request)
    svc = services(request)
    if "sourceUrl" in body or "reference" in body:
        raise Invalid(
            "this appliance is offline: ingest from an uploaded archive (sessionId)"
        )
    session_id = field(body, "sessionId", str, required=True)
    pending = svc.db.upload(session_id)
    if (
        pending
        and pending["user_id"] == user["id"]
        and pending["asset_type"] != "datasets"
    ):
        raise Invalid("this upload session is not a dataset upload")
    session = finish_upload(request, session_id, user)
    policy = field(body, "conflictPolicy", str, default="skip")
    if policy not in CONFLICT_POLICIES:
        raise Invalid(f"conflictPolicy must be one of: {', '.join(CONFLICT_POLICIES)}")
    split = field(body, "targetSplit", str)
    if split is not None and split not in SPLITS:
        raise Invalid("targetSplit must be train, val or test")
    mapping = check_class_mapping(field(body, "classMapping", dict))
    metadata = check_image_metadata(field(body, "imageMetadata", dict))
    dry_run = field(body, "dryRun", bool, default=False)
    extend = field(body, "extendClasses", bool, default=False)
    as_polygons = field(body, "boxesAsPolygons", bool, default=False)
    if dataset["status"] == "processing":
        raise Conflict("an ingest is already running for this dataset")
    path = upload_path(request, session_id)
    if not path.exists():
        raise Invalid("nothing has been uploaded for this session")
    refuse_encrypted(path)
    args = {
        "sessionId": session_id,
        "filename": session["filename"],
        "conflictPolicy": policy,
        "targetSplit": split,
        "classMapping": mapping,
        "imageMetadata": metadata,
        "dryRun": dry_run,
        "extendClasses": extend,
        "boxesAsPolygons": as_polygons,
    }
    if dry_run:
        job = svc.queue.submit("ingest", dataset["id"], user["id"], args)
        return reply({"jobId": job["id"], "status": "queued"}, 201)
    svc.db.update_dataset(dataset["id"], status="processing", processing_error=None)
    job = svc.queue.submit("ingest", dataset["id"], user["id"], args)
    svc.db.update_dataset(dataset["id"], ingest_job_id=job["id"])
    return reply({"jobId": job["id"], "status": "queued"}, 201)


async def ingest(request: Request):
    dataset = dataset_of(request, edit=True)
    return await _start_ingest(request, dataset, await json_body(request))


async def ingest_by_id(request: Request):
    require_user(request)
    body = await json_body(request)
    dataset_id = field(body, "datasetId", str, required=True)
    return await _start_ingest(request, editable_dataset(request, dataset_id), body)


def _search(request: Request) -> str | None:
    value = request.query_params.get("search") or None
    if value is not None and len(value) > 200:
        raise Invalid("search must be at most 200 characters")
    return value


async def images(request: Request):
    """GET /api/datasets/{owner}/{dataset}/images, or /api/datasets/{id}/images."""
    dataset = dataset_of(request)
    limit = q_int(request, "limit", 50, 1, 5000)
    offset = q_int(request, "offset", 0, 0, 10**9)
    rows, total = services(request).db.list_images(
        dataset["id"],
        split=q_choice(request, "split", SPLITS, None),
        has_label=q_bool(request, "hasLabel", None),
        has_error=q_bool(request, "hasError", None),
        search=_search(request),
        sort=q_choice(request, "sort", IMAGE_SORTS, "newest"),
        limit=limit,
        offset=offset,
    )
    signer = services(request).signer
    flags = {
        "thumbnails": q_bool(request, "includeThumbnails", True),
        "image_urls": q_bool(request, "includeImageUrls", False),
        "labels": q_bool(request, "includeLabels", False),
    }
    stats = services(request).db.dataset_stats(dataset["id"])
    out = {
        "images": [
            image_json(r, signer, blobs=services(request).blobs, **flags) for r in rows
        ],
        "total": total,
        "hasMore": offset + len(rows) < total,
        "classes": dataset["class_names"] or [],
        "errorCount": stats.get("errors", 0),
    }
    if rows and out["hasMore"]:
        out["nextCursor"] = rows[-1]["id"]
    return reply(out)


def _image(request: Request, dataset: dict) -> dict:
    image = services(request).db.image_by_hash(
        dataset["id"], request.path_params["hash"]
    )
    if image is None:
        raise NotFound("Image not found")
    return image


def _checked_labels(body: dict, class_count: int) -> list[dict]:
    labels = field(body, "labels", list, required=True)
    clean = []
    for n, label in enumerate(labels):
        if not isinstance(label, dict):
            raise Invalid(f"labels[{n}] must be an object")
        class_id = field(label, "classId", int, required=True)
        if not 0 <= class_id < max(class_count, 1):
            raise Invalid(
                f"labels[{n}].classId must be between 0 and {max(class_count, 1) - 1}"
            )
        bbox = field(label, "bbox", list, required=True)
        if len(bbox) != 4 or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 1
            for v in bbox
        ):
            raise Invalid(
                f"labels[{n}].bbox must be [x_center, y_center, width, height] in 0..1"
            )
        if bbox[2] <= 0 or bbox[3] <= 0:
            raise Invalid(f"labels[{n}].bbox must have a width and a height")
        clean.append({"classId": class_id, "bbox": [round(float(v), 6) for v in bbox]})
    return clean


async def image_labels(request: Request):
    dataset = dataset_of(request)
    image = _image(request, dataset)
    return reply(
        {"labels": image["labels"] or [], "classNames": dataset["class_names"] or []}
    )


async def put_image_labels(request: Request):
    dataset = dataset_of(request, edit=True)
    image = _image(request, dataset)
    labels = _checked_labels(
        await json_body(request), len(dataset["class_names"] or [])
    )
    services(request).db.set_image_labels(image["id"], labels)
    return reply({"success": True, "labels": labels})


async def delete_image(request: Request):
    dataset = dataset_of(request, edit=True)
    services(request).db.delete_image(_image(request, dataset)["id"])
    return reply({"success": True})


ID = "/api/datasets/{dataset_id:id}"
SLUG = "/api/datasets/{owner}/{dataset}"

# The seed's id routes come first: `{dataset_id:id}` never matches a username, so a
# path is read as owner/slug only when its first segment is not an id.
routes = [
    Route("/api/datasets", create, methods=["POST"]),
    Route("/api/datasets/ingest", ingest_by_id, methods=["POST"]),
    Route(ID, retrieve, methods=["GET"]),
    Route(f"{ID}/images", images, methods=["GET"]),
    Route(f"{ID}/images/{{hash}}", delete_image, methods=["DELETE"]),
    Route(f"{ID}/images/{{hash}}/labels", image_labels, methods=["GET"]),
    Route(f"{ID}/images/{{hash}}/labels", put_image_labels, methods=["PUT"]),
    Route("/api/datasets/{owner}", list_datasets, methods=["GET"]),
    Route(SLUG, retrieve, methods=["GET"]),
    Route(f"{SLUG}/ingest", ingest, methods=["POST"]),
    Route(f"{SLUG}/images", images, methods=["GET"]),
]
