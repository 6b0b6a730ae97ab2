"""Dataset versions: numbered, immutable snapshots of a dataset's images and
labels, and restoring a dataset from one.

A version keeps rows, not files: image blobs are content-addressed and never
rewritten, so a snapshot is its image rows (without URLs) plus the dataset's
task, class names and metadata at that moment. NDJSON is rendered from those
rows when someone downloads the version, with fresh signatures."""

from __future__ import annotations

import json
from typing import Any

from ..ids import new_id, new_image_id, now

#: JSON columns, written as JSON text whatever Python type they decoded to.
_JSON = frozenset({"labels", "error", "metadata"})
#: The image columns a version keeps and a restore writes back.
_IMAGE_COLUMNS = (
    "hash",
    "ext",
    "name",
    "width",
    "height",
    "bytes",
    "split",
    "labels",
    "label_count",
    "error",
    "created_at",
)


def version_stats(dataset: dict, images: list[dict]) -> dict[str, int]:
    """The counts a version records (and a comparison starts from)."""
    splits = {"train": 0, "val": 0, "test": 0}
    for image in images:
        if image["split"] in splits:
            splits[image["split"]] += 1
    return {
        "image_count": len(images),
        "class_count": len(dataset["class_names"] or []),
        "annotation_count": sum(len(image["labels"] or []) for image in images),
        "labeled": sum(image["labels"] is not None for image in images),
        "size_bytes": sum(image["bytes"] for image in images),
        **splits,
    }


def encode(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


def _columns(image: dict, names: tuple[str, ...]) -> dict[str, Any]:
    return {
        key: encode(image.get(key)) if key in _JSON else image[key] for key in names
    }


class VersionsMixin:
    def dataset_versions(self, dataset_id: str) -> list[dict[str, Any]]:
        """A dataset's versions, newest first."""
        return self.query(
            "SELECT * FROM dataset_versions WHERE dataset_id = ? ORDER BY version DESC",
            [dataset_id],
        )

    def dataset_version(self, dataset_id: str, number: int) -> dict[str, Any] | None:
        return self.query_one(
            "SELECT * FROM dataset_versions WHERE dataset_id = ? AND version = ?",
            [dataset_id, number],
        )

    def version_images(self, version_id: str) -> list[dict[str, Any]]:
        """A version's images, shaped like rows of `images` (with their ids)."""
        rows = self.query(
            "SELECT * FROM dataset_version_images WHERE version_id = ? ORDER BY position",
            [version_id],
        )
        for row in rows:
            row["id"] = row.pop("image_id")
            del row["version_id"], row["position"]
        return rows

    def create_dataset_version(
        self,
        dataset: dict[str, Any],
        images: list[dict[str, Any]],
        content_hash: str,
        description: str,
    ) -> tuple[dict[str, Any], bool]:
        """Snapshot the dataset as its next version, or return the existing
        version with the same content; (version row, reused)."""
        stamp = now()
        with self.atomic() as db:
            same = self.query_one(
                "SELECT * FROM dataset_versions WHERE dataset_id = ? AND content_hash = ?"
                " ORDER BY version DESC LIMIT 1",
                [dataset["id"], content_hash],
            )
            if same is not None:
                return same, True
            number = 1 + (
                self.scalar(
                    "SELECT max(version) FROM dataset_versions WHERE dataset_id = ?",
                    [dataset["id"]],
                )
                or 0
            )
            row = {
                "id": new_id(),
                "dataset_id": dataset["id"],
                "version": number,
                "description": description,
                "content_hash": content_hash,
                "task": dataset["task"],
                "class_names": dataset["class_names"] or [],
                "metadata": dataset.get("metadata") or {},
                "source_updated_at": dataset["updated_at"],
                "created_at": stamp,
                **version_stats(dataset, images),
            }
            db["dataset_versions"].insert(row)
            db["dataset_version_images"].insert_all(
                (
                    {
                        "version_id": row["id"],
                        "position": position,
                        "image_id": image["id"],
                        **_columns(image, _IMAGE_COLUMNS + ("metadata",)),
                    }
                    for position, image in enumerate(images)
                ),
                batch_size=500,
            )
        return self.dataset_version(dataset["id"], number), False

    def set_version_description(self, version_id: str, description: str) -> None:
        with self.atomic() as db:
            db["dataset_versions"].update(version_id, {"description": description})

    def restore_dataset_version(self, dataset_id: str, version: dict[str, Any]) -> int:
        """Make the dataset's images, labels, class names and metadata those of
        the version, in one transaction, and mark it ready; returns the image
        count. Images keep their ids unless another dataset holds one now."""
        images = self.version_images(version["id"])
        with self.atomic() as db:
            has_metadata = "metadata" in db["images"].columns_dict
            db.execute("DELETE FROM images WHERE dataset_id = ?", [dataset_id])
            taken = {
                row[0]
                for row in db.execute(
                    "SELECT id FROM images WHERE id IN (SELECT image_id FROM"
                    " dataset_version_images WHERE version_id = ?)",
                    [version["id"]],
                )
            }
            rows = []
            for image in images:
                row = _columns(image, _IMAGE_COLUMNS)
                row["id"] = new_image_id() if image["id"] in taken else image["id"]
                row["dataset_id"] = dataset_id
                if has_metadata:
                    row["metadata"] = encode(image.get("metadata"))
                rows.append(row)
            db["images"].insert_all(rows, batch_size=500)
            db["datasets"].update(
                dataset_id,
                {
                    "class_names": version["class_names"],
                    "metadata": version["metadata"],
                    "status": "ready",
                    "processing_error": None,
                    "updated_at": now(),
                },
            )
        return len(rows)

    def retained_by_version(self, dataset_id: str, digest: str) -> bool:
        """Whether a saved version of the dataset holds an image with this hash."""
        return bool(
            self.scalar(
                "SELECT count(*) FROM dataset_version_images vi"
                " JOIN dataset_versions v ON v.id = vi.version_id"
                " WHERE v.dataset_id = ? AND vi.hash = ?",
                [dataset_id, digest],
            )
        )
