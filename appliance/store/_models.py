"""Projects, models, their per-epoch metrics and exports."""

from __future__ import annotations

from typing import Any

from ..ids import new_id, now

_MODEL_SELECT = (
    "SELECT m.*, p.slug AS project, p.name AS project_name, p.owner_id AS owner_id,"
    " p.visibility AS visibility, p.deleted_at AS project_deleted_at,"
    " u.username AS owner"
    " FROM models m JOIN projects p ON p.id = m.project_id JOIN users u ON u.id = p.owner_id"
)


class ModelsMixin:
    # -- projects ----------------------------------------------------------

    def create_project(self, **fields: Any) -> dict[str, Any]:
        stamp = now()
        row = {"id": new_id(), "created_at": stamp, "updated_at": stamp, **fields}
        with self.atomic() as db:
            db["projects"].insert(row)
        return self.project(row["id"])

    def project(self, project_id: str) -> dict[str, Any] | None:
        return self.query_one(
            "SELECT p.*, u.username AS owner FROM projects p JOIN users u ON u.id = p.owner_id"
            " WHERE p.id = ?",
            [project_id],
        )

    def update_project(self, project_id: str, **fields: Any) -> None:
        fields["updated_at"] = now()
        with self.atomic() as db:
            db["projects"].update(project_id, fields)

    def project_by_slug(self, owner_id: str, slug: str) -> dict[str, Any] | None:
        row = self.query_one(
            "SELECT id FROM projects WHERE owner_id = ? AND slug = ?", [owner_id, slug]
        )
        return self.project(row["id"]) if row else None

    # -- models ------------------------------------------------------------

    def create_model(self, **fields: Any) -> dict[str, Any]:
        stamp = now()
        row = {
            "id": new_id(),
            "status": "pending",
            "created_at": stamp,
            "updated_at": stamp,
            **fields,
        }
        with self.atomic() as db:
            db["models"].insert(row)
        return self.model(row["id"])

    def model(self, model_id: str) -> dict[str, Any] | None:
        return self.query_one(f"{_MODEL_SELECT} WHERE m.id = ?", [model_id])

    def model_by_slug(self, project_id: str, slug: str) -> dict[str, Any] | None:
        return self.query_one(
            f"{_MODEL_SELECT} WHERE m.project_id = ? AND m.slug = ?", [project_id, slug]
        )

    def models_of_project(
        self, project_id: str, limit: int = 100, *, trashed: bool = False
    ) -> list[dict[str, Any]]:
        """A project's models, newest first; those in the trash only with
        `trashed`."""
        hide = "" if trashed else " AND m.deleted_at IS NULL"
        return self.query(
            f"{_MODEL_SELECT} WHERE m.project_id = ?{hide}"
            " ORDER BY m.created_at DESC LIMIT ?",
            [project_id, limit],
        )

    def update_model(self, model_id: str, **fields: Any) -> None:
        fields["updated_at"] = now()
        with self.atomic() as db:
            db["models"].update(model_id, fields)

    def record_epoch(
        self, model_id: str, epoch: int, metrics: dict, fitness: float | None
    ) -> None:
        with self.atomic() as db:
            db["epochs"].upsert(
                {
                    "model_id": model_id,
                    "epoch": epoch,
                    "metrics": metrics,
                    "fitness": fitness,
                    "created_at": now(),
                },
                pk=("model_id", "epoch"),
            )

    def epochs(self, model_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT epoch, metrics, fitness, created_at FROM epochs WHERE model_id = ? ORDER BY epoch",
            [model_id],
        )

    def clear_epochs(self, model_id: str) -> None:
        with self.atomic() as db:
            db.execute("DELETE FROM epochs WHERE model_id = ?", [model_id])

    # -- exports -----------------------------------------------------------

    def create_export(self, **fields: Any) -> dict[str, Any]:
        stamp = now()
        row = {
            "id": new_id(),
            "status": "queued",
            "created_at": stamp,
            "updated_at": stamp,
            **fields,
        }
        with self.atomic() as db:
            db["exports"].insert(row)
        return self.export(row["id"])

    def export(self, export_id: str) -> dict[str, Any] | None:
        return self.query_one("SELECT * FROM exports WHERE id = ?", [export_id])

    def exports_of(
        self, model_id: str, status: str | None, limit: int
    ) -> list[dict[str, Any]]:
        sql, params = "SELECT * FROM exports WHERE model_id = ?", [model_id]
        if status:
            sql += " AND status = ?"
            params.append(status)
        return self.query(sql + " ORDER BY created_at DESC LIMIT ?", [*params, limit])

    def update_export(self, export_id: str, **fields: Any) -> None:
        fields["updated_at"] = now()
        with self.atomic() as db:
            db["exports"].update(export_id, fields)
