"""Rate limits as the Platform states them: 100 requests a minute per client IP on
/api/*, and per API key a separate budget for each category of endpoint.

Windows are fixed minutes kept in memory: one appliance is one process. Throttled
requests get 429 with Retry-After (seconds) and X-RateLimit-Limit/Remaining/Reset."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from datetime import UTC, datetime

from starlette.types import ASGIApp, Receive, Scope, Send

DEFAULT_LIMITS = {
    "default": 100,
    "training": 10,
    "upload": 10,
    "predict": 20,
    "export": 20,
    "download": 30,
    "stream": 1200,
}
DEFAULT_IP_LIMIT = 100
WINDOW = 60
_SESSION = b"appliance_session="

#: The sync endpoints a training client calls (routes/webhooks.py). ultralytics
#: sends epoch_end with no retry and console_output with one, so a 429 silently
#: loses a run's metrics or log: they get a budget of their own, sized for a fast
#: run's console chunks and epochs, and are not counted against the per-address
#: limit (which the trainer, on the same machine, would share with everyone).
_STREAM = re.compile(r"^/api/webhooks/(training/metrics|models/upload)$")

_CATEGORIES = [
    ("POST", re.compile(r"^/api/training/start$"), "training"),
    ("POST", re.compile(r"^/api/upload/"), "upload"),
    ("POST", re.compile(r"^/api/datasets/(ingest|[^/]+/[^/]+/ingest)$"), "upload"),
    ("POST", re.compile(r"^/api/integrations/local/[^/]+/ingest$"), "upload"),
    ("POST", re.compile(r"^/api/models/.+/predict$"), "predict"),
    ("POST", re.compile(r"^/api/images/[^/]+/predict$"), "predict"),
    (
        "POST",
        re.compile(r"^/api/datasets/([^/]+/)?[^/]+/(predict|annotate)$"),
        "predict",
    ),
    ("POST", re.compile(r"^/api/models/.+/exports$"), "export"),
    ("POST", re.compile(r"^/api/datasets/([^/]+/)?[^/]+/export$"), "export"),
    ("GET", re.compile(r"^/api/datasets/([^/]+/)?[^/]+/export$"), "export"),
    ("GET", re.compile(r"^/api/models/.+/(files|download)$"), "download"),
    ("POST", _STREAM, "stream"),
]
#: Deployed endpoints answer for the caller's own service: never limited.
_UNLIMITED = re.compile(r"^/api/deployments/[^/]+/[^/]+/predict$")


def category(method: str, path: str) -> str:
    for verb, pattern, name in _CATEGORIES:
        if method == verb and pattern.match(path):
            return name
    return "default"


class _Windows:
    def __init__(self, seconds: int) -> None:
        self.seconds = seconds
        self._counts: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def hit(self, bucket: str, limit: int, now: float) -> tuple[bool, int, int]:
        """Count one request against a sliding window (the previous window's count,
        weighted by how much of it still overlaps); returns (allowed, remaining,
        when the current window ends)."""
        window = int(now // self.seconds)
        end = (window + 1) * self.seconds
        overlap = 1.0 - (now - window * self.seconds) / self.seconds
        with self._lock:
            if len(self._counts) > 100_000:
                self._counts = {
                    k: v for k, v in self._counts.items() if k[1] >= window - 1
                }
            current = self._counts.get((bucket, window), 0)
            previous = self._counts.get((bucket, window - 1), 0)
            used = current + previous * overlap
            if used >= limit:
                return False, 0, self._free_at(window, current, previous, limit)
            self._counts[(bucket, window)] = current + 1
        return True, max(int(limit - used - 1), 0), end

    def _free_at(self, window: int, current: int, previous: int, limit: int) -> int:
        """When the weighted count next drops below the limit."""
        start = window * self.seconds
        if current < limit and previous:
            return int(start + self.seconds * (1 - (limit - current) / previous)) + 1
        return int(start + self.seconds * (2 - limit / max(current, 1))) + 1


class RateLimitMiddleware:
    def __init__(
        self, app: ASGIApp, limits: dict[str, int], ip_limit: int, window: int = WINDOW
    ) -> None:
        self.app = app
        self.limits = limits
        self.ip_limit = ip_limit
        self.windows = _Windows(window)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not path.startswith("/api/")
            or _UNLIMITED.match(path)
        ):
            await self.app(scope, receive, send)
            return
        now = time.time()
        client = (scope.get("client") or ("unknown", 0))[0]
        if self.ip_limit and not _STREAM.match(path):
            allowed, _, end = self.windows.hit(f"ip:{client}", self.ip_limit, now)
            if not allowed:
                await _refuse(send, self.ip_limit, end, now, "per address")
                return
        headers: list[tuple[bytes, bytes]] = []
        key = _bearer(scope)
        name = category(scope["method"], path)
        limit = self.limits.get(name, 0)
        if key and limit:
            allowed, remaining, end = self.windows.hit(f"key:{key}:{name}", limit, now)
            if not allowed:
                await _refuse(send, limit, end, now, f"{name} requests per API key")
                return
            headers = _limit_headers(limit, remaining, end)

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start" and headers:
                message["headers"] = list(message.get("headers", [])) + headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _bearer(scope: Scope) -> str | None:
    """Who to count a request against: its API key, else its browser session."""
    session = None
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return hashlib.sha256(token.strip().encode()).hexdigest()[:32]
        elif name == b"cookie" and _SESSION in value:
            session = value
    if session is not None:
        return "session:" + hashlib.sha256(session).hexdigest()[:32]
    return None


def _limit_headers(limit: int, remaining: int, end: int) -> list[tuple[bytes, bytes]]:
    reset = datetime.fromtimestamp(end, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return [
        (b"x-ratelimit-limit", str(limit).encode()),
        (b"x-ratelimit-remaining", str(remaining).encode()),
        (b"x-ratelimit-reset", reset.encode()),
    ]


async def _refuse(send: Send, limit: int, end: int, now: float, what: str) -> None:
    body = json.dumps(
        {
            "error": f"Rate limit exceeded: {limit} {what} a minute; retry after the reset"
        }
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(max(1, int(end - now + 0.999))).encode()),
        (b"x-error-code", b"RATE_LIMITED"),
        *_limit_headers(limit, 0, end),
    ]
    await send({"type": "http.response.start", "status": 429, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def parse_limits(text: str) -> dict[str, int]:
    """`default=100,training=10` as a dict; unknown categories are an error."""
    limits = dict(DEFAULT_LIMITS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in DEFAULT_LIMITS or not value.strip().isdigit():
            raise ValueError(
                f"bad rate limit {part!r}; use category=requests_per_minute"
            )
        limits[name] = int(value)
    return limits
