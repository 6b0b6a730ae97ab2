"""Hashing of passwords and API keys with scrypt, compared in constant time.

Both are stored as `scrypt$n$r$p$salt$digest`. Keys carry 160 random bits, so they use
a lighter cost than passwords; a verified key is remembered in memory for a short
while so that a busy script does not pay scrypt on every request."""

from __future__ import annotations

import hashlib
import hmac
import secrets

PASSWORD_COST = (2**14, 8, 1)
KEY_COST = (2**11, 8, 1)


def hash_secret(secret: str, cost: tuple[int, int, int] = PASSWORD_COST) -> str:
    n, r, p = cost
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_secret(secret: str, stored: str | None) -> bool:
    if not stored or not stored.startswith("scrypt$"):
        # Spend the same work on a missing hash, so timing does not tell which.
        hash_secret(secret)
        return False
    _, n, r, p, salt, digest = stored.split("$")
    actual = hashlib.scrypt(
        secret.encode(),
        salt=bytes.fromhex(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=32,
    )
    return hmac.compare_digest(actual, bytes.fromhex(digest))
