"""API keys: `ul_` + 40 lower-case hex, stored only as a SHA-256 digest.

A key carries 160 random bits, so a fast digest is enough to make the stored
value useless to a thief, and it lets a request find its key in one indexed
lookup. Comparison happens inside SQLite on the digest, never on the secret.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from .store import Database

KEY_RE = re.compile(r"^ul_[0-9a-f]{40}$")


def generate_key() -> str:
    return "ul_" + secrets.token_hex(20)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_prefix(key: str) -> str:
    """What a listing may show of a key: enough to recognise it, not to use it."""
    return key[:7]


def create_key(db: Database, user_id: str, name: str = "default") -> str:
    """Make a key for a user, store its hash, and return the key itself (shown once)."""
    key = generate_key()
    db.add_api_key(user_id, name, key_prefix(key), hash_key(key))
    return key


def authenticate(db: Database, key: str) -> dict | None:
    """The user a presented key belongs to, or None."""
    if not KEY_RE.match(key):
        return None
    return db.key_owner(hash_key(key))
