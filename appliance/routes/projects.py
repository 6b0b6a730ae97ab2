"""Projects: create, list by owner, retrieve."""

from __future__ import annotations

import sqlite3

from starlette.requests import Request
from starlette.routing import Route

from ..errors import Conflict, NotFound
from ..ids import is_id
from ..serialize import model_summary_json, project_json
from ..web import (
    can_see,
    field,
    json_body,
    owner_for_write,
    q_int,
    reply,
    require_user,
    resource_fields,
    services,
    visible_owner,
)


def find_project(request: Request, owner: str, slug: str | None = None) -> dict:
    db = services(request).db
    if slug is None:
        row = db.project(owner) if is_id(owner) else None
    else:
        row = db.project_by_slug(visible_owner(request, owner)["id"], slug)
    if row is None or not can_see(request, row["owner_id"], row["visibility"]):
        raise NotFound("Project not found")
    return row


def _model_count(request: Request, project_id: str) -> int:
    return services(request).db.scalar(
        "SELECT count(*) FROM models WHERE project_id = ?", [project_id]
    )


async def create(request: Request):
    require_user(request)
    body = await json_body(request)
    owner = owner_for_write(request, field(body, "owner", str))
    fields = resource_fields(body, "project")
    slug = fields["slug"]
    try:
        row = services(request).db.create_project(owner_id=owner["id"], **fields)
    except sqlite3.IntegrityError:
        raise Conflict(f"Project {owner['username']}/{slug} already exists") from None
    return reply(
        {
            "id": row["id"],
            "owner": row["owner"],
            "project": row["slug"],
            "region": "us",
        },
        201,
    )


async def list_or_retrieve(request: Request):
    key = request.path_params["owner"]
    db = services(request).db
    if is_id(key):
        return await _detail(request, find_project(request, key))
    owner = visible_owner(request, key)
    limit = q_int(request, "limit", 20, 1, 500)
    rows = db.query(
        "SELECT p.*, u.username AS owner FROM projects p JOIN users u ON u.id = p.owner_id"
        " WHERE p.owner_id = ? ORDER BY p.created_at DESC",
        [owner["id"]],
    )
    rows = [r for r in rows if can_see(request, r["owner_id"], r["visibility"])]
    return reply(
        {
            "projects": [
                project_json(r, _model_count(request, r["id"])) for r in rows[:limit]
            ],
            "total": len(rows),
            "region": "us",
        }
    )


async def _detail(request: Request, row: dict):
    db = services(request).db
    models = db.models_of_project(row["id"])
    user = request.scope.get("user")
    return reply(
        {
            "project": project_json(row, len(models), detail=True),
            "models": [model_summary_json(m, len(db.epochs(m["id"]))) for m in models],
            "isOwner": bool(user and user["id"] == row["owner_id"]),
        }
    )


async def retrieve(request: Request):
    return await _detail(
        request,
        find_project(
            request, request.path_params["owner"], request.path_params["project"]
        ),
    )


routes = [
    Route("/api/projects", create, methods=["POST"]),
    Route("/api/projects/{owner}", list_or_retrieve, methods=["GET"]),
    Route("/api/projects/{owner}/{project}", retrieve, methods=["GET"]),
]
