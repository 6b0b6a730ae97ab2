"""The trash: deleted datasets, projects and models stay restorable for
TRASH_DAYS days, then go for good. A trashed project holds its models; a
model trashed on its own is listed with its parent project."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from ..errors import Invalid, NotFound
from ..ids import parse_time
from ..serialize import REGION
from ..sweep import sweep_dataset_files, sweep_images
from ..web import (
    field,
    q_choice,
    q_int,
    reply,
    require_role,
    require_user,
    role_in,
    services,
)
from .datasets import write_body
from .projects import stop_training

logger = logging.getLogger(__name__)

TRASH_DAYS = 30
TYPES = ("project", "dataset", "model")


def _workspace(request: Request) -> dict:
    """The workspace named by `?owner=` (one the caller belongs to), else the
    caller's own; a workspace the caller is not in is not found."""
    user = require_user(request)
    name = request.query_params.get("owner")
    if not name or name == user["username"]:
        return user
    owner = services(request).db.user_by_name(name)
    if owner is None or role_in(request, owner["id"]) is None:
        raise NotFound(f"Owner {name} not found")
    return owner


def _hashes_of(request: Request, dataset_ids: list[str]) -> list[str]:
    db = services(request).db
    return [
        row["hash"]
        for dataset_id in dataset_ids
        for row in db.query(
            "SELECT DISTINCT hash FROM images WHERE dataset_id = ?", [dataset_id]
        )
    ]


def _free(request: Request, hashes: list[str]) -> None:
    """After datasets went for good: their image files that nothing else uses,
    and their exports and analyses."""
    svc = services(request)
    sweep_images(svc.db, svc.blobs, hashes)
    sweep_dataset_files(svc.db, svc.blobs)


def _purge_expired(request: Request) -> None:
    cutoff = datetime.now(UTC) - timedelta(days=TRASH_DAYS)
    stamp = cutoff.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    db = services(request).db
    expired = db.query(
        "SELECT id FROM datasets WHERE deleted_at IS NOT NULL AND deleted_at < ?",
        [stamp],
    )
    if expired:
        hashes = _hashes_of(request, [row["id"] for row in expired])
        gone = db.purge_expired_trash(stamp)
        _free(request, hashes)
        logger.info("%d dataset(s) left the trash after %d days", gone, TRASH_DAYS)
    _remove_project_blobs(request, *db.purge_projects(owner_id="", before=stamp))
    _remove_blobs(request, *db.purge_models(owner_id="", before=stamp))


def _remove_project_blobs(
    request: Request, project_ids: list[str], model_ids: list[str], export_ids: list
) -> None:
    for project_id in project_ids:
        services(request).blobs.remove_tree("icons", project_id)
    _remove_blobs(request, model_ids, export_ids)


def _remove_blobs(
    request: Request, model_ids: list[str], export_ids: list[str]
) -> None:
    """The weights and exports of models deleted for good; their jobs stop."""
    svc = services(request)
    stop_training(request, model_ids)
    for model_id in model_ids:
        svc.blobs.remove_tree("models", model_id)
    for export_id in export_ids:
        svc.blobs.remove_tree("exports", export_id)


def _days_left(trashed_at: str) -> int:
    age = datetime.now(UTC) - parse_time(trashed_at)
    return max(TRASH_DAYS - math.floor(age.total_seconds() / 86400), 0)


def _model_items(request: Request, owner: dict) -> list[dict]:
    items = []
    for row in services(request).db.trashed_items(owner["id"]):
        item = {
            "_id": row["id"],
            "type": row["type"],
            "name": row["name"],
            "slug": row["slug"],
            "trashedAt": row["deleted_at"],
            "daysRemaining": _days_left(row["deleted_at"]),
            "sizeBytes": row["size_bytes"],
        }
        if row["type"] == "project":
            item["cascadedCount"] = row["models"]
        else:
            item["parentProject"] = {
                "_id": row["project_id"],
                "name": row["project_name"],
                "slug": row["project_slug"],
            }
        items.append(item)
    return items


async def list_trash(request: Request):
    owner = _workspace(request)
    kind = q_choice(request, "type", ("all", *TYPES), "all")
    page = q_int(request, "page", 1, 1, 10**6)
    limit = q_int(request, "limit", 50, 1, 200)
    _purge_expired(request)
    rows, count, size = services(request).db.trash_page(owner["id"], 10**6, 0)
    items = [
        {
            "_id": row["id"],
            "type": "dataset",
            "name": row["name"],
            "slug": row["slug"],
            "trashedAt": row["deleted_at"],
            "daysRemaining": _days_left(row["deleted_at"]),
            "sizeBytes": row["size_bytes"],
        }
        for row in rows
    ] + _model_items(request, owner)
    items.sort(key=lambda item: (item["trashedAt"], item["_id"]), reverse=True)
    by_type = {t: [item for item in items if item["type"] == t] for t in TYPES}
    chosen = items if kind == "all" else by_type[kind]
    total = len(chosen)
    model_bytes = sum(i["sizeBytes"] for i in by_type["model"])
    project_bytes = sum(i["sizeBytes"] for i in by_type["project"])
    return reply(
        {
            "items": chosen[(page - 1) * limit : page * limit],
            "total": total,
            "page": page,
            "limit": limit,
            "totalPages": math.ceil(total / limit),
            "summary": {
                "totalItems": len(items),
                "totalSizeBytes": size + model_bytes + project_bytes,
                "byType": {
                    "projects": {"count": len(by_type["project"])},
                    "datasets": {"count": count, "sizeBytes": size},
                    "models": {
                        "count": len(by_type["model"]),
                        "sizeBytes": model_bytes,
                    },
                    "exports": {"count": 0, "sizeBytes": 0},
                },
            },
            "region": REGION,
        }
    )


def _trashed(request: Request, body: dict) -> tuple[str, dict]:
    """The trashed item a body names (its type and row), for a caller who
    edits its workspace."""
    require_user(request)
    unknown = sorted(set(body) - {"id", "type"})
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(unknown)}")
    item_id = field(body, "id", str, required=True)
    kind = field(body, "type", str, required=True)
    if kind not in TYPES:
        raise Invalid(f"type must be one of: {', '.join(TYPES)}")
    _purge_expired(request)
    db = services(request).db
    row = {
        "dataset": db.trashed_dataset,
        "project": db.trashed_project,
        "model": db.trashed_model,
    }[kind](item_id)
    if row is not None and kind == "model" and row["project_deleted_at"]:
        row = None  # listed, restored and deleted with its project
    if row is None or role_in(request, row["owner_id"]) is None:
        raise NotFound(f"No {kind} {item_id} in the trash")
    require_role(request, row["owner_id"], "editor", "Changing the trash")
    return kind, row


async def restore(request: Request):
    kind, row = _trashed(request, await write_body(request))
    db = services(request).db
    out: dict = {"success": True}
    if kind == "dataset":
        db.restore_dataset(row["id"])
    elif kind == "project":
        out["restoredModels"] = db.restore_project(row["id"])
    else:
        db.restore_model(row["id"])
    logger.info("%s %s restored from the trash", kind, row["id"])
    return reply(out)


async def delete_forever(request: Request):
    """Delete one trashed item, or (`{"all": true}`) the workspace's whole
    trash, for good, with the image files no other dataset or version uses;
    model weights and exports go with their models."""
    body = await write_body(request)
    db = services(request).db
    cascaded = None
    if "all" in body:
        if body != {"all": True}:
            raise Invalid('send {"all": true} alone to empty the trash')
        owner = _workspace(request)
        require_role(request, owner["id"], "editor", "Emptying the trash")
        trashed = db.query(
            "SELECT id FROM datasets WHERE owner_id = ? AND deleted_at IS NOT NULL",
            [owner["id"]],
        )
        hashes = _hashes_of(request, [row["id"] for row in trashed])
        deleted = db.purge_datasets(owner_id=owner["id"])
        project_ids, model_ids, export_ids = db.purge_projects(owner_id=owner["id"])
        _remove_project_blobs(request, project_ids, model_ids, export_ids)
        cascaded = len(model_ids)
        model_ids, export_ids = db.purge_models(owner_id=owner["id"])
        _remove_blobs(request, model_ids, export_ids)
        deleted += len(project_ids) + len(model_ids)
    else:
        kind, row = _trashed(request, body)
        hashes = _hashes_of(request, [row["id"]]) if kind == "dataset" else []
        if kind == "dataset":
            deleted = db.purge_datasets(owner_id=row["owner_id"], ids=[row["id"]])
        elif kind == "project":
            project_ids, model_ids, export_ids = db.purge_projects(
                owner_id=row["owner_id"], ids=[row["id"]]
            )
            _remove_project_blobs(request, project_ids, model_ids, export_ids)
            deleted, cascaded = len(project_ids), len(model_ids)
        else:
            model_ids, export_ids = db.purge_models(
                owner_id=row["owner_id"], ids=[row["id"]]
            )
            _remove_blobs(request, model_ids, export_ids)
            deleted = len(model_ids)
    await run_in_threadpool(_free, request, hashes)
    logger.info("%d item(s) deleted for good from the trash", deleted)
    out = {"success": True, "deletedCount": deleted}
    if cascaded is not None:
        out["cascadedModels"] = cascaded
    return reply(out)


routes = [
    Route("/api/trash", list_trash, methods=["GET"]),
    Route("/api/trash", restore, methods=["POST"]),
    Route("/api/trash", delete_forever, methods=["DELETE"]),
]
