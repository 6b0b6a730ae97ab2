"""Small helpers shared by the route modules: services, bodies, queries, replies."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from .blobs import BlobStore
from .errors import Forbidden, Invalid, NotFound, Unauthorized
from .ids import SLUG_RE, slugify
from .jobs import JobQueue
from .keys import authenticate
from .settings import Settings
from .signing import Signer
from .store import Database
from .vision import Predictor

#: A key's last-use time is written at most this often (seconds).
_TOUCH_EVERY = 60


@dataclass
class Services:
    settings: Settings
    db: Database
    blobs: BlobStore
    signer: Signer
    queue: JobQueue
    predictor: Predictor


def services(request: Request) -> Services:
    return request.app.state.services


def reply(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise Invalid("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Invalid("request body must be a JSON object")
    return body


def q_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Invalid(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise Invalid(f"{name} must be between {low} and {high}")
    return value


def q_bool(request: Request, name: str, default: bool | None) -> bool | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("true", "1"):
        return True
    if raw.lower() in ("false", "0"):
        return False
    raise Invalid(f"{name} must be true or false")


def q_choice(
    request: Request,
    name: str,
    choices: frozenset[str] | tuple[str, ...],
    default: str | None,
) -> str | None:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw not in choices:
        raise Invalid(f"{name} must be one of: {', '.join(sorted(choices))}")
    return raw


def field(
    body: dict,
    name: str,
    kind: type | tuple[type, ...],
    *,
    required: bool = False,
    default: Any = None,
) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise Invalid(f"{name} is required")
        return default
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise Invalid(f"{name} must be a number")
    if not isinstance(value, kind):
        label = (
            kind.__name__
            if isinstance(kind, type)
            else " or ".join(k.__name__ for k in kind)
        )
        raise Invalid(f"{name} must be a {label}")
    return value


def resource_fields(body: dict, kind: str) -> dict[str, Any]:
    """The fields datasets and projects share, checked: slug (from `kind`, else from
    the name), display name, description, visibility and metadata."""
    name = field(body, "name", str) or field(body, kind, str, required=True)
    slug = field(body, kind, str) or slugify(name)
    if not SLUG_RE.match(slug):
        raise Invalid(f"{kind} must be lower-case letters, digits and dashes (1-128)")
    visibility = field(body, "visibility", str, default="private")
    if visibility not in ("public", "private"):
        raise Invalid("visibility must be public or private")
    return {
        "slug": slug,
        "name": name.strip()[:100] or slug,
        "description": field(body, "description", str, default=""),
        "visibility": visibility,
        "metadata": field(body, "metadata", dict, default={}),
    }


# -- who is calling ----------------------------------------------------------


def current_user(request: Request) -> dict | None:
    if "user" in request.scope:
        return request.scope["user"]
    user = None
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        user = authenticate(services(request).db, token.strip())
        if user is None:
            raise Unauthorized("Invalid API key")
        _touch(request, user)
    request.scope["user"] = user
    return user


def require_user(request: Request) -> dict:
    user = current_user(request)
    if user is None:
        raise Unauthorized(
            "Authentication required: send Authorization: Bearer <API key>"
        )
    return user


def _touch(request: Request, user: dict) -> None:
    last = user.get("key_last_used_at")
    cache = request.app.state.key_touched
    now = time.monotonic()
    if last and now - cache.get(user["key_id"], 0) < _TOUCH_EVERY:
        return
    cache[user["key_id"]] = now
    services(request).db.touch_api_key(user["key_id"])


def owner_for_write(request: Request, owner: str | None) -> dict:
    """The workspace a create acts in: the caller's own unless `owner` names another."""
    user = require_user(request)
    if owner in (None, "", user["username"]):
        return user
    if services(request).db.user_by_name(owner) is None:
        raise NotFound(f"Owner {owner} not found")
    raise Forbidden(f"You cannot act in {owner}'s workspace")


def visible_owner(request: Request, owner: str) -> dict:
    """The owner named in a path, as the caller may see it."""
    row = services(request).db.user_by_name(owner)
    if row is None:
        raise NotFound(f"Owner {owner} not found")
    return row


def can_see(request: Request, owner_id: str, visibility: str) -> bool:
    if visibility == "public":
        return True
    user = current_user(request)
    return user is not None and user["id"] == owner_id


def can_edit(request: Request, owner_id: str) -> bool:
    user = require_user(request)
    return user["id"] == owner_id
