"""Small helpers shared by the route modules: services, bodies, queries, replies."""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import time
from dataclasses import dataclass
from typing import Any

from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import JSONResponse

from .blobs import BlobStore
from .errors import Forbidden, Invalid, NotFound, TooLarge, Unauthorized
from .ids import SLUG_RE, is_id, new_id, slugify
from .jobs import JobQueue
from .keys import Keyring
from .settings import Settings
from .signing import Signer
from .store import Database
from .vision import Predictor

#: A key's last-use time is written at most this often (seconds).
_TOUCH_EVERY = 60


class IdConvertor(Convertor[str]):
    """`{name:id}` in a route path matches a resource id and never a username
    (ids always hold a capital letter), so the seed's id routes and the
    contract's owner/slug routes can share path shapes."""

    regex = "(?=[a-z0-9]*[A-Z])[A-Za-z0-9]{20}"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        if not is_id(value):
            raise ValueError(f"{value!r} is not an id")
        return value


register_url_convertor("id", IdConvertor())


@dataclass
class Services:
    settings: Settings
    db: Database
    blobs: BlobStore
    signer: Signer
    queue: JobQueue
    predictor: Predictor
    keyring: Keyring


def services(request: Request) -> Services:
    return request.app.state.services


def reply(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


#: The largest JSON body any route accepts; files travel by signed upload instead.
MAX_JSON_BYTES = 2 * 1024 * 1024


def _no_constants(name: str) -> None:
    raise Invalid(f"{name} is not a number JSON allows")


#: SQLite stores 64-bit integers; a larger one in a body is a bad request, not a
#: crash where it meets the database.
_INT_LIMIT = 2**63


def _bounded_int(text: str) -> int:
    value = int(text)
    if not -_INT_LIMIT <= value < _INT_LIMIT:
        raise Invalid(f"the number {text[:24]}... is too large")
    return value


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, read with a size cap; NaN, Infinity and absurd
    nesting are refused as bad requests."""
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > MAX_JSON_BYTES:
        raise TooLarge(f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > MAX_JSON_BYTES:
            raise TooLarge(f"JSON bodies are limited to {MAX_JSON_BYTES} bytes")
    if not raw:
        return {}
    try:
        body = json.loads(raw, parse_constant=_no_constants, parse_int=_bounded_int)
    except (ValueError, RecursionError):
        raise Invalid("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Invalid("request body must be a JSON object")
    try:
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise Invalid("request body holds text that is not valid Unicode") from None
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


_KIND_NAMES = {
    int: "an integer",
    float: "a number",
    str: "a string",
    bool: "true or false",
    list: "a list",
    dict: "an object",
}


def field(
    body: dict,
    name: str,
    kind: type | tuple[type, ...],
    *,
    required: bool = False,
    default: Any = None,
) -> Any:
    """One field of a JSON body, type-checked (a bool is not a number, and numbers
    must be finite)."""
    value = body.get(name)
    if value is None:
        if required:
            raise Invalid(f"{name} is required")
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    numeric = any(k in (int, float) for k in kinds)
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        label = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
        raise Invalid(f"{name} must be {label}")
    if numeric and isinstance(value, float) and not math.isfinite(value):
        raise Invalid(f"{name} must be a finite number")
    return value


def choice_field(body: dict, name: str, choices: tuple[str, ...]) -> str | None:
    """An optional string field that must be one of `choices`."""
    value = field(body, name, str)
    if value is not None and value not in choices:
        raise Invalid(f"{name} must be one of: {', '.join(choices)}")
    return value


def short_field(body: dict, name: str, most: int) -> str | None:
    """An optional string field of at most `most` characters."""
    value = field(body, name, str)
    if value is not None and len(value) > most:
        raise Invalid(f"{name} must be at most {most} characters")
    return value


def patch_fields(
    body: dict, allowed: frozenset[str], slug: str, visibilities: tuple[str, ...]
) -> dict[str, Any]:
    """What a PATCH of a dataset or project shares: unknown fields and stars
    refused, a new display name renaming the slug, description and visibility."""
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(unknown)}")
    if "starred" in body:
        raise Invalid("this appliance does not keep stars")
    fields: dict[str, Any] = {}
    if "name" in body:
        fields["name"] = display_name(body["name"])
        fields["slug"] = slugify(fields["name"]) or slug
    if "description" in body:
        fields["description"] = short_field(body, "description", 1000) or ""
    if "visibility" in body:
        fields["visibility"] = choice_field(body, "visibility", visibilities)
    return fields


def display_name(value: Any, label: str = "name") -> str:
    """A display name as the contract allows it: 1-100 characters, not blank, no
    control characters."""
    if value is not None and not isinstance(value, str):
        raise Invalid(f"{label} must be a string")
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{label} is required and must not be blank")
    if len(value) > 100:
        raise Invalid(f"{label} must be at most 100 characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise Invalid(f"{label} must not contain control characters")
    return value.strip()


def resource_fields(body: dict, kind: str) -> dict[str, Any]:
    """The fields datasets and projects share, checked: slug (`kind`, or `slug`, else
    made from the name), display name, description, visibility and metadata."""
    name = display_name(body.get("name"))
    given = field(body, kind, str) or field(body, "slug", str)
    slug = given or slugify(name)
    if not SLUG_RE.match(slug):
        if given:
            raise Invalid(
                f"{kind} must be lower-case letters, digits and dashes (1-128)"
            )
        slug = f"{kind}-{new_id()[:8].lower()}"
    visibility = field(body, "visibility", str, default="private")
    if visibility not in ("public", "private"):
        raise Invalid("visibility must be public or private")
    description = field(body, "description", str, default="")
    if len(description) > 1000:
        raise Invalid("description must be at most 1000 characters")
    return {
        "slug": slug,
        "name": name,
        "description": description,
        "visibility": visibility,
        "metadata": field(body, "metadata", dict, default={}),
    }


# -- who is calling ----------------------------------------------------------
#
# Every route reaches the caller and the caller's rights through these functions:
# a key or a session cookie says who; a workspace role says what they may do.

SESSION_COOKIE = "appliance_session"
ROLES = ("viewer", "editor", "admin", "owner")
_RANK = {role: rank for rank, role in enumerate(ROLES)}
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def current_user(request: Request) -> dict | None:
    """The caller, from `Authorization: Bearer <key>` or a browser session cookie
    (whose unsafe requests must echo the session's CSRF token)."""
    if "user" in request.scope:
        return request.scope["user"]
    svc = services(request)
    user = None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        user = svc.keyring.authenticate(token.strip())
        if user is None:
            raise Unauthorized("Invalid API key")
        _touch(request, user)
    elif cookie := request.cookies.get(SESSION_COOKIE):
        session = svc.db.session(hash_token(cookie))
        if session is not None:
            if request.method in _UNSAFE:
                sent = request.headers.get("x-csrf-token", "")
                if not hmac.compare_digest(sent.encode(), session["csrf"].encode()):
                    raise Forbidden("missing or wrong X-CSRF-Token for this session")
            user = svc.db.user_by_id(session["user_id"])
    request.scope["user"] = user
    return user


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


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


def role_in(request: Request, owner_id: str) -> str | None:
    """The caller's role in a workspace: owner of their own, their membership role in
    a team, None elsewhere (and for anonymous callers)."""
    user = current_user(request)
    if user is None:
        return None
    if user["id"] == owner_id:
        return "owner"
    return services(request).db.membership_role(owner_id, user["id"])


def has_role(request: Request, owner_id: str, needed: str) -> bool:
    role = role_in(request, owner_id)
    return role is not None and _RANK[role] >= _RANK[needed]


def require_role(request: Request, owner_id: str, needed: str, what: str) -> str:
    require_user(request)
    role = role_in(request, owner_id)
    if role is None or _RANK[role] < _RANK[needed]:
        raise Forbidden(f"{what} needs the {needed} role in this workspace")
    return role


def owner_for_write(request: Request, owner: str | None) -> dict:
    """The workspace a create acts in: the caller's own, or a team (given by `owner`)
    in which the caller is at least an editor."""
    user = require_user(request)
    if owner in (None, "", user["username"]):
        return user
    target = services(request).db.user_by_name(owner)
    if target is None or role_in(request, target["id"]) is None:
        raise NotFound(f"Owner {owner} not found")
    require_role(request, target["id"], "editor", "Creating resources")
    return target


def visible_owner(request: Request, owner: str) -> dict:
    """The owner named in a path. A bad key is refused even where no key is needed."""
    current_user(request)
    row = services(request).db.user_by_name(owner)
    if row is None:
        raise NotFound(f"Owner {owner} not found")
    return row


def can_see(request: Request, owner_id: str, visibility: str) -> bool:
    """Public resources are readable by anyone; private ones by workspace members."""
    role = role_in(request, owner_id)  # authenticates first: a bad key is a 401
    return visibility == "public" or role is not None


def require_clone_rights(request: Request, resource: dict, what: str) -> None:
    """A public resource may be cloned by anyone signed in; a private one only
    by editors of its workspace, so a viewer cannot carry a team's private
    data off into a workspace of their own."""
    require_user(request)
    if resource["visibility"] != "public" and not can_edit(
        request, resource["owner_id"]
    ):
        raise Forbidden(f"only editors of its workspace may clone a private {what}")


def can_edit(request: Request, owner_id: str) -> bool:
    require_user(request)
    return has_role(request, owner_id, "editor")
