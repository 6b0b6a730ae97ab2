"""A dataset's latest embedding analysis, and the image reads that auto-annotation
and the layout need."""

from __future__ import annotations

from typing import Any

from ..ids import now


class EmbeddingsMixin:
    def analysis(self, dataset_id: str) -> dict[str, Any] | None:
        return self.query_one(
            "SELECT * FROM dataset_analyses WHERE dataset_id = ?", [dataset_id]
        )

    def save_analysis(self, dataset_id: str, **fields: Any) -> None:
        row = {"dataset_id": dataset_id, "analyzed_at": now(), **fields}
        with self.atomic() as db:
            db["dataset_analyses"].upsert(row, pk="dataset_id")

    def delete_analysis(self, dataset_id: str) -> None:
        with self.atomic() as db:
            db.execute(
                "DELETE FROM dataset_analyses WHERE dataset_id = ?", [dataset_id]
            )

    def latest_image_at(self, dataset_id: str) -> str | None:
        return self.scalar(
            "SELECT max(created_at) FROM images WHERE dataset_id = ?", [dataset_id]
        )

    def image(self, image_id: str) -> dict[str, Any] | None:
        return self.query_one("SELECT * FROM images WHERE id = ?", [image_id])

    def image_refs(self, dataset_id: str) -> list[dict[str, Any]]:
        """Every image's id, hash and ext, in id order (the analysis' row order)."""
        return self.query(
            "SELECT id, hash, ext FROM images WHERE dataset_id = ? ORDER BY id",
            [dataset_id],
        )

    def images_by_id(self, dataset_id: str, ids: list[str]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            marks = ",".join("?" for _ in chunk)
            for row in self.query(
                "SELECT id, split, labels, label_count, width, height, bytes"
                f" FROM images WHERE dataset_id = ? AND id IN ({marks})",
                [dataset_id, *chunk],
            ):
                out[row["id"]] = row
        return out

    def images_to_annotate(
        self, dataset_id: str, *, only_unlabeled: bool, image_ids: list[str] | None
    ) -> list[dict[str, Any]]:
        where, params = ["dataset_id = ?"], [dataset_id]
        if only_unlabeled:
            where.append("(labels IS NULL OR label_count = 0)")
        sql = (
            f"SELECT id, hash, ext FROM images WHERE {' AND '.join(where)} ORDER BY id"
        )
        rows = self.query(sql, params)
        if image_ids is not None:
            wanted = set(image_ids)
            rows = [r for r in rows if r["id"] in wanted]
        return rows

    def trained_models_of_dataset(self, dataset_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT id FROM models WHERE dataset_id = ? ORDER BY completed_at DESC, id",
            [dataset_id],
        )
