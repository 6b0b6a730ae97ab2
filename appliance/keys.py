"""API keys: `ul_` + 40 lower-case hex, stored only as a scrypt hash.

A key is found by its first 8 hex characters (indexed, shown in listings), then
checked against the hash in constant time. A verified key is remembered in memory for
a minute; revoking it forgets it at once."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time

from .secrets_ import KEY_COST, hash_secret, verify_secret
from .store import Database

KEY_RE = re.compile(r"^ul_[0-9a-f]{40}$")
_REMEMBER = 60.0


def generate_key() -> str:
    return "ul_" + secrets.token_hex(20)


def key_prefix(key: str) -> str:
    """What a listing may show of a key: enough to recognise it, not to use it."""
    return key[:11]


class Keyring:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._verified: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def create(self, user_id: str, name: str = "default") -> dict:
        """Make a key; the returned row carries the key itself, shown once."""
        key = generate_key()
        row = self.db.add_api_key(
            user_id, name, key_prefix(key), hash_secret(key, KEY_COST)
        )
        return {**row, "key": key}

    def authenticate(self, key: str) -> dict | None:
        """The user a presented key belongs to (with key_id), or None."""
        if not KEY_RE.match(key):
            return None
        fingerprint = hashlib.sha256(key.encode()).hexdigest()
        with self._lock:
            known = self._verified.get(fingerprint)
        if known and known[1] > time.monotonic():
            return self.db.key_owner(known[0])
        for candidate in self.db.keys_with_prefix(key_prefix(key)):
            if verify_secret(key, candidate["key_hash"]):
                with self._lock:
                    self._verified[fingerprint] = (
                        candidate["id"],
                        time.monotonic() + _REMEMBER,
                    )
                return self.db.key_owner(candidate["id"])
        return None

    def revoke(self, user_id: str, key_id: str) -> bool:
        removed = self.db.delete_api_key(user_id, key_id)
        with self._lock:
            self._verified = {f: v for f, v in self._verified.items() if v[0] != key_id}
        return removed


def create_key(db: Database, user_id: str, name: str = "default") -> str:
    """Make a key for a user and return it (for the CLI and first start)."""
    return Keyring(db).create(user_id, name)["key"]


def authenticate(db: Database, key: str) -> dict | None:
    return Keyring(db).authenticate(key)
