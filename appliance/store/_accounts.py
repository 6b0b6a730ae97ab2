"""Users, API keys and upload sessions."""

from __future__ import annotations

from typing import Any

from ..ids import new_id, now


class AccountsMixin:
    # -- users -------------------------------------------------------------

    def create_user(self, username: str, name: str | None = None) -> dict[str, Any]:
        row = {
            "id": new_id(),
            "username": username,
            "name": name or username,
            "created_at": now(),
        }
        with self.atomic() as db:
            db["users"].insert(row)
        return row

    def user_by_id(self, user_id: str) -> dict[str, Any] | None:
        return self.query_one("SELECT * FROM users WHERE id = ?", [user_id])

    def user_by_name(self, username: str) -> dict[str, Any] | None:
        return self.query_one("SELECT * FROM users WHERE username = ?", [username])

    def membership_role(self, team_id: str, user_id: str) -> str | None:
        return self.scalar(
            "SELECT role FROM memberships WHERE team_id = ? AND user_id = ?",
            [team_id, user_id],
        )

    def session(self, token_hash: str) -> dict[str, Any] | None:
        return self.query_one(
            "SELECT * FROM sessions WHERE token_hash = ? AND expires_at > ?",
            [token_hash, now()],
        )

    def user_count(self) -> int:
        return self.scalar("SELECT count(*) FROM users")

    def resource_counts(self, user_id: str) -> dict[str, int]:
        return {
            "projects": self.scalar(
                "SELECT count(*) FROM projects WHERE owner_id = ?", [user_id]
            ),
            "datasets": self.scalar(
                "SELECT count(*) FROM datasets WHERE owner_id = ?", [user_id]
            ),
            "models": self.scalar(
                "SELECT count(*) FROM models JOIN projects p ON p.id = models.project_id"
                " WHERE p.owner_id = ?",
                [user_id],
            ),
        }

    # -- API keys ----------------------------------------------------------

    def add_api_key(
        self, user_id: str, name: str, prefix: str, key_hash: str
    ) -> dict[str, Any]:
        row = {
            "id": new_id(),
            "user_id": user_id,
            "name": name,
            "prefix": prefix,
            "key_hash": key_hash,
            "created_at": now(),
            "last_used_at": None,
        }
        with self.atomic() as db:
            db["api_keys"].insert(row)
        return row

    def keys_with_prefix(self, prefix: str) -> list[dict[str, Any]]:
        return self.query("SELECT id, key_hash FROM api_keys WHERE prefix = ?", [prefix])

    def key_owner(self, key_id: str) -> dict[str, Any] | None:
        """The user a key belongs to, with the key's id as key_id."""
        return self.query_one(
            "SELECT u.*, k.id AS key_id, k.last_used_at AS key_last_used_at"
            " FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.id = ?",
            [key_id],
        )

    def delete_api_key(self, user_id: str, key_id: str) -> bool:
        with self.atomic() as db:
            cursor = db.execute(
                "DELETE FROM api_keys WHERE id = ? AND user_id = ?", [key_id, user_id]
            )
            return cursor.rowcount == 1

    def touch_api_key(self, key_id: str) -> None:
        with self.atomic() as db:
            db.execute(
                "UPDATE api_keys SET last_used_at = ? WHERE id = ?", [now(), key_id]
            )

    def api_keys(self, user_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT id, name, prefix, created_at, last_used_at FROM api_keys"
            " WHERE user_id = ? ORDER BY created_at",
            [user_id],
        )

    # -- upload sessions ---------------------------------------------------

    def create_upload(self, **fields: Any) -> dict[str, Any]:
        row = {
            "id": new_id(),
            "status": "pending",
            "size": None,
            "created_at": now(),
            **fields,
        }
        with self.atomic() as db:
            db["uploads"].insert(row)
        return row

    def upload(self, session_id: str) -> dict[str, Any] | None:
        return self.query_one("SELECT * FROM uploads WHERE id = ?", [session_id])

    def update_upload(self, session_id: str, **fields: Any) -> None:
        with self.atomic() as db:
            db["uploads"].update(session_id, fields)
