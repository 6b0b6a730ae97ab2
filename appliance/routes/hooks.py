"""Registering webhooks (an appliance extension: the seed lists the events but no
routes to register them). Only a workspace's admins and owner may see or change
its webhooks; the signing secret is shown once, when it is made or rotated.

    GET    /api/webhooks?owner=TEAM            the workspace's webhooks
    POST   /api/webhooks                        {url, events?, description?, owner?}
    GET    /api/webhooks/{id}                   one
    PATCH  /api/webhooks/{id}                   {url?, events?, description?, active?, rotateSecret?}
    DELETE /api/webhooks/{id}                   gone, with its log and what it was owed
    GET    /api/webhooks/{id}/deliveries        the attempt log, newest first
    POST   /api/webhooks/{id}/test              owe it a `ping` event now
"""

from __future__ import annotations

import secrets

from starlette.requests import Request
from starlette.routing import Route

from .. import hooks
from ..errors import Invalid, NotFound
from ..web import (
    field,
    json_body,
    q_int,
    reply,
    require_role,
    require_user,
    role_in,
    services,
)

#: Webhooks one workspace may register.
MAX_PER_WORKSPACE = 20


def _secret() -> str:
    return "whsec_" + secrets.token_hex(24)


def webhook_json(hook: dict, *, secret: str | None = None) -> dict:
    body = {
        "id": hook["id"],
        "owner": hook["owner"],
        "url": hook["url"],
        "events": hook["events"],
        "description": hook["description"],
        "active": hook["active"],
        "secretHint": "whsec_..." + hook["secret"][-4:],
        "createdAt": hook["created_at"],
        "updatedAt": hook["updated_at"],
    }
    if secret is not None:
        body["secret"] = secret
    return body


def _delivery_json(row: dict) -> dict:
    return {
        "id": row["id"],
        "eventId": row["event_id"],
        "event": row["event"],
        "attempt": row["attempt"],
        "statusCode": row["status_code"],
        "durationMs": row["duration_ms"],
        "outcome": row["outcome"],
        "error": row["failure"],
        "createdAt": row["created_at"],
    }


def _workspace(request: Request, name: str | None) -> dict:
    """The workspace named by `owner` (default: the caller's own), for its admins."""
    user = require_user(request)
    if name in (None, "", user["username"]):
        return user
    if not isinstance(name, str):
        raise Invalid("owner must be a string")
    target = services(request).db.user_by_name(name)
    if target is None or role_in(request, target["id"]) is None:
        raise NotFound(f"Owner {name} not found")
    require_role(request, target["id"], "admin", "Managing webhooks")
    return target


def _hook(request: Request) -> dict:
    require_user(request)
    hook = services(request).db.webhook(request.path_params["webhook_id"])
    if hook is None or role_in(request, hook["owner_id"]) is None:
        raise NotFound("Webhook not found")
    require_role(request, hook["owner_id"], "admin", "Managing webhooks")
    return hook


def _events(value: object) -> list[str]:
    if not isinstance(value, list) or not value:
        raise Invalid(f"events must be a non-empty list of: {', '.join(hooks.EVENTS)}")
    unknown = [e for e in value if e not in hooks.EVENTS]
    if unknown:
        raise Invalid(
            f"unknown event {unknown[0]!r}; events are: {', '.join(hooks.EVENTS)}"
        )
    return [e for e in hooks.EVENTS if e in value]


def _description(body: dict) -> str:
    text = field(body, "description", str, default="")
    if len(text) > 500:
        raise Invalid("description must be at most 500 characters")
    return text


async def list_hooks(request: Request):
    workspace = _workspace(request, request.query_params.get("owner"))
    rows = services(request).db.webhooks_of(workspace["id"])
    return reply({"webhooks": [webhook_json(row) for row in rows]})


async def create_hook(request: Request):
    body = await json_body(request)
    workspace = _workspace(request, field(body, "owner", str))
    svc = services(request)
    url = hooks.check_url(
        field(body, "url", str, required=True), svc.settings.webhook_hosts
    )
    events = _events(body.get("events", list(hooks.EVENTS)))
    description = _description(body)
    if len(svc.db.webhooks_of(workspace["id"])) >= MAX_PER_WORKSPACE:
        raise Invalid(f"a workspace may have at most {MAX_PER_WORKSPACE} webhooks")
    secret = _secret()
    hook = svc.db.create_webhook(
        workspace["id"],
        url,
        events,
        secret,
        description=description,
        created_by=require_user(request)["id"],
    )
    return reply({"webhook": webhook_json(hook, secret=secret)}, 201)


async def get_hook(request: Request):
    return reply({"webhook": webhook_json(_hook(request))})


async def update_hook(request: Request):
    hook = _hook(request)
    body = await json_body(request)
    svc = services(request)
    changes: dict = {}
    if "url" in body:
        changes["url"] = hooks.check_url(
            field(body, "url", str, required=True), svc.settings.webhook_hosts
        )
    if "events" in body:
        changes["events"] = _events(body["events"])
    if "description" in body:
        changes["description"] = _description(body)
    if "active" in body:
        changes["active"] = field(body, "active", bool, required=True)
    secret = None
    if field(body, "rotateSecret", bool, default=False):
        secret = changes["secret"] = _secret()
    if changes:
        svc.db.update_webhook(hook["id"], **changes)
    return reply({"webhook": webhook_json(svc.db.webhook(hook["id"]), secret=secret)})


async def delete_hook(request: Request):
    hook = _hook(request)
    services(request).db.delete_webhook(hook["id"])
    return reply({"id": hook["id"], "deleted": True})


async def deliveries(request: Request):
    hook = _hook(request)
    db = services(request).db
    limit = q_int(request, "limit", 50, 1, 500)
    offset = q_int(request, "offset", 0, 0, 1_000_000)
    rows = db.delivery_log(hook["id"], limit, offset)
    return reply(
        {
            "deliveries": [_delivery_json(row) for row in rows],
            "pending": db.pending_deliveries(hook["id"]),
            "limit": limit,
            "offset": offset,
        }
    )


async def test_hook(request: Request):
    hook = _hook(request)
    event_id = hooks.ping(services(request).db, hook)
    return reply({"queued": True, "eventId": event_id}, 202)


routes = [
    Route("/api/webhooks", list_hooks, methods=["GET"]),
    Route("/api/webhooks", create_hook, methods=["POST"]),
    Route("/api/webhooks/{webhook_id:id}", get_hook, methods=["GET"]),
    Route("/api/webhooks/{webhook_id:id}", update_hook, methods=["PATCH"]),
    Route("/api/webhooks/{webhook_id:id}", delete_hook, methods=["DELETE"]),
    Route("/api/webhooks/{webhook_id:id}/deliveries", deliveries, methods=["GET"]),
    Route("/api/webhooks/{webhook_id:id}/test", test_hook, methods=["POST"]),
]
