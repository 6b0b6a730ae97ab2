"""Ultralytics NDJSON export: the file stock `ultralytics` downloads for
`ul://owner/datasets/slug` and converts with its own converter.

Line one describes the dataset; each further line is one image with a signed,
content-addressed URL (a 32-hex stem, so the client can share files between
datasets) and its labels in YOLO order."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator

from .signing import Signer


def _annotations(task: str, labels: list[dict] | None) -> dict:
    if not labels:
        return {}
    boxes = [[lab["classId"], *lab["bbox"]] for lab in labels if lab.get("bbox")]
    return {"boxes": boxes} if task == "detect" and boxes else {}


def lines(
    dataset: dict, images: list[dict], signer: Signer, base_url: str
) -> Iterator[str]:
    names = dataset["class_names"] or []
    header = {
        "type": "dataset",
        "task": dataset["task"],
        "name": dataset["name"],
        "description": dataset["description"],
        "url": f"{base_url}/{dataset['owner']}/datasets/{dataset['slug']}",
        "class_names": {str(i): name for i, name in enumerate(names)},
        "created_at": dataset["created_at"],
        "updated_at": dataset["updated_at"],
        "bytes": sum(image["bytes"] for image in images),
    }
    yield json.dumps(header, separators=(",", ":"))
    for image in images:
        path = f"/files/images/{image['hash'][:2]}/{image['hash']}.{image['ext']}"
        record = {
            "type": "image",
            "file": f"{image['hash']}.{image['ext']}",
            "url": signer.url(path),
            "width": image["width"],
            "height": image["height"],
            "split": image["split"],
            "annotations": _annotations(dataset["task"], image["labels"]),
        }
        yield json.dumps(record, separators=(",", ":"))


def content_digest(dataset: dict, images: list[dict]) -> str:
    """What the export depends on, minus the signatures (which change every time)."""
    state = [
        dataset["class_names"],
        dataset["task"],
        [(i["id"], i["hash"], i["split"], i["labels"]) for i in images],
    ]
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
