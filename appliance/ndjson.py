"""Ultralytics NDJSON export: the file stock `ultralytics` downloads for
`ul://owner/datasets/slug` and converts with its own converter.

Line one describes the dataset; each further line is one image with a signed,
content-addressed URL (a 32-hex stem, so the client can share files between
datasets) and its labels as the rows of its task (see labels.to_row).

The export is lossless for a later re-import: the image's own name, split,
labels of every task (an empty list stays distinguishable from "not labeled"),
its `metadata`, the class names and, for pose, `kpt_shape` and `flip_idx`.
Records are built without URLs (`records`), so that what a version keeps and
what a digest covers never holds a signature; `lines` adds fresh ones."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import PurePosixPath
from typing import Any

from .labels import NDJSON_KEYS, infer_kpt_shape, to_row
from .signing import Signer

_SAME_EXT = {"jpg": {"jpg", "jpeg"}, "jpeg": {"jpg", "jpeg"}, "tif": {"tif", "tiff"}}


def image_path(image: dict) -> str:
    """The appliance path of an image blob (signed to become its URL)."""
    return f"/files/images/{image['hash'][:2]}/{image['hash']}.{image['ext']}"


def _file_name(image: dict) -> str:
    """The image's own name, with the stored extension when the bytes were
    converted on ingest (e.g. a HEIC kept as JPEG)."""
    name = PurePosixPath(image["name"] or f"{image['hash']}.{image['ext']}").name
    stem, _, suffix = name.rpartition(".")
    ext = image["ext"].lower()
    if stem and suffix.lower() in _SAME_EXT.get(ext, {ext}):
        return name
    return f"{stem or name}.{ext}"


def annotations(task: str, labels: list[dict] | None) -> dict[str, list]:
    """The image's `annotations` object: `{}` when it has no labels at all,
    `{key: []}` when it was labeled as background."""
    if labels is None:
        return {}
    rows = [row for row in (to_row(task, label) for label in labels) if row]
    if task == "classify":
        return {"classification": rows[0][:1]} if rows else {}
    return {NDJSON_KEYS[task]: rows}


def kpt_shape(dataset: dict, images: list[dict]) -> list[int] | None:
    """A pose dataset's [keypoints, dims]: its metadata's, else from the labels."""
    meta = dataset.get("metadata") or {}
    shape = meta.get("kptShape")
    if isinstance(shape, list) and len(shape) == 2:
        return [int(shape[0]), int(shape[1])]
    return infer_kpt_shape(
        [label for image in images for label in image.get("labels") or []]
    )


def header(
    dataset: dict, images: list[dict], base_url: str, version: int | None = None
) -> dict[str, Any]:
    names = dataset["class_names"] or []
    out: dict[str, Any] = {
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
    if version is not None:
        out["version"] = version
    if dataset["task"] == "pose":
        shape = kpt_shape(dataset, images)
        if shape:
            out["kpt_shape"] = shape
        flip = (dataset.get("metadata") or {}).get("flipIdx")
        if isinstance(flip, list):
            out["flip_idx"] = flip
    return out


def record(task: str, image: dict) -> dict[str, Any]:
    """One image line without its URL."""
    out: dict[str, Any] = {
        "type": "image",
        "file": _file_name(image),
        "width": image["width"],
        "height": image["height"],
        "split": image["split"],
        "annotations": annotations(task, image.get("labels")),
    }
    metadata = image.get("metadata")
    if metadata:
        out["metadata"] = metadata
    return out


def lines(
    dataset: dict,
    images: list[dict],
    signer: Signer,
    base_url: str,
    *,
    version: int | None = None,
) -> Iterator[str]:
    """The NDJSON file, line by line, with freshly signed image URLs."""
    yield _dump(header(dataset, images, base_url, version))
    for image in images:
        line = record(dataset["task"], image)
        line["url"] = signer.url(image_path(image))
        yield _dump(line)


def content_digest(dataset: dict, images: list[dict]) -> str:
    """What the dataset's content is: no signature, no timestamp, no image id
    and no order (re-adding the same picture with the same labels is no change)."""
    state = [
        dataset["task"],
        dataset["class_names"] or [],
        kpt_shape(dataset, images) if dataset["task"] == "pose" else None,
        (dataset.get("metadata") or {}).get("flipIdx"),
        sorted(
            _dump(
                [
                    image["hash"],
                    image["ext"],
                    image["name"],
                    image.get("labels"),
                    record(dataset["task"], image),
                ]
            )
            for image in images
        ),
    ]
    return hashlib.sha256(_dump(state).encode()).hexdigest()[:16]


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
