"""Laying a dataset out on disk in YOLO form, for ultralytics to train on.

Images are hard links into the blob store (copies where links are impossible),
labels are written from the database, and the folder is named by a digest of its
contents, so an unchanged dataset is laid out once and reused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import yaml

from ..blobs import BlobStore
from ..errors import Invalid
from ..store import Database


def _label_lines(labels: list[dict] | None) -> str:
    lines = []
    for label in labels or []:
        bbox = label.get("bbox")
        if bbox:
            lines.append(" ".join([str(label["classId"]), *(f"{v:.6f}" for v in bbox)]))
    return "\n".join(lines) + ("\n" if lines else "")


def materialise(
    db: Database, blobs: BlobStore, root: Path, dataset_id: str
) -> tuple[Path, str]:
    """Return (data.yaml path, content digest) of the dataset laid out under root."""
    dataset = db.dataset(dataset_id)
    if dataset is None:
        raise Invalid("the training dataset no longer exists")
    images = db.all_images(dataset_id)
    if not images:
        raise Invalid(f"dataset {dataset['slug']} has no images")
    if not any(img["labels"] is not None for img in images):
        raise Invalid(f"dataset {dataset['slug']} has no labeled image")
    digest = hashlib.sha256(
        json.dumps(
            [
                dataset["class_names"],
                [(i["id"], i["hash"], i["split"], i["labels"]) for i in images],
            ],
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    target = root / dataset_id / digest
    data_yaml = target / "data.yaml"
    if data_yaml.exists():
        return data_yaml, digest
    (root / dataset_id).mkdir(parents=True, exist_ok=True)
    # A private staging folder, renamed into place at the end: two jobs laying out
    # the same version never see each other's half-built folder.
    staging = Path(tempfile.mkdtemp(prefix=f"{digest}.", dir=root / dataset_id))
    try:
        _lay_out(blobs, images, dataset, staging, target)
        try:
            staging.rename(target)
        except OSError:
            if not data_yaml.exists():
                raise  # not a lost race: a real failure
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return data_yaml, digest


def _lay_out(
    blobs: BlobStore, images: list[dict], dataset: dict, staging: Path, target: Path
) -> None:
    splits = set()
    for image in images:
        split = image["split"]
        splits.add(split)
        name = f"{image['id']}.{image['ext']}"
        image_dir = staging / "images" / split
        label_dir = staging / "labels" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        source = blobs.image_path(image["hash"], image["ext"])
        try:
            os.link(source, image_dir / name)
        except OSError:
            shutil.copyfile(source, image_dir / name)
        if image["labels"] is not None:
            (label_dir / f"{image['id']}.txt").write_text(_label_lines(image["labels"]))
    names = dataset["class_names"] or ["class0"]
    doc = {
        "path": str(target),
        "train": "images/train" if "train" in splits else "images/val",
        # Ultralytics needs a validation split; a dataset without one validates on train.
        "val": "images/val" if "val" in splits else "images/train",
        "names": dict(enumerate(names)),
    }
    if "test" in splits:
        doc["test"] = "images/test"
    if "train" not in splits and "val" not in splits:
        raise Invalid("the dataset has no train or val images")
    (staging / "data.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
