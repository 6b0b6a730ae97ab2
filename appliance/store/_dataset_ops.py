"""Dataset and image operations beyond ingest: pages of datasets and images,
the trash, clones, class and split rewrites, image edits and moves, and the
aggregates behind class statistics. Every write also stamps the dataset's
`updated_at`, which keys the class-statistics cache."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..ids import new_id, now
from ._datasets import STATS_COLUMNS
from ._models import _MODEL_SELECT

_DATASET_SELECT = (
    "SELECT d.*, u.username AS owner FROM datasets d JOIN users u ON u.id = d.owner_id"
)
#: Sort name -> (column, direction); ties are broken by id in the same direction,
#: so a page can continue after any image (the contract's `cursor`).
#: How long a deleted image's tombstone is kept.
TOMBSTONE_DAYS = 30

IMAGE_ORDER = {
    "newest": ("created_at", "DESC"),
    "oldest": ("created_at", "ASC"),
    "name-asc": ("name", "ASC"),
    "name-desc": ("name", "DESC"),
    "size-asc": ("bytes", "ASC"),
    "size-desc": ("bytes", "DESC"),
    "width-asc": ("width", "ASC"),
    "width-desc": ("width", "DESC"),
    "height-asc": ("height", "ASC"),
    "height-desc": ("height", "DESC"),
    "labels-asc": ("label_count", "ASC"),
    "labels-desc": ("label_count", "DESC"),
}
# A 24-hex image id made in SQL, in the form of ids.new_image_id: Unix time first.
_SQL_IMAGE_ID = "printf('%08x', CAST(strftime('%s', 'now') AS INTEGER)) || lower(hex(randomblob(8)))"
_CLONED_COLUMNS = (
    "hash, ext, name, width, height, bytes, split, labels, label_count, error,"
    " metadata, created_at"
)


def _marks(values: list | tuple | set) -> str:
    return ",".join("?" for _ in values)


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


@dataclass
class ImageFilter:
    """Which images of a dataset a listing shows. `class_ids=[]` matches none,
    as the contract says of an empty classIds."""

    split: str | None = None
    has_label: bool | None = None
    has_error: bool | None = None
    class_ids: list[int] | None = None
    search: str | None = None
    ids: list[str] | None = None

    def where(self, dataset_id: str) -> tuple[str, list[Any]]:
        where, params = ["dataset_id = ?"], [dataset_id]
        if self.split:
            where.append("split = ?")
            params.append(self.split)
        if self.has_label is not None:
            where.append("labels IS NOT NULL" if self.has_label else "labels IS NULL")
        if self.has_error is not None:
            where.append("error IS NOT NULL" if self.has_error else "error IS NULL")
        if self.class_ids is not None:
            if not self.class_ids:
                where.append("0")
            else:
                where.append(
                    "EXISTS (SELECT 1 FROM json_each(images.labels) j WHERE"
                    f" json_extract(j.value, '$.classId') IN ({_marks(self.class_ids)}))"
                )
                params += self.class_ids
        if self.search:
            pattern = _like(self.search)
            where.append(
                "(name LIKE ? ESCAPE '\\' OR hash LIKE ? ESCAPE '\\'"
                " OR metadata LIKE ? ESCAPE '\\')"
            )
            params += [f"%{pattern}%", f"{pattern}%", f"%{pattern}%"]
        if self.ids is not None:
            where.append(f"id IN ({_marks(self.ids)})" if self.ids else "0")
            params += self.ids
        return " AND ".join(where), params


@dataclass
class MoveResult:
    moved: int = 0
    skipped: int = 0
    replaced: int = 0
    conflicts: int = 0


class DatasetOpsMixin:
    # -- datasets ----------------------------------------------------------

    def dataset_page(
        self,
        owner_id: str,
        *,
        private: bool,
        limit: int,
        slug: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """An owner's datasets outside the trash, newest first (public ones only
        unless `private`), and how many there are in all."""
        where, params = ["d.owner_id = ?", "d.deleted_at IS NULL"], [owner_id]
        if not private:
            where.append("d.visibility = 'public'")
        if slug is not None:
            where.append("d.slug = ?")
            params.append(slug)
        clause = " AND ".join(where)
        total = self.scalar(f"SELECT count(*) FROM datasets d WHERE {clause}", params)
        rows = self.query(
            f"{_DATASET_SELECT} WHERE {clause} ORDER BY d.created_at DESC, d.id LIMIT ?",
            [*params, limit],
        )
        return rows, total

    def stats_of(self, dataset_ids: list[str]) -> dict[str, dict[str, Any]]:
        """dataset_stats for many datasets in one query."""
        if not dataset_ids:
            return {}
        rows = self.query(
            f"SELECT dataset_id, {STATS_COLUMNS} FROM images"
            f" WHERE dataset_id IN ({_marks(dataset_ids)}) GROUP BY dataset_id",
            dataset_ids,
        )
        return {row.pop("dataset_id"): row for row in rows}

    def samples_of(
        self, dataset_ids: list[str], per: int
    ) -> dict[str, list[dict[str, Any]]]:
        """The first `per` images of each dataset (oldest first), in one query."""
        out: dict[str, list[dict[str, Any]]] = {i: [] for i in dataset_ids}
        if not dataset_ids:
            return out
        # One indexed LIMIT per dataset (images_dataset_created), in one query.
        rows = self.query(
            f"""SELECT i.* FROM datasets d JOIN images i ON i.id IN (
                  SELECT id FROM images WHERE dataset_id = d.id AND error IS NULL
                  ORDER BY created_at, id LIMIT ?)
                WHERE d.id IN ({_marks(dataset_ids)})
                ORDER BY i.dataset_id, i.created_at, i.id""",
            [per, *dataset_ids],
        )
        for row in rows:
            out[row["dataset_id"]].append(row)
        return out

    def clone_count(self, dataset_id: str) -> int:
        return self.scalar(
            "SELECT count(*) FROM datasets WHERE cloned_from = ? AND deleted_at IS NULL",
            [dataset_id],
        )

    def clone_dataset(self, source: dict, **fields: Any) -> dict[str, Any]:
        """A copy of `source` with every image and label, in one transaction. The
        image blobs are content-addressed, so the copy shares them."""
        stamp = now()
        row = {
            "id": new_id(),
            "task": source["task"],
            "class_names": source["class_names"] or [],
            "status": "ready",
            "metadata": source.get("metadata") or {},
            "details": source.get("details") or {},
            "cloned_from": source["id"],
            "created_at": stamp,
            "updated_at": stamp,
            **fields,
        }
        with self.atomic() as db:
            db["datasets"].insert(row)
            db.execute(
                f"INSERT INTO images (id, dataset_id, updated_at, {_CLONED_COLUMNS})"
                f" SELECT {_SQL_IMAGE_ID}, ?, ?, {_CLONED_COLUMNS}"
                " FROM images WHERE dataset_id = ? ORDER BY created_at, id",
                [row["id"], stamp, source["id"]],
            )
        return self.dataset(row["id"])

    # -- trash -------------------------------------------------------------

    def trash_dataset(self, dataset_id: str) -> None:
        stamp = now()
        with self.atomic() as db:
            db.execute(
                "UPDATE datasets SET deleted_at = ?, updated_at = ?"
                " WHERE id = ? AND deleted_at IS NULL",
                [stamp, stamp, dataset_id],
            )

    def trashed_dataset(self, dataset_id: str) -> dict[str, Any] | None:
        return self.query_one(
            f"{_DATASET_SELECT} WHERE d.id = ? AND d.deleted_at IS NOT NULL",
            [dataset_id],
        )

    def trashed_slug_taken(self, owner_id: str, slug: str) -> bool:
        return bool(
            self.scalar(
                "SELECT count(*) FROM datasets WHERE owner_id = ? AND slug = ?"
                " AND deleted_at IS NOT NULL",
                [owner_id, slug],
            )
        )

    def trash_page(
        self, owner_id: str, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int, int]:
        """One page of an owner's trashed datasets (most recent first) with their
        stored bytes, the number in the trash and their total bytes."""
        rows = self.query(
            """SELECT d.*, u.username AS owner,
                  (SELECT coalesce(sum(bytes), 0) FROM images i
                   WHERE i.dataset_id = d.id) AS size_bytes
                FROM datasets d JOIN users u ON u.id = d.owner_id
                WHERE d.owner_id = ? AND d.deleted_at IS NOT NULL
                ORDER BY d.deleted_at DESC, d.id LIMIT ? OFFSET ?""",
            [owner_id, limit, offset],
        )
        totals = self.query_one(
            """SELECT count(DISTINCT d.id) AS n, coalesce(sum(i.bytes), 0) AS bytes
               FROM datasets d LEFT JOIN images i ON i.dataset_id = d.id
               WHERE d.owner_id = ? AND d.deleted_at IS NOT NULL""",
            [owner_id],
        )
        return rows, totals["n"], totals["bytes"]

    def restore_dataset(self, dataset_id: str) -> None:
        with self.atomic() as db:
            db.execute(
                "UPDATE datasets SET deleted_at = NULL, updated_at = ? WHERE id = ?",
                [now(), dataset_id],
            )

    def purge_datasets(self, *, owner_id: str, ids: list[str] | None = None) -> int:
        """Delete trashed datasets for good (their images and reports go with
        them); all of the owner's when `ids` is None. Image blobs stay: other
        datasets, clones and saved versions may share them."""
        where, params = ["owner_id = ?", "deleted_at IS NOT NULL"], [owner_id]
        if ids is not None:
            where.append(f"id IN ({_marks(ids)})" if ids else "0")
            params += ids
        with self.atomic() as db:
            cursor = db.execute(
                f"DELETE FROM datasets WHERE {' AND '.join(where)}", params
            )
        return cursor.rowcount

    def purge_expired_trash(self, before: str) -> int:
        with self.atomic() as db:
            cursor = db.execute(
                "DELETE FROM datasets WHERE deleted_at IS NOT NULL AND deleted_at < ?",
                [before],
            )
        return cursor.rowcount

    # -- rewrites ----------------------------------------------------------

    def rewrite_labels(
        self,
        dataset_id: str,
        remap: Callable[[list[dict]], list[dict] | None],
        **dataset_fields: Any,
    ) -> int:
        """Pass every labelled image's labels through `remap` and update the
        dataset's fields, all in one transaction. Returns the images changed."""
        stamp = now()
        with self.atomic() as db:
            rows = db.execute(
                "SELECT id, labels FROM images WHERE dataset_id = ? AND labels IS NOT NULL",
                [dataset_id],
            ).fetchall()
            changes = []
            for image_id, text in rows:
                labels = json.loads(text)
                new = remap(labels)
                if new != labels:
                    changes.append(
                        (
                            None if new is None else json.dumps(new),
                            len(new or []),
                            stamp,
                            image_id,
                        )
                    )
            db.conn.executemany(
                "UPDATE images SET labels = ?, label_count = ?, updated_at = ?"
                " WHERE id = ?",
                changes,
            )
            db["datasets"].update(dataset_id, {**dataset_fields, "updated_at": stamp})
        return len(changes)

    def assign_splits(
        self, dataset_id: str, plan: Callable[[list[str]], list[str]]
    ) -> tuple[dict[str, int], int]:
        """Give every image the split `plan` returns for the id-ordered list of
        image ids, in one transaction. Returns the counts per split and how many
        images changed split."""
        stamp = now()
        with self.atomic() as db:
            rows = db.execute(
                "SELECT id, split FROM images WHERE dataset_id = ? ORDER BY id",
                [dataset_id],
            ).fetchall()
            splits = plan([r[0] for r in rows])
            changes = [
                (new, stamp, image_id)
                for (image_id, old), new in zip(rows, splits, strict=True)
                if new != old
            ]
            db.conn.executemany(
                "UPDATE images SET split = ?, updated_at = ? WHERE id = ?", changes
            )
            db["datasets"].update(dataset_id, {"updated_at": stamp})
        counts = {"train": 0, "val": 0, "test": 0}
        for split in splits:
            counts[split] += 1
        return counts, len(changes)

    # -- images ------------------------------------------------------------

    def image_page(
        self,
        dataset_id: str,
        where: ImageFilter,
        *,
        sort: str = "newest",
        limit: int = 50,
        offset: int = 0,
        after: dict | None = None,
        count: bool = True,
    ) -> tuple[list[dict[str, Any]], int | None, bool]:
        """One page of images: the rows, the total that match (when `count`) and
        whether more follow. `after` is the image the previous page ended on."""
        clause, params = where.where(dataset_id)
        total = (
            self.scalar(f"SELECT count(*) FROM images WHERE {clause}", params)
            if count
            else None
        )
        column, direction = IMAGE_ORDER[sort]
        if after is not None:
            op = "<" if direction == "DESC" else ">"
            clause += f" AND ({column} {op} ? OR ({column} = ? AND id {op} ?))"
            params = [*params, after[column], after[column], after["id"]]
        rows = self.query(
            f"SELECT * FROM images WHERE {clause}"
            f" ORDER BY {column} {direction}, id {direction} LIMIT ? OFFSET ?",
            [*params, limit + 1, offset],
        )
        return rows[:limit], total, len(rows) > limit

    def error_count(self, dataset_id: str) -> int:
        return self.scalar(
            "SELECT count(*) FROM images WHERE dataset_id = ? AND error IS NOT NULL",
            [dataset_id],
        )

    def image(self, image_id: str) -> dict[str, Any] | None:
        return self.query_one("SELECT * FROM images WHERE id = ?", [image_id])

    def images_by_ids(self, image_ids: list[str]) -> list[dict[str, Any]]:
        if not image_ids:
            return []
        return self.query(
            f"SELECT * FROM images WHERE id IN ({_marks(image_ids)})", image_ids
        )

    def images_by_hashes(self, dataset_id: str, hashes: list[str]) -> list[dict]:
        if not hashes:
            return []
        return self.query(
            f"SELECT * FROM images WHERE dataset_id = ? AND hash IN ({_marks(hashes)})"
            " ORDER BY created_at, id",
            [dataset_id, *hashes],
        )

    def update_image(self, image: dict, **fields: Any) -> str:
        """Change one image's fields; returns the update's time stamp."""
        stamp = now()
        with self.atomic() as db:
            db["images"].update(image["id"], {**fields, "updated_at": stamp})
            db["datasets"].update(image["dataset_id"], {"updated_at": stamp})
        return stamp

    def delete_images(self, dataset_id: str, image_ids: list[str]) -> int:
        """Delete images, leaving a tombstone of each for TOMBSTONE_DAYS: a second
        delete is told the image is gone, and a page cursor on it still works."""
        if not image_ids:
            return 0
        stamp = now()
        cutoff = (datetime.now(UTC) - timedelta(days=TOMBSTONE_DAYS)).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z"
        )
        with self.atomic() as db:
            db.execute("DELETE FROM image_tombstones WHERE deleted_at < ?", [cutoff])
            db.execute(
                "INSERT OR REPLACE INTO image_tombstones SELECT id, dataset_id, name,"
                " bytes, width, height, label_count, created_at, ? FROM images"
                f" WHERE dataset_id = ? AND id IN ({_marks(image_ids)})",
                [stamp, dataset_id, *image_ids],
            )
            cursor = db.execute(
                f"DELETE FROM images WHERE dataset_id = ? AND id IN ({_marks(image_ids)})",
                [dataset_id, *image_ids],
            )
            db["datasets"].update(dataset_id, {"updated_at": stamp})
        return cursor.rowcount

    def image_tombstone(self, image_id: str) -> dict[str, Any] | None:
        return self.query_one("SELECT * FROM image_tombstones WHERE id = ?", [image_id])

    def move_images(
        self,
        dataset_id: str,
        image_ids: list[str],
        split: str,
        policy: str | None,
    ) -> MoveResult:
        """Move images to `split`, in one transaction. An image whose file name
        or content is already in that split is a conflict: with no policy
        nothing moves and the result counts the conflicts; `skip` leaves it,
        `keep_both` moves it (renamed on a name clash) and `replace` deletes
        what it clashes with."""
        result = MoveResult()
        stamp = now()
        with self.atomic() as db:
            order = {image_id: n for n, image_id in enumerate(image_ids)}
            moving = sorted(self.images_by_ids(image_ids), key=lambda r: order[r["id"]])
            ids = {r["id"] for r in moving}
            names: dict[str, str] = {}
            hashes: dict[str, str] = {}
            for image_id, name, digest in db.execute(
                "SELECT id, name, hash FROM images WHERE dataset_id = ? AND split = ?",
                [dataset_id, split],
            ):
                if image_id not in ids:
                    names[name] = hashes[digest] = image_id
            updates, deletes = [], set()
            for image in moving:
                if image["split"] == split:
                    names[image["name"]] = hashes[image["hash"]] = image["id"]
                    continue
                name = image["name"]
                clash = {names.get(name), hashes.get(image["hash"])} - {None}
                if clash:
                    result.conflicts += 1
                    if policy in (None, "skip"):
                        result.skipped += 1
                        continue
                    if policy == "replace":
                        deletes |= clash
                        names = {k: v for k, v in names.items() if v not in clash}
                        hashes = {k: v for k, v in hashes.items() if v not in clash}
                    elif name in names:
                        name = _free_name(name, names)
                names[name] = hashes[image["hash"]] = image["id"]
                updates.append((split, name, stamp, image["id"]))
            if policy is None and result.conflicts:
                return result
            if deletes:
                db.execute(
                    f"DELETE FROM images WHERE id IN ({_marks(deletes)})", list(deletes)
                )
                updates = [u for u in updates if u[3] not in deletes]
            db.conn.executemany(
                "UPDATE images SET split = ?, name = ?, updated_at = ? WHERE id = ?",
                updates,
            )
            db["datasets"].update(dataset_id, {"updated_at": stamp})
        result.moved = len(updates)
        result.replaced = len(deletes)
        return result

    # -- statistics --------------------------------------------------------

    def class_counts(self, dataset_id: str) -> list[tuple[int, int, int]]:
        """(classId, annotations, images) for every class used, aggregated in
        SQL over the labels' JSON."""
        return [
            tuple(row)
            for row in self.db.execute(
                """SELECT json_extract(j.value, '$.classId') AS cls, count(*),
                     count(DISTINCT i.id)
                   FROM images i, json_each(i.labels) j
                   WHERE i.dataset_id = ? AND i.labels IS NOT NULL
                   GROUP BY cls""",
                [dataset_id],
            )
            if isinstance(row[0], int)
        ]

    def image_columns(self, dataset_id: str) -> Iterator[tuple]:
        """(width, height, bytes, ext, label_count) of every image, streamed."""
        return self.db.execute(
            "SELECT width, height, bytes, ext, label_count FROM images"
            " WHERE dataset_id = ?",
            [dataset_id],
        )

    def label_sample(self, dataset_id: str, limit: int) -> tuple[Iterator[tuple], int]:
        """(width, height, labels JSON) of at most `limit` labelled images, spread
        evenly over the dataset (every n-th row as stored), and how many labelled
        images there are."""
        labelled = self.scalar(
            "SELECT count(*) FROM images WHERE dataset_id = ? AND labels IS NOT NULL",
            [dataset_id],
        )
        stride = max(-(-labelled // limit), 1)
        rows = self.db.execute(
            "SELECT width, height, labels FROM images"
            " WHERE dataset_id = ? AND labels IS NOT NULL AND rowid % ? = 0 LIMIT ?",
            [dataset_id, stride, limit],
        )
        return rows, labelled

    def models_trained_on(self, dataset_id: str) -> list[dict[str, Any]]:
        return self.query(
            f"{_MODEL_SELECT} WHERE m.dataset_id = ? AND m.deleted_at IS NULL"
            " AND p.deleted_at IS NULL ORDER BY m.created_at DESC",
            [dataset_id],
        )


def _free_name(name: str, taken: dict[str, str]) -> str:
    """`name` with the first `_N` suffix before its extension that is not taken."""
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    n = 1
    while True:
        candidate = f"{stem}_{n}{dot}{ext}"
        if candidate not in taken:
            return candidate
        n += 1
