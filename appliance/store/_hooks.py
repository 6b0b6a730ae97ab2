"""Webhooks: the endpoints a workspace registers, the outbox of deliveries still
owed (it survives a restart), and the log of every attempt."""

from __future__ import annotations

import time
from typing import Any

from ..ids import new_id, now

#: Attempts kept in the log per webhook; older ones are dropped as new ones come.
LOG_KEEP = 500


def _decode(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is not None:
        row["events"] = [e for e in row["events"].split(",") if e]
        row["active"] = bool(row["active"])
    return row


class HooksMixin:
    # -- endpoints ---------------------------------------------------------

    def create_webhook(
        self,
        owner_id: str,
        url: str,
        events: list[str],
        secret: str,
        *,
        description: str = "",
        created_by: str | None = None,
    ) -> dict[str, Any]:
        stamp = now()
        row = {
            "id": new_id(),
            "owner_id": owner_id,
            "url": url,
            "events": ",".join(events),
            "description": description,
            "secret": secret,
            "active": 1,
            "created_by": created_by,
            "created_at": stamp,
            "updated_at": stamp,
        }
        with self.atomic() as db:
            db["webhooks"].insert(row)
        return self.webhook(row["id"])

    def webhook(self, webhook_id: str) -> dict[str, Any] | None:
        return _decode(
            self.query_one(
                "SELECT w.*, u.username AS owner FROM webhooks w"
                " JOIN users u ON u.id = w.owner_id WHERE w.id = ?",
                [webhook_id],
            )
        )

    def webhooks_of(self, owner_id: str) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT w.*, u.username AS owner FROM webhooks w"
            " JOIN users u ON u.id = w.owner_id WHERE w.owner_id = ?"
            " ORDER BY w.created_at, w.rowid",
            [owner_id],
        )
        return [_decode(row) for row in rows]

    def update_webhook(self, webhook_id: str, **fields: Any) -> None:
        if "events" in fields:
            fields["events"] = ",".join(fields["events"])
        if "active" in fields:
            fields["active"] = int(bool(fields["active"]))
        fields["updated_at"] = now()
        with self.atomic() as db:
            db["webhooks"].update(webhook_id, fields)

    def delete_webhook(self, webhook_id: str) -> None:
        with self.atomic() as db:
            db.execute("DELETE FROM webhook_outbox WHERE webhook_id = ?", [webhook_id])
            db.execute(
                "DELETE FROM webhook_deliveries WHERE webhook_id = ?", [webhook_id]
            )
            db.execute("DELETE FROM webhooks WHERE id = ?", [webhook_id])

    # -- the outbox --------------------------------------------------------

    def enqueue_event(
        self, owner_id: str, event: str, body_of, *, only: str | None = None
    ) -> str | None:
        """Owe one delivery of `event` to every active webhook of the workspace that
        listens for it (or to the webhook `only`, whatever it listens for);
        `body_of(event_id)` gives the JSON text to send. Returns the event's id,
        or None when no webhook wants it."""
        hooks = [
            hook
            for hook in self.webhooks_of(owner_id)
            if (
                hook["id"] == only
                if only
                else hook["active"] and event in hook["events"]
            )
        ]
        if not hooks:
            return None
        event_id = new_id()
        body = body_of(event_id)
        stamp, due = now(), time.time()
        with self.atomic() as db:
            for hook in hooks:
                db["webhook_outbox"].insert(
                    {
                        "webhook_id": hook["id"],
                        "event_id": event_id,
                        "event": event,
                        "body": body,
                        "attempts": 0,
                        "due": due,
                        "created_at": stamp,
                    }
                )
        return event_id

    def due_deliveries(self, limit: int = 20) -> list[dict[str, Any]]:
        return self.query(
            "SELECT * FROM webhook_outbox WHERE due <= ? ORDER BY due, id LIMIT ?",
            [time.time(), limit],
        )

    def pending_deliveries(self, webhook_id: str) -> int:
        return self.scalar(
            "SELECT count(*) FROM webhook_outbox WHERE webhook_id = ?", [webhook_id]
        )

    def record_attempt(
        self,
        item: dict[str, Any],
        *,
        status_code: int | None,
        duration_ms: int,
        error: str | None,
        retry_at: float | None,
    ) -> str:
        """Log one attempt and settle the outbox row: gone when delivered or out of
        attempts, else due again at `retry_at`. Returns the outcome ("gone" when
        the webhook was deleted while the attempt was on its way)."""
        attempt = item["attempts"] + 1
        if error is None:
            outcome = "delivered"
        elif retry_at is None:
            outcome = "failed"
        else:
            outcome = "retrying"
        with self.atomic() as db:
            if not db.execute(
                "SELECT 1 FROM webhook_outbox WHERE id = ?", [item["id"]]
            ).fetchone():
                return "gone"  # its webhook was deleted meanwhile
            db["webhook_deliveries"].insert(
                {
                    "webhook_id": item["webhook_id"],
                    "event_id": item["event_id"],
                    "event": item["event"],
                    "attempt": attempt,
                    "status_code": status_code,
                    "duration_ms": duration_ms,
                    "outcome": outcome,
                    "failure": error,
                    "created_at": now(),
                }
            )
            if outcome == "retrying":
                db.execute(
                    "UPDATE webhook_outbox SET attempts = ?, due = ? WHERE id = ?",
                    [attempt, retry_at, item["id"]],
                )
            else:
                db.execute("DELETE FROM webhook_outbox WHERE id = ?", [item["id"]])
            db.execute(
                "DELETE FROM webhook_deliveries WHERE webhook_id = ? AND id <="
                " (SELECT id FROM webhook_deliveries WHERE webhook_id = ?"
                "  ORDER BY id DESC LIMIT 1 OFFSET ?)",
                [item["webhook_id"], item["webhook_id"], LOG_KEEP],
            )
        return outcome

    def delivery_log(
        self, webhook_id: str, limit: int, offset: int
    ) -> list[dict[str, Any]]:
        return self.query(
            "SELECT * FROM webhook_deliveries WHERE webhook_id = ?"
            " ORDER BY id DESC LIMIT ? OFFSET ?",
            [webhook_id, limit, offset],
        )
