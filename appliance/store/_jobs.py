"""Jobs: the durable record of queued work (ingest, training, export)."""

from __future__ import annotations

import json
from typing import Any

from ..ids import new_id, now

#: `stalled`: running, but its trainer has sent nothing for a while (the watchdog).
ACTIVE = ("queued", "starting", "running", "stalled")
FINISHED = ("completed", "failed", "cancelled", "interrupted")


class JobsMixin:
    def create_job(
        self,
        kind: str,
        subject_id: str,
        user_id: str | None,
        args: dict | None = None,
        *,
        status: str = "queued",
    ) -> dict[str, Any]:
        """A new job; one that runs elsewhere (a streamed training run) may start
        as running, so a restart never hands it to the local queue."""
        stamp = now()
        row = {
            "id": new_id(),
            "kind": kind,
            "subject_id": subject_id,
            "user_id": user_id,
            "status": status,
            "args": args or {},
            "created_at": stamp,
            "updated_at": stamp,
        }
        if status == "running":
            row["started_at"] = row["heartbeat_at"] = stamp
        with self.atomic() as db:
            db["jobs"].insert(row)
        return self.job(row["id"])

    def job(self, job_id: str) -> dict[str, Any] | None:
        return self.query_one("SELECT * FROM jobs WHERE id = ?", [job_id])

    def latest_job(self, subject_id: str, kind: str) -> dict[str, Any] | None:
        return self.query_one(
            "SELECT * FROM jobs WHERE subject_id = ? AND kind = ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
            [subject_id, kind],
        )

    def jobs(self, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        if status:
            return self.query(
                "SELECT * FROM jobs WHERE status = ? ORDER BY created_at DESC LIMIT ?",
                [status, limit],
            )
        return self.query(
            "SELECT * FROM jobs ORDER BY created_at DESC LIMIT ?", [limit]
        )

    def update_job(self, job_id: str, **fields: Any) -> None:
        stamp = now()
        fields["updated_at"] = stamp
        if fields.get("status") == "running":
            fields.setdefault("started_at", stamp)
        if fields.get("status") in FINISHED:
            fields.setdefault("finished_at", stamp)
        with self.atomic() as db:
            db["jobs"].update(job_id, fields)

    def active_jobs(self) -> list[dict[str, Any]]:
        marks = ",".join("?" for _ in ACTIVE)
        return self.query(f"SELECT * FROM jobs WHERE status IN ({marks})", list(ACTIVE))

    def update_job_if(self, job_id: str, current: str, **fields: Any) -> bool:
        """Update a job only while its status is still `current`; True when it was."""
        stamp = now()
        fields["updated_at"] = stamp
        if fields.get("status") in FINISHED:
            fields.setdefault("finished_at", stamp)
        columns = ", ".join(f"{name} = ?" for name in fields)
        values = [
            json.dumps(v) if isinstance(v, dict | list) else v for v in fields.values()
        ]
        with self.atomic() as db:
            cursor = db.execute(
                f"UPDATE jobs SET {columns} WHERE id = ? AND status = ?",
                [*values, job_id, current],
            )
            return cursor.rowcount == 1
