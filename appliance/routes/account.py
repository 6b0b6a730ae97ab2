"""Account summary and API keys."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from ..web import reply, require_user, services


async def summary(request: Request):
    user = require_user(request)
    return reply(
        {
            "username": user["username"],
            "name": user["name"],
            "accountType": "personal",
            "plan": "enterprise",
            "creditsCents": 0,
            "counts": services(request).db.resource_counts(user["id"]),
            "teams": [],
        }
    )


async def api_keys(request: Request):
    user = require_user(request)
    keys = [
        {
            "id": row["id"],
            "name": row["name"],
            "prefix": row["prefix"],
            "createdAt": row["created_at"],
            "lastUsedAt": row["last_used_at"],
        }
        for row in services(request).db.api_keys(user["id"])
    ]
    return reply({"keys": keys})


routes = [
    Route("/api/account/summary", summary, methods=["GET"]),
    Route("/api/api-keys", api_keys, methods=["GET"]),
]
