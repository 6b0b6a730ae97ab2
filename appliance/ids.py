"""Identifiers, slugs and timestamps."""

from __future__ import annotations

import re
import secrets
import time
import unicodedata
from datetime import UTC, datetime

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_SLUG_STRIP = re.compile(r"[^a-z0-9\s-]")
_SLUG_DASHES = re.compile(r"[\s_-]+")
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,126}[a-z0-9])?$")
ID_RE = re.compile(r"^[A-Za-z0-9]{20}$")
USERNAME_RE = re.compile(r"^[a-z0-9](?:-?[a-z0-9]){1,38}$")
#: Words that are route segments; a user by one of these names would shadow them.
RESERVED_NAMES = frozenset(
    {
        "api",
        "admin",
        "ingest",
        "images",
        "bulk",
        "urls",
        "completed",
        "create",
        "me",
        "explore",
        "settings",
        "new",
        "files",
        "uploads",
        "datasets",
        "projects",
        "models",
        "teams",
        "members",
        "invites",
        "jobs",
        "trash",
    }
)


def new_id() -> str:
    """A 20-character resource id. It always holds an upper-case letter or a digit
    run that a username (lower-case slug) cannot, so ids and owners never collide."""
    while True:
        value = "".join(secrets.choice(_ALPHABET) for _ in range(20))
        if any(c.isupper() for c in value):
            return value


def new_image_id() -> str:
    """An image id in the contract's form: 24 hex digits, the first 8 a Unix
    time, so ids sort roughly by creation (image ids never share a path segment
    with usernames)."""
    return f"{int(time.time()):08x}{secrets.token_hex(8)}"


IMAGE_ID_RE = re.compile(r"^[0-9a-f]{24}$")


def is_id(value: str) -> bool:
    return bool(ID_RE.match(value)) and any(c.isupper() for c in value)


def check_username(name: str) -> str | None:
    """Why a username is not allowed, or None when it is. Usernames are lower-case,
    so they can never be taken for a resource id (ids always hold a capital)."""
    if not USERNAME_RE.match(name):
        return "usernames are 2-39 lower-case letters, digits and single dashes"
    if name in RESERVED_NAMES:
        return f"{name!r} is reserved"
    return None


def slugify(text: str) -> str:
    """The Platform's slug rule: lower case, [a-z0-9-], dashes collapsed, ≤128.
    Accents are folded first, so "Café" gives "cafe" rather than "caf"."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = _SLUG_STRIP.sub("", folded.lower().strip())
    slug = _SLUG_DASHES.sub("-", slug).strip("-")
    return slug[:128].strip("-")


def now() -> str:
    """UTC now as ISO 8601 with milliseconds and a Z, as the Platform writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
