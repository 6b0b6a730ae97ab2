"""Datasets, their images and the per-file ingest report."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..ids import new_id, new_image_id, now

#: A dataset's counts, aggregated over its images.
STATS_COLUMNS = """count(*) AS images,
    coalesce(sum(split = 'train'), 0) AS train,
    coalesce(sum(split = 'val'), 0) AS val,
    coalesce(sum(split = 'test'), 0) AS test,
    coalesce(sum(labels IS NOT NULL), 0) AS labeled,
    coalesce(sum(label_count), 0) AS annotations,
    coalesce(sum(bytes), 0) AS bytes,
    coalesce(sum(error IS NOT NULL), 0) AS errors"""


class DatasetsMixin:
    def create_dataset(self, **fields: Any) -> dict[str, Any]:
        stamp = now()
        row = {
            "id": new_id(),
            "status": "ready",
            "created_at": stamp,
            "updated_at": stamp,
            **fields,
        }
        with self.atomic() as db:
            db["datasets"].insert(row)
        return self.dataset(row["id"])

    def dataset(self, dataset_id: str) -> dict[str, Any] | None:
        return self.query_one(
            "SELECT d.*, u.username AS owner FROM datasets d JOIN users u ON u.id = d.owner_id"
            " WHERE d.id = ?",
            [dataset_id],
        )

    def dataset_by_slug(self, owner_id: str, slug: str) -> dict[str, Any] | None:
        row = self.query_one(
            "SELECT id FROM datasets WHERE owner_id = ? AND slug = ?", [owner_id, slug]
        )
        return self.dataset(row["id"]) if row else None

    def datasets_of(self, owner_id: str, limit: int) -> list[dict[str, Any]]:
        return self.query(
            "SELECT d.*, u.username AS owner FROM datasets d JOIN users u ON u.id = d.owner_id"
            " WHERE d.owner_id = ? ORDER BY d.created_at DESC LIMIT ?",
            [owner_id, limit],
        )

    def update_dataset(self, dataset_id: str, **fields: Any) -> None:
        fields["updated_at"] = now()
        with self.atomic() as db:
            db["datasets"].update(dataset_id, fields)

    def dataset_stats(self, dataset_id: str) -> dict[str, Any]:
        row = self.query_one(
            f"SELECT {STATS_COLUMNS} FROM images WHERE dataset_id = ?", [dataset_id]
        )
        return row or {}

    # -- images ------------------------------------------------------------

    def replace_images(
        self,
        dataset_id: str,
        images: Iterable[dict[str, Any]],
        report: Iterable[dict[str, Any]],
        job_id: str,
        remove: set[str] | frozenset[str] = frozenset(),
        **dataset_fields: Any,
    ) -> None:
        """Add a finished ingest's images and report in one transaction, so that a
        crash leaves the dataset exactly as it was before."""
        stamp = now()
        with self.atomic() as db:
            for digest in remove:
                db.execute(
                    "DELETE FROM images WHERE dataset_id = ? AND hash = ?",
                    [dataset_id, digest],
                )
            db["images"].insert_all(
                (
                    {
                        "id": new_image_id(),
                        "dataset_id": dataset_id,
                        "created_at": stamp,
                        **image,
                    }
                    for image in images
                ),
                batch_size=500,
            )
            db["ingest_files"].insert_all(
                (
                    {
                        "dataset_id": dataset_id,
                        "job_id": job_id,
                        "created_at": stamp,
                        **r,
                    }
                    for r in report
                ),
                batch_size=500,
            )
            dataset_fields["updated_at"] = stamp
            db["datasets"].update(dataset_id, dataset_fields)

    def image_hashes(self, dataset_id: str) -> set[str]:
        return {
            row[0]
            for row in self.db.execute(
                "SELECT hash FROM images WHERE dataset_id = ?", [dataset_id]
            )
        }

    def image_names(self, dataset_id: str) -> dict[str, set[str]]:
        """Each image name in the dataset, with the content hashes stored under it."""
        names: dict[str, set[str]] = {}
        for row in self.query(
            "SELECT name, hash FROM images WHERE dataset_id = ?", [dataset_id]
        ):
            names.setdefault(row["name"], set()).add(row["hash"])
        return names

    def hashes_in_use(self, digests: Iterable[str]) -> set[str]:
        """Those of the content hashes that an image of any dataset stores."""
        wanted, found = sorted(set(digests)), set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = self.query(
                f"SELECT DISTINCT hash FROM images WHERE hash IN ({marks})", chunk
            )
            found |= {row["hash"] for row in rows}
        return found

    def image_by_hash(self, dataset_id: str, digest: str) -> dict[str, Any] | None:
        return self.query_one(
            "SELECT * FROM images WHERE dataset_id = ? AND hash = ? ORDER BY created_at LIMIT 1",
            [dataset_id, digest],
        )

    def set_image_labels(self, image_id: str, labels: list[dict]) -> None:
        with self.atomic() as db:
            _touch_dataset_of(db, image_id)
            db["images"].update(
                image_id, {"labels": labels, "label_count": len(labels)}
            )

    def delete_image(self, image_id: str) -> None:
        with self.atomic() as db:
            _touch_dataset_of(db, image_id)
            db.execute("DELETE FROM images WHERE id = ?", [image_id])

    def all_images(self, dataset_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT * FROM images WHERE dataset_id = ? ORDER BY name, id", [dataset_id]
        )

    def ingest_report_page(
        self,
        dataset_id: str,
        job_id: str,
        offset: int,
        limit: int,
        verdict: str | None = None,
        reason: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        where, params = ["dataset_id = ?", "job_id = ?"], [dataset_id, job_id]
        for column, value in (("verdict", verdict), ("reason", reason)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        clause = " AND ".join(where)
        total = self.scalar(f"SELECT count(*) FROM ingest_files WHERE {clause}", params)
        rows = self.query(
            f"SELECT path, verdict, reason, detail FROM ingest_files WHERE {clause}"
            " ORDER BY id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return rows, total

    def ingest_report(self, dataset_id: str, job_id: str) -> list[dict[str, Any]]:
        return self.query(
            "SELECT path, verdict, reason, detail FROM ingest_files"
            " WHERE dataset_id = ? AND job_id = ? ORDER BY id",
            [dataset_id, job_id],
        )


def _touch_dataset_of(db: Any, image_id: str) -> None:
    """A change to an image is a change to its dataset (its `updated_at` keys
    cached statistics)."""
    db.execute(
        "UPDATE datasets SET updated_at = ?"
        " WHERE id = (SELECT dataset_id FROM images WHERE id = ?)",
        [now(), image_id],
    )
