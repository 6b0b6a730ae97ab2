"""Users, API keys and upload sessions."""

from __future__ import annotations

from typing import Any

from ..ids import new_id, now


class AccountsMixin:
    # -- users -------------------------------------------------------------

    def create_user(
        self,
        username: str,
        name: str | None = None,
        *,
        kind: str = "personal",
        password_hash: str | None = None,
    ) -> dict[str, Any]:
        row = {
            "id": new_id(),
            "username": username,
            "name": name or username,
            "kind": kind,
            "password_hash": password_hash,
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

    def update_user(self, user_id: str, **fields: Any) -> None:
        with self.atomic() as db:
            db["users"].update(user_id, fields)

    # -- teams and memberships ---------------------------------------------

    def create_team(self, username: str, name: str, owner_id: str) -> dict[str, Any]:
        with self.atomic():
            team = self.create_user(username, name, kind="team")
            self.set_membership(team["id"], owner_id, "owner")
        return team

    def set_membership(self, team_id: str, user_id: str, role: str) -> None:
        with self.atomic() as db:
            db.execute(
                "INSERT INTO memberships (team_id, user_id, role, created_at)"
                " VALUES (?, ?, ?, ?)"
                " ON CONFLICT (team_id, user_id) DO UPDATE SET role = excluded.role",
                [team_id, user_id, role, now()],
            )

    def remove_membership(self, team_id: str, user_id: str) -> bool:
        with self.atomic() as db:
            cursor = db.execute(
                "DELETE FROM memberships WHERE team_id = ? AND user_id = ?",
                [team_id, user_id],
            )
            return cursor.rowcount == 1

    def teams_of(self, user_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT u.*, m.role FROM memberships m JOIN users u ON u.id = m.team_id"
            " WHERE m.user_id = ? ORDER BY u.username",
            [user_id],
        )

    def members_of(self, team_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT u.id, u.username, u.name, m.role, m.created_at FROM memberships m"
            " JOIN users u ON u.id = m.user_id WHERE m.team_id = ? ORDER BY m.created_at",
            [team_id],
        )

    # -- invites -----------------------------------------------------------

    def create_invite(self, **fields: Any) -> dict[str, Any]:
        row = {"id": new_id(), "created_at": now(), **fields}
        with self.atomic() as db:
            db["invites"].insert(row)
        return row

    def invite(self, invite_id: str) -> dict[str, Any] | None:
        return self.query_one("SELECT * FROM invites WHERE id = ?", [invite_id])

    def invite_by_token(self, token_hash: str) -> dict[str, Any] | None:
        return self.query_one(
            "SELECT * FROM invites WHERE token_hash = ?", [token_hash]
        )

    def update_invite(self, invite_id: str, **fields: Any) -> None:
        with self.atomic() as db:
            db["invites"].update(invite_id, fields)

    def pending_invites(self, team_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT * FROM invites WHERE team_id = ? AND accepted_at IS NULL"
            " AND revoked_at IS NULL AND expires_at > ? ORDER BY created_at",
            [team_id, now()],
        )

    # -- sessions ----------------------------------------------------------

    def create_session(
        self, token_hash: str, user_id: str, csrf: str, expires_at: str
    ) -> None:
        with self.atomic() as db:
            db["sessions"].insert(
                {
                    "token_hash": token_hash,
                    "user_id": user_id,
                    "csrf": csrf,
                    "created_at": now(),
                    "expires_at": expires_at,
                }
            )

    def delete_session(self, token_hash: str) -> None:
        with self.atomic() as db:
            db.execute("DELETE FROM sessions WHERE token_hash = ?", [token_hash])

    def delete_sessions_of(self, user_id: str) -> None:
        with self.atomic() as db:
            db.execute("DELETE FROM sessions WHERE user_id = ?", [user_id])

    def user_count(self) -> int:
        return self.scalar("SELECT count(*) FROM users WHERE kind = 'personal'")

    def resource_counts(self, user_id: str) -> dict[str, int]:
        return {
            "projects": self.scalar(
                "SELECT count(*) FROM projects WHERE owner_id = ? AND deleted_at IS NULL",
                [user_id],
            ),
            "datasets": self.scalar(
                "SELECT count(*) FROM datasets WHERE owner_id = ? AND deleted_at IS NULL",
                [user_id],
            ),
            "models": self.scalar(
                "SELECT count(*) FROM models JOIN projects p ON p.id = models.project_id"
                " WHERE p.owner_id = ? AND p.deleted_at IS NULL"
                " AND models.deleted_at IS NULL",
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
        return self.query(
            "SELECT id, key_hash FROM api_keys WHERE prefix = ?", [prefix]
        )

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
