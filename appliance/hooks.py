"""Outgoing webhooks: the seed's events (training.started, training.epoch,
training.completed, training.failed, export.completed) POSTed as signed JSON to
the URLs a workspace registers.

An event becomes one outbox row per listening webhook, in the same database as
everything else, so a restart loses nothing owed. One delivery thread sends what
is due, logs every attempt, and retries failures with exponential backoff until
the attempts run out.

Each request carries::

    Content-Type: application/json
    X-Appliance-Event: training.completed
    X-Appliance-Delivery: <event id, the same on every retry>
    X-Appliance-Timestamp: <Unix seconds when this attempt was signed>
    X-Appliance-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">

keyed with the webhook's secret. A receiver recomputes the HMAC over the
timestamp, a dot and the raw body, compares in constant time, and refuses a
timestamp more than a few minutes old, so a captured request cannot be replayed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import threading
import time
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

from .errors import Invalid
from .ids import now
from .settings import Settings
from .store import Database

logger = logging.getLogger(__name__)

EVENTS = (
    "training.started",
    "training.epoch",
    "training.completed",
    "training.failed",
    "export.completed",
)
#: Sent by POST /api/webhooks/{id}/test only, never subscribed to.
PING = "ping"
SIGNATURE_HEADER = "X-Appliance-Signature"
#: Seconds one attempt may take before it counts as failed.
TIMEOUT = 10.0


def check_url(url: str, allowed: tuple[str, ...]) -> str:
    """A webhook URL the appliance may call: http(s), no credentials, and a host
    the operator allowed (the appliance never reaches off the machines it was
    told about)."""
    if not isinstance(url, str) or len(url) > 2000:
        raise Invalid("url must be a string of at most 2000 characters")
    try:
        parts = urlsplit(url.strip())
        if parts.port == 0:
            raise ValueError("port 0")
    except ValueError:
        raise Invalid("url is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Invalid("url must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise Invalid("url must not hold credentials; the signature authenticates")
    if parts.hostname.lower() not in allowed:
        raise Invalid(
            f"url host {parts.hostname} is not allowed: this appliance is offline"
            " and calls only the hosts its operator lists in APPLIANCE_WEBHOOK_HOSTS"
            f" ({', '.join(allowed) or 'none'})"
        )
    return url.strip()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return f"sha256={digest}"


def verify(
    secret: str, timestamp: str, body: bytes, signature: str, tolerance: int = 300
) -> bool:
    """What a receiver does: right HMAC, and a timestamp within `tolerance` s."""
    try:
        stamp = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - stamp) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, stamp, body), signature)


# -- raising events ------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON every receiver can parse: NaN and infinities (a diverged loss) as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def emit(
    db: Database,
    owner_id: str,
    event: str,
    data: dict[str, Any],
    *,
    only: str | None = None,
) -> str | None:
    """Owe `event` to the workspace's webhooks (or to the one webhook `only`);
    returns the event id, None when nobody listens. Never raises: a webhook
    problem must not fail the work that caused it."""
    try:
        owner = db.user_by_id(owner_id)

        def body_of(event_id: str) -> str:
            return json.dumps(
                {
                    "id": event_id,
                    "event": event,
                    "createdAt": now(),
                    "owner": owner["username"] if owner else None,
                    "data": _clean(data),
                },
                separators=(",", ":"),
                default=str,
                allow_nan=False,
            )

        return db.enqueue_event(owner_id, event, body_of, only=only)
    except Exception:
        logger.exception("could not queue webhook event %s", event)
        return None


def ping(db: Database, hook: dict) -> str | None:
    """A `ping` event to one webhook, to try its receiver."""
    return emit(db, hook["owner_id"], PING, {"webhookId": hook["id"]}, only=hook["id"])


def _model_data(model: dict, job_id: str | None) -> dict[str, Any]:
    return {
        "modelId": model["id"],
        "model": f"ul://{model['owner']}/{model['project']}/{model['slug']}",
        "project": model["project"],
        "name": model["name"],
        "jobId": job_id,
    }


def training_event(db: Database, job: dict, event: str, **extra: Any) -> None:
    """A training event for the job's model (started, epoch)."""
    model = db.model(job["subject_id"])
    if model is not None:
        emit(db, model["owner_id"], event, {**_model_data(model, job["id"]), **extra})


def job_finished(
    db: Database, job_id: str, status: str, error: dict | None = None
) -> None:
    """The events a job's end raises: training.completed or training.failed, and
    export.completed."""
    try:
        job = db.job(job_id)
        if job is None:
            return
        if job["kind"] == "train":
            _training_ended(db, job, status, error)
        elif job["kind"] == "export" and status == "completed":
            _export_completed(db, job)
    except Exception:
        logger.exception("could not raise webhook events for job %s", job_id)


def _training_ended(db: Database, job: dict, status: str, error: dict | None) -> None:
    model = db.model(job["subject_id"])
    if model is None:
        return
    data = _model_data(model, job["id"])
    if status == "completed":
        emit(
            db,
            model["owner_id"],
            "training.completed",
            {
                **data,
                "metrics": model.get("metrics") or {},
                "bestEpoch": model.get("best_epoch"),
                "hasWeights": bool(model.get("weights_size")),
            },
        )
    elif status in ("failed", "interrupted"):
        error = error or {}
        emit(
            db,
            model["owner_id"],
            "training.failed",
            {
                **data,
                "error": {
                    "message": error.get("message"),
                    "code": error.get("code") or status,
                },
            },
        )


def _export_completed(db: Database, job: dict) -> None:
    export = db.export(job["subject_id"])
    model = db.model(export["model_id"]) if export else None
    if model is None:
        return
    emit(
        db,
        model["owner_id"],
        "export.completed",
        {
            **_model_data(model, job["id"]),
            "exportId": export["id"],
            "format": export["format"],
            "filename": export.get("filename"),
            "size": export.get("file_size"),
        },
    )


# -- delivering ----------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect is a failed delivery: following it could leave the allowed hosts."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirects())


class Deliverer:
    """The thread that sends due deliveries, one at a time, oldest first."""

    def __init__(self, db: Database, settings: Settings, poll: float = 0.5) -> None:
        self.db = db
        self.settings = settings
        self.poll = poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="webhooks", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=TIMEOUT + 5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sent = self.run_due()
            except Exception:
                logger.exception("webhook delivery round failed")
                sent = 0
            if not sent:
                self._stop.wait(self.poll)

    def run_due(self) -> int:
        """Attempt every delivery that is due now; returns how many were tried."""
        items = self.db.due_deliveries()
        for item in items:
            if self._stop.is_set():
                break
            self.attempt(item)
        return len(items)

    def attempt(self, item: dict) -> str:
        hook = self.db.webhook(item["webhook_id"])
        if hook is None:
            return "gone"
        started = time.monotonic()
        status, error = self._send(hook, item)
        duration = int((time.monotonic() - started) * 1000)
        attempt = item["attempts"] + 1
        retry_at = None
        if error is not None and attempt < self.settings.webhook_attempts:
            wait = self.settings.webhook_retry_seconds * 2 ** (attempt - 1)
            retry_at = time.time() + wait
        outcome = self.db.record_attempt(
            item,
            status_code=status,
            duration_ms=duration,
            error=error,
            retry_at=retry_at,
        )
        if outcome != "delivered":
            logger.warning(
                "webhook %s, %s attempt %d: %s (%s)",
                hook["id"],
                item["event"],
                attempt,
                error,
                outcome,
            )
        return outcome

    def _send(self, hook: dict, item: dict) -> tuple[int | None, str | None]:
        """POST one delivery: (status code, None) on a 2xx, else what went wrong."""
        if not hook["active"]:
            return None, "webhook is disabled"
        try:
            check_url(hook["url"], self.settings.webhook_hosts)
        except Invalid as exc:
            return None, exc.message
        body = item["body"].encode()
        stamp = int(time.time())
        request = urllib.request.Request(
            hook["url"],
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "appliance-webhooks/1",
                "X-Appliance-Event": item["event"],
                "X-Appliance-Delivery": item["event_id"],
                "X-Appliance-Timestamp": str(stamp),
                SIGNATURE_HEADER: sign(hook["secret"], stamp, body),
            },
        )
        try:
            with _OPENER.open(request, timeout=TIMEOUT) as response:
                response.read(65536)
                return response.status, None
        except urllib.error.HTTPError as exc:
            return exc.code, f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            return None, f"{exc.__class__.__name__}: {reason}"[:500]
