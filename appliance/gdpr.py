"""Everything a person owns, as one archive; and the removal of it all.

The export is a zip: account.json (profile, keys without their hashes, teams),
datasets/<slug>/dataset.json with its images, projects/<slug>/project.json and each
model's weights."""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Callable
from pathlib import Path

from .blobs import BlobStore
from .store import Database

logger = logging.getLogger(__name__)

_PRIVATE_USER_FIELDS = ("password_hash",)


def _dump(value: object) -> str:
    return json.dumps(value, indent=2, default=str)


def build_export(
    db: Database,
    blobs: BlobStore,
    user_id: str,
    target: Path,
    progress: Callable[[float, str], None],
) -> int:
    """Write the archive to target (atomically); returns its size in bytes."""
    user = db.user_by_id(user_id)
    account = {k: v for k, v in user.items() if k not in _PRIVATE_USER_FIELDS}
    account["apiKeys"] = db.api_keys(user_id)
    account["teams"] = [
        {"username": t["username"], "role": t["role"]} for t in db.teams_of(user_id)
    ]
    datasets = db.query("SELECT id FROM datasets WHERE owner_id = ?", [user_id])
    projects = db.query("SELECT id FROM projects WHERE owner_id = ?", [user_id])
    steps = max(len(datasets) + len(projects), 1)
    with (
        blobs.writer(target) as handle,
        zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive,
    ):
        archive.writestr("account.json", _dump(account))
        for done, row in enumerate(datasets, start=1):
            dataset = db.dataset(row["id"])
            images = db.all_images(row["id"])
            base = f"datasets/{dataset['slug']}"
            archive.writestr(
                f"{base}/dataset.json", _dump({**dataset, "images": images})
            )
            for image in images:
                path = blobs.image_path(image["hash"], image["ext"])
                if path.exists():
                    archive.write(
                        path,
                        f"{base}/images/{image['split']}/{image['id']}.{image['ext']}",
                    )
            progress(90.0 * done / steps, f"dataset {dataset['slug']}")
        for done, row in enumerate(projects, start=len(datasets) + 1):
            project = db.project(row["id"])
            models = db.models_of_project(row["id"], 10_000, trashed=True)
            base = f"projects/{project['slug']}"
            archive.writestr(
                f"{base}/project.json", _dump({**project, "models": models})
            )
            for model in models:
                weights = blobs.path("models", model["id"], "best.pt")
                if weights.exists():
                    archive.write(weights, f"{base}/models/{model['slug']}/best.pt")
            progress(90.0 * done / steps, f"project {project['slug']}")
    return target.stat().st_size


def delete_everything(db: Database, blobs: BlobStore, owner_id: str) -> dict[str, int]:
    """Remove a workspace and all it owns, in one transaction; then its files."""
    model_ids = [
        r["id"]
        for r in db.query(
            "SELECT m.id FROM models m JOIN projects p ON p.id = m.project_id WHERE p.owner_id = ?",
            [owner_id],
        )
    ]
    counts = {
        "datasets": db.scalar(
            "SELECT count(*) FROM datasets WHERE owner_id = ?", [owner_id]
        ),
        "projects": db.scalar(
            "SELECT count(*) FROM projects WHERE owner_id = ?", [owner_id]
        ),
        "models": len(model_ids),
    }
    with db.atomic() as conn:
        conn.execute("DELETE FROM datasets WHERE owner_id = ?", [owner_id])
        conn.execute("DELETE FROM projects WHERE owner_id = ?", [owner_id])
        conn.execute("DELETE FROM users WHERE id = ?", [owner_id])
    for model_id in model_ids:
        blobs.remove_tree("models", model_id)
    for job in db.query(
        "SELECT id FROM jobs WHERE kind = 'gdpr_export' AND subject_id = ?", [owner_id]
    ):
        blobs.remove_tree("gdpr", job["id"])
    blobs.remove_tree("icons", owner_id)
    logger.info("deleted workspace %s: %s", owner_id, counts)
    return counts
