"""The trash: deleted datasets stay restorable for TRASH_DAYS days, then go
for good. Projects and models are deleted outright by this appliance, so the
trash only ever holds datasets; the other types list empty."""

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
    if not expired:
        return
    hashes = _hashes_of(request, [row["id"] for row in expired])
    gone = db.purge_expired_trash(stamp)
    _free(request, hashes)
    logger.info("%d dataset(s) left the trash after %d days", gone, TRASH_DAYS)


def _days_left(trashed_at: str) -> int:
    age = datetime.now(UTC) - parse_time(trashed_at)
    return max(TRASH_DAYS - math.floor(age.total_seconds() / 86400), 0)


async def list_trash(request: Request):
    owner = _workspace(request)
    kind = q_choice(request, "type", ("all", *TYPES), "all")
    page = q_int(request, "page", 1, 1, 10**6)
    limit = q_int(request, "limit", 50, 1, 200)
    _purge_expired(request)
    rows, count, size = services(request).db.trash_page(
        owner["id"], limit, (page - 1) * limit
    )
    if kind not in ("all", "dataset"):
        rows = []
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
    ]
    total = count if kind in ("all", "dataset") else 0
    return reply(
        {
            "items": items,
            "total": total,
            "page": page,
            "limit": limit,
            "totalPages": math.ceil(total / limit),
            "summary": {
                "totalItems": count,
                "totalSizeBytes": size,
                "byType": {
                    "projects": {"count": 0},
                    "datasets": {"count": count, "sizeBytes": size},
                    "models": {"count": 0, "sizeBytes": 0},
                    "exports": {"count": 0, "sizeBytes": 0},
                },
            },
            "region": REGION,
        }
    )


def _trashed(request: Request, body: dict) -> dict:
    """The trashed dataset a body names, for a caller who edits its workspace."""
    require_user(request)
    unknown = sorted(set(body) - {"id", "type"})
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(unknown)}")
    item_id = field(body, "id", str, required=True)
    kind = field(body, "type", str, required=True)
    if kind not in TYPES:
        raise Invalid(f"type must be one of: {', '.join(TYPES)}")
    _purge_expired(request)
    dataset = (
        services(request).db.trashed_dataset(item_id) if kind == "dataset" else None
    )
    if dataset is None or role_in(request, dataset["owner_id"]) is None:
        raise NotFound(f"No {kind} {item_id} in the trash")
    require_role(request, dataset["owner_id"], "editor", "Changing the trash")
    return dataset


async def restore(request: Request):
    dataset = _trashed(request, await write_body(request))
    services(request).db.restore_dataset(dataset["id"])
    logger.info("dataset %s restored from the trash", dataset["id"])
    return reply({"success": True})


async def delete_forever(request: Request):
    """Delete one trashed item, or (`{"all": true}`) the workspace's whole
    trash, for good, with the image files no other dataset or version uses."""
    body = await write_body(request)
    db = services(request).db
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
    else:
        dataset = _trashed(request, body)
        hashes = _hashes_of(request, [dataset["id"]])
        deleted = db.purge_datasets(owner_id=dataset["owner_id"], ids=[dataset["id"]])
    await run_in_threadpool(_free, request, hashes)
    logger.info("%d dataset(s) deleted for good from the trash", deleted)
    return reply({"success": True, "deletedCount": deleted})


routes = [
    Route("/api/trash", list_trash, methods=["GET"]),
    Route("/api/trash", restore, methods=["POST"]),
    Route("/api/trash", delete_forever, methods=["DELETE"]),
]
