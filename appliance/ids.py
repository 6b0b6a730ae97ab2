"""Identifiers, slugs and timestamps."""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_SLUG_STRIP = re.compile(r"[^a-z0-9\s-]")
_SLUG_DASHES = re.compile(r"[\s_-]+")
SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,126}[a-z0-9])?$")
ID_RE = re.compile(r"^[A-Za-z0-9]{20}$")


def new_id() -> str:
    """A 20-character resource id. It always holds an upper-case letter or a digit
    run that a username (lower-case slug) cannot, so ids and owners never collide."""
    while True:
        value = "".join(secrets.choice(_ALPHABET) for _ in range(20))
        if any(c.isupper() for c in value):
            return value


def is_id(value: str) -> bool:
    return bool(ID_RE.match(value)) and any(c.isupper() for c in value)


def slugify(text: str) -> str:
    """The Platform's slug rule: lower case, [a-z0-9-], dashes collapsed, ≤128."""
    slug = _SLUG_STRIP.sub("", text.lower().strip())
    slug = _SLUG_DASHES.sub("-", slug).strip("-")
    return slug[:128].strip("-")


def now() -> str:
    """UTC now as ISO 8601 with milliseconds and a Z, as the Platform writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
