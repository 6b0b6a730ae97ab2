"""Project and model operations beyond create and read: listings, the trash,
clones, completed models and download counts.

A trashed project hides its models with it (their own `deleted_at` stays
empty, so restoring the project brings them back); a model trashed on its own
carries its own `deleted_at`. Purging deletes the rows (epochs and exports go
by cascade) and returns the ids whose blobs the caller removes."""

from __future__ import annotations

from typing import Any

from ..ids import new_id, now
from ._models import _MODEL_SELECT

_PROJECT_SELECT = (
    "SELECT p.*, u.username AS owner,"
    " (SELECT count(*) FROM models m WHERE m.project_id = p.id"
    " AND m.deleted_at IS NULL) AS model_count"
    " FROM projects p JOIN users u ON u.id = p.owner_id"
)


def _marks(values: list) -> str:
    return ",".join("?" for _ in values)


class ModelOpsMixin:
    # -- listings ----------------------------------------------------------

    def project_page(
        self, owner_id: str, *, private: bool, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """An owner's projects outside the trash, newest first (public ones
        only unless `private`), and how many there are."""
        where = "p.owner_id = ? AND p.deleted_at IS NULL"
        if not private:
            where += " AND p.visibility = 'public'"
        rows = self.query(
            f"{_PROJECT_SELECT} WHERE {where} ORDER BY p.created_at DESC, p.id LIMIT ?",
            [owner_id, limit],
        )
        total = self.scalar(
            f"SELECT count(*) FROM projects p WHERE {where}", [owner_id]
        )
        return rows, total

    def project_with_count(self, project_id: str) -> dict[str, Any] | None:
        return self.query_one(f"{_PROJECT_SELECT} WHERE p.id = ?", [project_id])

    def project_clone_count(self, project_id: str) -> int:
        return self.scalar(
            "SELECT count(*) FROM projects WHERE cloned_from = ? AND deleted_at IS NULL",
            [project_id],
        )

    def model_clone_count(self, model_id: str) -> int:
        return self.scalar(
            "SELECT count(*) FROM models WHERE cloned_from = ? AND deleted_at IS NULL",
            [model_id],
        )

    def models_by_ids(self, project_id: str, ids: list[str]) -> list[dict[str, Any]]:
        return self.query(
            f"{_MODEL_SELECT} WHERE m.project_id = ? AND m.deleted_at IS NULL"
            f" AND m.id IN ({_marks(ids)}) ORDER BY m.created_at DESC",
            [project_id, *ids],
        )

    def completed_models(
        self, owner_ids: list[str], limit: int
    ) -> list[dict[str, Any]]:
        """Finished models with weights in these workspaces, newest first; a run
        that ended early (cancelled, failed) counts when it kept weights."""
        if not owner_ids:
            return []
        return self.query(
            f"{_MODEL_SELECT} WHERE p.owner_id IN ({_marks(owner_ids)})"
            " AND m.status IN ('completed', 'cancelled', 'failed') AND m.weights_size > 0"
            " AND m.deleted_at IS NULL AND p.deleted_at IS NULL"
            " ORDER BY coalesce(m.completed_at, m.updated_at) DESC, m.id LIMIT ?",
            [*owner_ids, limit],
        )

    def workspaces_of(self, user_id: str) -> list[str]:
        """The caller's own workspace and every team they belong to."""
        rows = self.db.execute(
            "SELECT team_id FROM memberships WHERE user_id = ?", [user_id]
        ).fetchall()
        return [user_id, *(row[0] for row in rows)]

    def count_download(self, model_id: str) -> int:
        with self.atomic() as db:
            db.execute(
                "UPDATE models SET download_count = download_count + 1 WHERE id = ?",
                [model_id],
            )
        return self.scalar("SELECT download_count FROM models WHERE id = ?", [model_id])

    def slug_in_trash(self, table: str, parent: str, parent_id: str, slug: str) -> bool:
        """Whether a trashed project (or model) holds this slug."""
        assert table in ("projects", "models") and parent in ("owner_id", "project_id")
        return bool(
            self.scalar(
                f"SELECT count(*) FROM {table} WHERE {parent} = ? AND slug = ?"
                " AND deleted_at IS NOT NULL",
                [parent_id, slug],
            )
        )

    # -- trash -------------------------------------------------------------

    def trash_project(self, project_id: str) -> int:
        """Move a project to the trash; returns how many models go with it."""
        stamp = now()
        with self.atomic() as db:
            db.execute(
                "UPDATE projects SET deleted_at = ?, updated_at = ? WHERE id = ?",
                [stamp, stamp, project_id],
            )
        return self.scalar(
            "SELECT count(*) FROM models WHERE project_id = ? AND deleted_at IS NULL",
            [project_id],
        )

    def trash_model(self, model_id: str) -> None:
        stamp = now()
        with self.atomic() as db:
            db.execute(
                "UPDATE models SET deleted_at = ?, updated_at = ? WHERE id = ?",
                [stamp, stamp, model_id],
            )

    def trashed_project(self, project_id: str) -> dict[str, Any] | None:
        return self.query_one(
            f"{_PROJECT_SELECT} WHERE p.id = ? AND p.deleted_at IS NOT NULL",
            [project_id],
        )

    def trashed_model(self, model_id: str) -> dict[str, Any] | None:
        return self.query_one(
            f"{_MODEL_SELECT} WHERE m.id = ? AND m.deleted_at IS NOT NULL", [model_id]
        )

    def restore_project(self, project_id: str) -> int:
        with self.atomic() as db:
            db.execute(
                "UPDATE projects SET deleted_at = NULL, updated_at = ? WHERE id = ?",
                [now(), project_id],
            )
        return self.scalar(
            "SELECT count(*) FROM models WHERE project_id = ? AND deleted_at IS NULL",
            [project_id],
        )

    def restore_model(self, model_id: str) -> None:
        with self.atomic() as db:
            db.execute(
                "UPDATE models SET deleted_at = NULL, updated_at = ? WHERE id = ?",
                [now(), model_id],
            )

    def trashed_items(self, owner_id: str) -> list[dict[str, Any]]:
        """The owner's trashed projects and models (each model trashed on its
        own), with their stored weights' bytes."""
        projects = self.query(
            """SELECT p.id, p.name, p.slug, p.deleted_at,
                  (SELECT count(*) FROM models m WHERE m.project_id = p.id) AS models,
                  (SELECT coalesce(sum(m.weights_size), 0) FROM models m
                   WHERE m.project_id = p.id) AS size_bytes
               FROM projects p WHERE p.owner_id = ? AND p.deleted_at IS NOT NULL""",
            [owner_id],
        )
        models = self.query(
            """SELECT m.id, m.name, m.slug, m.deleted_at,
                  coalesce(m.weights_size, 0) AS size_bytes,
                  p.id AS project_id, p.name AS project_name, p.slug AS project_slug
               FROM models m JOIN projects p ON p.id = m.project_id
               WHERE p.owner_id = ? AND m.deleted_at IS NOT NULL
                 AND p.deleted_at IS NULL""",
            [owner_id],
        )
        return [{"type": "project", **r} for r in projects] + [
            {"type": "model", **r} for r in models
        ]

    def purge_projects(
        self, *, owner_id: str, ids: list[str] | None = None, before: str | None = None
    ) -> tuple[list[str], list[str], list[str]]:
        """Delete trashed projects for good, with all their models. Returns the
        project, model and export ids whose blobs go too."""
        where, params = _trashed_where("", "", owner_id, ids, before)
        with self.atomic() as db:
            project_ids = [
                row[0]
                for row in db.execute(
                    f"SELECT id FROM projects WHERE {' AND '.join(where)}", params
                )
            ]
            model_ids, export_ids = self._blobs_of(db, "project_id", project_ids)
            if project_ids:
                db.execute(
                    f"DELETE FROM projects WHERE id IN ({_marks(project_ids)})",
                    project_ids,
                )
        return project_ids, model_ids, export_ids

    def purge_models(
        self, *, owner_id: str, ids: list[str] | None = None, before: str | None = None
    ) -> tuple[list[str], list[str]]:
        """Delete models trashed on their own for good; returns their ids and
        their exports' ids."""
        where, params = _trashed_where("m.", "p.", owner_id, ids, before)
        with self.atomic() as db:
            model_ids = [
                row[0]
                for row in db.execute(
                    "SELECT m.id FROM models m JOIN projects p ON p.id = m.project_id"
                    f" WHERE {' AND '.join(where)}",
                    params,
                )
            ]
            model_ids, export_ids = self._blobs_of(db, "id", model_ids)
            if model_ids:
                db.execute(
                    f"DELETE FROM models WHERE id IN ({_marks(model_ids)})", model_ids
                )
        return model_ids, export_ids

    @staticmethod
    def _blobs_of(db: Any, column: str, keys: list[str]) -> tuple[list[str], list[str]]:
        if not keys:
            return [], []
        model_ids = [
            row[0]
            for row in db.execute(
                f"SELECT id FROM models WHERE {column} IN ({_marks(keys)})", keys
            )
        ]
        export_ids = (
            [
                row[0]
                for row in db.execute(
                    f"SELECT id FROM exports WHERE model_id IN ({_marks(model_ids)})",
                    model_ids,
                )
            ]
            if model_ids
            else []
        )
        return model_ids, export_ids

    # -- clones ------------------------------------------------------------

    def clone_model_row(
        self, source: dict, project_id: str, **fields: Any
    ) -> dict[str, Any]:
        """A copy of a model's row and per-epoch metrics in another project
        (weights are copied by the caller, outside the transaction)."""
        stamp = now()
        copied = {
            key: source[key]
            for key in (
                "name",
                "description",
                "task",
                "status",
                "train_args",
                "metrics",
                "class_names",
                "epochs",
                "best_epoch",
                "best_fitness",
                "weights_size",
                "training_error",
                "environment",
                "metadata",
                "started_at",
                "completed_at",
                "details",
            )
        }
        if copied["status"] in ("queued", "starting", "running"):
            copied["status"] = "pending"
            copied["weights_size"] = None
        row = {
            **copied,
            "id": new_id(),
            "project_id": project_id,
            "cloned_from": source["id"],
            "dataset_id": None,
            "created_at": stamp,
            "updated_at": stamp,
            **fields,
        }
        with self.atomic() as db:
            db["models"].insert(row)
            db.execute(
                "INSERT INTO epochs (model_id, epoch, metrics, fitness, created_at)"
                " SELECT ?, epoch, metrics, fitness, created_at FROM epochs"
                " WHERE model_id = ?",
                [row["id"], source["id"]],
            )
        return self.model(row["id"])


def _trashed_where(
    row: str, owner: str, owner_id: str, ids: list[str] | None, before: str | None
) -> tuple[list[str], list]:
    """The conditions that pick trashed rows for a purge (`row` and `owner` are
    table prefixes): of one owner, these ids, trashed before a time."""
    where, params = [f"{row}deleted_at IS NOT NULL"], []
    if owner_id:
        where.append(f"{owner}owner_id = ?")
        params.append(owner_id)
    if ids is not None:
        where.append(f"{row}id IN ({_marks(ids)})" if ids else "0")
        params += ids
    if before:
        where.append(f"{row}deleted_at < ?")
        params.append(before)
    return where, params
