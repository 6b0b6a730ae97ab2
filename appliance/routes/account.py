"""Account summary and API keys."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from ..errors import Invalid, NotFound
from ..web import display_name, json_body, reply, require_user, services
from .teams import team_json


async def summary(request: Request):
    user = require_user(request)
    db = services(request).db
    return reply(
        {
            "username": user["username"],
            "name": user["name"],
            "accountType": "personal",
            "plan": "enterprise",
            "creditsCents": 0,
            "counts": db.resource_counts(user["id"]),
            "teams": [team_json(t, t["role"]) for t in db.teams_of(user["id"])],
        }
    )


async def api_keys(request: Request):
    """The contract's key list; `?details=true` adds each key's last use (an
    appliance extension, since the contract's list allows no more fields)."""
    user = require_user(request)
    details = request.query_params.get("details") == "true"
    keys = []
    for row in services(request).db.api_keys(user["id"]):
        key = {
            "keyId": row["id"],
            "name": row["name"],
            "keyPrefix": row["prefix"],
            "createdAt": row["created_at"],
        }
        if details:
            key["lastUsedAt"] = row["last_used_at"]
        keys.append(key)
    return reply({"keys": keys})


async def create_key(request: Request):
    user = require_user(request)
    body = await json_body(request)
    name = display_name(body.get("name", "default"))
    made = services(request).keyring.create(user["id"], name)
    return reply(
        {
            "keyId": made["id"],
            "name": made["name"],
            "key": made["key"],
            "keyPrefix": made["prefix"],
            "createdAt": made["created_at"],
        },
        201,
    )


async def delete_key(request: Request):
    user = require_user(request)
    key_id = request.query_params.get("keyId") or request.path_params.get("key_id")
    if not key_id:
        raise Invalid("keyId is required")
    if not services(request).keyring.revoke(user["id"], key_id):
        raise NotFound("API key not found")
    return reply({"success": True})


routes = [
    Route("/api/account/summary", summary, methods=["GET"]),
    Route("/api/api-keys", api_keys, methods=["GET"]),
    Route("/api/api-keys", create_key, methods=["POST"]),
    Route("/api/api-keys", delete_key, methods=["DELETE"]),
    Route("/api/api-keys/{key_id}", delete_key, methods=["DELETE"]),
]
