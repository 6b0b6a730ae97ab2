"""Freeing disk: image files no row points at, and what deleted datasets and
finished uploads leave behind.

Images are content-addressed and shared (clones, versions and other datasets may
hold the same file), so a file goes only when no image row and no saved version
refers to its hash. An ingest writes its files before its rows; a file written
(or found already there, which touches it) within GRACE_SECONDS is therefore
kept, and a later sweep takes it if it is still unused. The server sweeps
everything once at start; deletions sweep the hashes they released."""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from .blobs import BlobStore
from .serialize import thumbnail_segments
from .store import Database

logger = logging.getLogger(__name__)

GRACE_SECONDS = 600
#: Upload sessions whose archive is kept this long after they expire (a failed
#: ingest may be retried from the same session meanwhile).
UPLOAD_KEEP_SECONDS = 24 * 3600


def _referenced(db: Database, digests: list[str]) -> set[str]:
    found: set[str] = set()
    for start in range(0, len(digests), 500):
        chunk = digests[start : start + 500]
        marks = ", ".join("?" * len(chunk))
        for table in ("images", "dataset_version_images"):
            found.update(
                row["hash"]
                for row in db.query(
                    f"SELECT DISTINCT hash FROM {table} WHERE hash IN ({marks})", chunk
                )
            )
    return found


def _old(path: Path, now: float, grace: float) -> bool:
    try:
        return now - path.stat().st_mtime >= grace
    except FileNotFoundError:
        return False


def sweep_images(
    db: Database,
    blobs: BlobStore,
    digests: Iterable[str] | None = None,
    grace: float = GRACE_SECONDS,
) -> int:
    """Delete the image files (and thumbnails) of these hashes, or of every
    stored image when None, that nothing refers to. Returns the files removed."""
    folder = blobs.root / "images"
    if digests is None:
        files = list(folder.glob("*/*.*"))
    else:
        wanted = set(digests)
        files = [
            path
            for digest in wanted
            for path in (folder / digest[:2]).glob(f"{digest}.*")
        ]
    by_hash: dict[str, list[Path]] = {}
    for path in files:
        by_hash.setdefault(path.stem, []).append(path)
    keep = _referenced(db, sorted(by_hash))
    removed, now = 0, time.time()
    for digest, paths in by_hash.items():
        if digest in keep:
            continue
        paths.append(blobs.path(*thumbnail_segments(digest)))
        for path in paths:
            if _old(path, now, grace):
                path.unlink(missing_ok=True)
                removed += 1
    if removed:
        logger.info("freed %d image file(s) no dataset or version uses", removed)
    return removed


def sweep_dataset_files(db: Database, blobs: BlobStore) -> int:
    """Remove the exports and analyses of datasets that no longer exist."""
    removed = 0
    for kind in ("ndjson", "embeddings"):
        folder = blobs.root / kind
        if not folder.is_dir():
            continue
        for child in folder.iterdir():
            if child.is_dir() and db.dataset(child.name) is None:
                shutil.rmtree(child, ignore_errors=True)
                removed += 1
    return removed


def sweep_uploads(db: Database, blobs: BlobStore) -> int:
    """Remove uploaded archives whose session was used by a finished ingest, or
    expired more than UPLOAD_KEEP_SECONDS ago."""
    folder = blobs.root / "uploads"
    if not folder.is_dir():
        return 0
    removed, now = 0, time.time()
    for child in folder.iterdir():
        session = db.upload(child.name)
        done = session is None or session["status"] == "consumed"
        if done or _old(child, now, UPLOAD_KEEP_SECONDS):
            shutil.rmtree(child, ignore_errors=True)
            removed += 1
    return removed


def sweep_all(db: Database, blobs: BlobStore) -> None:
    """Everything above, once (the server runs it in the background at start)."""
    started = time.monotonic()
    images = sweep_images(db, blobs)
    datasets = sweep_dataset_files(db, blobs)
    uploads = sweep_uploads(db, blobs)
    logger.info(
        "sweep: %d image files, %d dataset folders, %d uploads in %.1f s",
        images,
        datasets,
        uploads,
        time.monotonic() - started,
    )


def forget_upload(blobs: BlobStore, session_id: str) -> None:
    shutil.rmtree(blobs.path("uploads", session_id), ignore_errors=True)
