"""Signed, expiring URLs for blobs, served by the appliance itself.

A signature is an HMAC over the method, the path and the expiry, keyed by a secret
kept in the data home. Signed URLs need no Authorization header, which is how the
Platform's clients fetch and upload files.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from pathlib import Path
from urllib.parse import quote


def load_secret(path: Path) -> bytes:
    """The signing secret, made on first use and kept with owner-only permissions."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(32))
        tmp.chmod(0o600)
        tmp.replace(path)
    return bytes.fromhex(path.read_text().strip())


class Signer:
    def __init__(self, secret: bytes, base_url: str, ttl: int) -> None:
        self._secret = secret
        self.base_url = base_url.rstrip("/")
        self.ttl = ttl

    def _sig(self, method: str, path: str, expires: int) -> str:
        message = f"{method}\n{path}\n{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def url(self, path: str, method: str = "GET", ttl: int | None = None) -> str:
        """An absolute signed URL for an appliance path such as /files/images/ab.jpg."""
        expires = int(time.time()) + (ttl or self.ttl)
        quoted = quote(path)
        return f"{self.base_url}{quoted}?expires={expires}&signature={self._sig(method, path, expires)}"

    def expiry(self, ttl: int | None = None) -> int:
        return int(time.time()) + (ttl or self.ttl)

    def verify(
        self, method: str, path: str, expires: str | None, signature: str | None
    ) -> bool:
        if (
            not expires
            or not signature
            or not (expires.isascii() and expires.isdigit())
        ):
            return False
        if int(expires) < time.time():
            return False
        method = "GET" if method == "HEAD" else method
        return hmac.compare_digest(self._sig(method, path, int(expires)), signature)
