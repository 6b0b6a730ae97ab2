"""Images: pages and selections of a dataset's images, signed image URLs, one
image's fields, labels and metadata, and bulk moves and deletes.

Both route families: the contract's `/api/images/{imageId}` and
`/api/datasets/{owner}/{dataset}/images`, and the seed's
`/api/datasets/{datasetId}/images/...` (images named by hash there). Every write
needs edit rights on the image's dataset; a dataset the caller may not see
hides its images with 404."""

from __future__ import annotations

import json
import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from .. import labels as label_rules
from ..errors import Conflict, Forbidden, Invalid, NotFound
from ..ids import IMAGE_ID_RE
from ..ingest.layout import MAX_CLASSES
from ..serialize import image_detail_json, image_json, image_path
from ..store._dataset_ops import IMAGE_ORDER, ImageFilter
from ..sweep import sweep_images
from ..web import (
    can_edit,
    can_see,
    field,
    q_bool,
    q_choice,
    q_int,
    reply,
    require_user,
    services,
)
from .datasets import CONFLICT_POLICIES, SPLITS, dataset_of, write_body

#: The contract's batch caps.
MAX_SELECTED = 1000
MAX_BULK = 1000
MAX_URLS = 100
MAX_LABELS = 10_000
_CLASS_IDS = re.compile(r"^(?:\d+(?:,\d+)*)?$")
_HASH = re.compile(r"^[0-9a-f]{32}$")


# -- reading a request -------------------------------------------------------


def _image_ids(body: dict, most: int) -> list[str]:
    """`imageIds`: 1..most 24-hex ids, lower-cased, each once, in order."""
    values = field(body, "imageIds", list, required=True)
    if not values:
        raise Invalid("imageIds must name at least one image")
    if len(values) > most:
        raise Invalid(f"imageIds holds at most {most} ids")
    ids = []
    for value in values:
        if not isinstance(value, str) or not IMAGE_ID_RE.match(value.lower()):
            raise Invalid("imageIds must hold 24-character hexadecimal image ids")
        ids.append(value.lower())
    return list(dict.fromkeys(ids))


def _filter(request: Request) -> ImageFilter:
    params = request.query_params
    search = params.get("search") or params.get("q") or None
    if search is not None and len(search) > 200:
        raise Invalid("search must be at most 200 characters")
    class_ids = None
    if "classIds" in params:
        raw = params["classIds"]
        if len(raw) > 1000 or not _CLASS_IDS.match(raw):
            raise Invalid("classIds must be comma-separated class ids")
        class_ids = [int(c) for c in raw.split(",")] if raw else []
        if any(c >= MAX_CLASSES for c in class_ids):
            raise Invalid(f"classIds must be below {MAX_CLASSES}")
    return ImageFilter(
        split=q_choice(request, "split", SPLITS, None),
        has_label=q_bool(request, "hasLabel", None),
        has_error=q_bool(request, "hasError", None),
        class_ids=class_ids,
        search=search,
    )


def _flags(request: Request) -> dict[str, bool]:
    return {
        "thumbnails": q_bool(request, "includeThumbnails", True),
        "image_urls": q_bool(request, "includeImageUrls", False),
        "labels": q_bool(request, "includeLabels", False),
    }


def _dataset_for(request: Request, dataset_id: str, *, edit: bool) -> dict:
    """An image's dataset, hidden (404) from callers who may not see it or
    while it is in the trash; with edit, the caller must be an editor."""
    if edit:
        require_user(request)
    dataset = services(request).db.dataset(dataset_id)
    if (
        dataset is None
        or dataset.get("deleted_at")
        or not can_see(request, dataset["owner_id"], dataset["visibility"])
    ):
        raise NotFound("Image not found")
    if edit and not can_edit(request, dataset["owner_id"]):
        raise Forbidden("You cannot change this dataset's images")
    return dataset


def _one_image(request: Request, *, edit: bool = False) -> tuple[dict, dict]:
    """The image `/api/images/{image_id}` names, and its dataset."""
    image_id = request.path_params["image_id"].lower()
    if not IMAGE_ID_RE.match(image_id):
        raise Invalid("image ids are 24 hexadecimal characters")
    image = services(request).db.image(image_id)
    if image is None:
        if edit:
            require_user(request)
        raise NotFound("Image not found")
    return image, _dataset_for(request, image["dataset_id"], edit=edit)


def _batch(
    request: Request, ids: list[str], dataset: dict | None, *, edit: bool
) -> tuple[list[dict], dict]:
    """Images by id, all of one dataset (the named one, when given); any id
    that is missing or elsewhere refuses the whole batch."""
    rows = services(request).db.images_by_ids(ids)
    owners = {r["dataset_id"] for r in rows}
    if len(rows) != len(ids) or (dataset is not None and owners != {dataset["id"]}):
        raise NotFound("Image not found")
    if len(owners) > 1:
        raise NotFound("Images belong to different datasets")
    if dataset is None:
        dataset = _dataset_for(request, owners.pop(), edit=edit)
    return rows, dataset


def _checked_labels(request: Request, dataset: dict, body: dict) -> list[dict]:
    raw = field(body, "labels", list, required=True)
    if len(raw) > MAX_LABELS:
        raise Invalid(f"an image holds at most {MAX_LABELS} labels")
    task, count = dataset["task"], len(dataset["class_names"] or [])
    metadata = dataset["metadata"] or {}
    shape = metadata.get("kptShape")
    checked = label_rules.check_all(task, raw, count, shape)
    if task == "pose" and not shape:
        # The first pose labels saved set the dataset's one keypoint shape.
        shape = label_rules.infer_kpt_shape(checked)
        if shape:
            checked = label_rules.check_all(task, raw, count, shape)
            services(request).db.update_dataset(
                dataset["id"], metadata={**metadata, "kptShape": shape}
            )
    return checked


# -- listing -----------------------------------------------------------------


def _page_reply(request: Request, dataset: dict, rows: list[dict]) -> dict:
    signer = services(request).signer
    flags = _flags(request)
    errors = services(request).db.error_count(dataset["id"])
    return {
        "images": [
            image_json(r, signer, blobs=services(request).blobs, **flags) for r in rows
        ],
        "classes": dataset["class_names"] or [],
        "errorCount": errors,
    }


async def list_images(request: Request):
    """GET .../images: a page of images, by offset or after a `cursor` image."""
    dataset = dataset_of(request)
    where = _filter(request)
    limit = q_int(request, "limit", 50, 1, 5000)
    offset = q_int(request, "offset", 0, 0, 10**9)
    sort = q_choice(request, "sort", frozenset(IMAGE_ORDER), "newest")
    after = None
    if cursor := request.query_params.get("cursor"):
        db = services(request).db
        # A page may end on an image deleted since: its tombstone keeps its place.
        after = db.image(cursor.lower()) or db.image_tombstone(cursor.lower())
        if (
            not IMAGE_ID_RE.match(cursor.lower())
            or after is None
            or after["dataset_id"] != dataset["id"]
        ):
            raise Invalid("cursor must be the id of an image of this dataset")
    rows, total, more = services(request).db.image_page(
        dataset["id"],
        where,
        sort=sort,
        limit=limit,
        offset=offset,
        after=after,
        count=q_bool(request, "includeTotal", True),
    )
    out = _page_reply(request, dataset, rows)
    out["hasMore"] = more
    if total is not None:
        out["total"] = total
    if more:
        out["nextCursor"] = rows[-1]["id"]
    return reply(out)


async def selected_images(request: Request):
    """POST .../images: the named images (those of this dataset that match the
    query's filters), in the query's sort order."""
    dataset = dataset_of(request)
    ids = _image_ids(await write_body(request), MAX_SELECTED)
    where = _filter(request)
    where.ids = ids
    sort = q_choice(request, "sort", frozenset(IMAGE_ORDER), "newest")
    rows, _, _ = services(request).db.image_page(
        dataset["id"], where, sort=sort, limit=len(ids), count=False
    )
    out = _page_reply(request, dataset, rows)
    out.update(total=len(rows), hasMore=False)
    return reply(out)


# -- signed URLs -------------------------------------------------------------


async def image_urls(request: Request):
    """POST /api/images/urls: signed full-size and thumbnail URLs by image id."""
    ids = _image_ids(await write_body(request), MAX_URLS)
    rows = services(request).db.images_by_ids(ids)
    if len(rows) != len(ids):
        raise NotFound("Image not found")
    if len({r["dataset_id"] for r in rows}) > 1:
        raise Invalid("imageIds must all belong to one dataset")
    _dataset_for(request, rows[0]["dataset_id"], edit=False)
    signer = services(request).signer
    urls = {r["id"]: signer.url(image_path(r)) for r in rows}
    return reply({"urls": urls, "thumbnails": dict(urls), "depths": {}})


async def image_urls_by_hash(request: Request):
    """POST /api/datasets/{id}/images/urls (seed): signed URLs keyed by image
    hash, for the hashes this dataset holds."""
    dataset = dataset_of(request)
    hashes = field(await write_body(request), "hashes", list, required=True)
    if not hashes or len(hashes) > MAX_URLS:
        raise Invalid(f"hashes must name 1 to {MAX_URLS} images")
    if not all(isinstance(h, str) and _HASH.match(h) for h in hashes):
        raise Invalid("hashes must be 32-character hexadecimal image hashes")
    rows = services(request).db.images_by_hashes(dataset["id"], list(set(hashes)))
    signer = services(request).signer
    urls = {r["hash"]: signer.url(image_path(r)) for r in rows}
    return reply({"urls": urls, "thumbnails": dict(urls)})


# -- one image ---------------------------------------------------------------


async def get_image(request: Request):
    image, dataset = _one_image(request)
    retained = services(request).db.retained_by_version(dataset["id"], image["hash"])
    return reply(image_detail_json(image, dataset, retained=retained))


def _metadata(body: dict) -> dict:
    metadata = field(body, "metadata", dict)
    if any(len(k) > 128 for k in metadata):
        raise Invalid("metadata keys must be at most 128 characters")
    if len(json.dumps(metadata, separators=(",", ":"))) > 500_000:
        raise Invalid("metadata must be at most 500,000 characters")
    return metadata


async def patch_image(request: Request):
    """PATCH /api/images/{imageId}: replace the labels or the custom metadata
    (or move the image to another split)."""
    image, dataset = _one_image(request, edit=True)
    body = await write_body(request)
    unknown = sorted(set(body) - {"labels", "metadata", "split", "conflictPolicy"})
    if unknown or not {"labels", "metadata", "split"} & set(body):
        raise Invalid("send labels, metadata or split")
    db = services(request).db
    fields: dict = {}
    if "labels" in body:
        checked = _checked_labels(request, dataset, body)
        fields.update(labels=checked, label_count=len(checked))
    if "metadata" in body:
        fields["metadata"] = _metadata(body)
    if "split" in body:
        _move(request, dataset, [image["id"]], body)
    if fields:
        db.update_image(image, **fields)
    if "labels" in body:
        return reply({"success": True, "labels": checked, "labelCount": len(checked)})
    current = db.image(image["id"]) or image
    return reply(
        {
            "metadata": current["metadata"] or {},
            "updatedAt": current["updated_at"] or current["created_at"],
        }
    )


async def _free(request: Request, images: list[dict]) -> None:
    """Remove the files of deleted images that nothing else uses any more."""
    svc = services(request)
    hashes = [image["hash"] for image in images]
    await run_in_threadpool(sweep_images, svc.db, svc.blobs, hashes)


async def delete_image(request: Request):
    image_id = request.path_params["image_id"].lower()
    gone = services(request).db.image_tombstone(image_id)
    if gone is not None and services(request).db.image(image_id) is None:
        _dataset_for(request, gone["dataset_id"], edit=True)
        raise Conflict("Image already deleted")
    image, dataset = _one_image(request, edit=True)
    services(request).db.delete_images(dataset["id"], [image["id"]])
    await _free(request, [image])
    return reply({"success": True, "deletedImageId": image["id"], "deletedCount": 1})


# -- bulk --------------------------------------------------------------------


def _move(request: Request, dataset: dict, ids: list[str], body: dict) -> dict:
    split = field(body, "split", str, required=True)
    if split not in SPLITS:
        raise Invalid("split must be train, val or test")
    policy = field(body, "conflictPolicy", str)
    if policy is not None and policy not in CONFLICT_POLICIES:
        raise Invalid(f"conflictPolicy must be one of: {', '.join(CONFLICT_POLICIES)}")
    result = services(request).db.move_images(dataset["id"], ids, split, policy)
    if policy is None and result.conflicts:
        raise Conflict(
            f"{result.conflicts} image(s) clash by file name or content with images"
            f" in {split}; send conflictPolicy skip, keep_both or replace"
        )
    return {
        "success": True,
        "modifiedCount": result.moved,
        "skippedCount": result.skipped,
        "targetSplit": split,
    }


def _only(body: dict, allowed: set[str]) -> dict:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(unknown)}")
    return body


def _named_dataset(request: Request) -> dict | None:
    """The dataset a seed bulk route names (editable), or None on /api/images."""
    if "dataset_id" in request.path_params:
        return dataset_of(request, edit=True)
    require_user(request)
    return None


async def bulk_move(request: Request):
    dataset = _named_dataset(request)
    body = _only(await write_body(request), {"imageIds", "split", "conflictPolicy"})
    ids = _image_ids(body, MAX_BULK)
    _, dataset = _batch(request, ids, dataset, edit=True)
    return reply(_move(request, dataset, ids, body))


async def bulk_delete(request: Request):
    dataset = _named_dataset(request)
    ids = _image_ids(_only(await write_body(request), {"imageIds"}), MAX_BULK)
    rows, dataset = _batch(request, ids, dataset, edit=True)
    deleted = services(request).db.delete_images(dataset["id"], ids)
    await _free(request, rows)
    return reply({"success": True, "deletedCount": deleted, "deletedImageIds": ids})


# -- seed routes by image hash -------------------------------------------------


def _image_by_hash(request: Request, dataset: dict) -> dict:
    image = services(request).db.image_by_hash(
        dataset["id"], request.path_params["hash"]
    )
    if image is None:
        raise NotFound("Image not found")
    return image


async def labels_by_hash(request: Request):
    dataset = dataset_of(request)
    image = _image_by_hash(request, dataset)
    return reply(
        {"labels": image["labels"] or [], "classNames": dataset["class_names"] or []}
    )


async def put_labels_by_hash(request: Request):
    dataset = dataset_of(request, edit=True)
    image = _image_by_hash(request, dataset)
    checked = _checked_labels(request, dataset, await write_body(request))
    services(request).db.update_image(image, labels=checked, label_count=len(checked))
    return reply({"success": True, "labels": checked, "labelCount": len(checked)})


async def delete_by_hash(request: Request):
    dataset = dataset_of(request, edit=True)
    image = _image_by_hash(request, dataset)
    services(request).db.delete_images(dataset["id"], [image["id"]])
    await _free(request, [image])
    return reply({"success": True})


ID = "/api/datasets/{dataset_id:id}"
SLUG = "/api/datasets/{owner}/{dataset}"

# Literal segments (bulk, urls) come before the `{hash}` and `{image_id}` ones.
routes = [
    Route("/api/images/urls", image_urls, methods=["POST"]),
    Route("/api/images/bulk", bulk_move, methods=["PATCH"]),
    Route("/api/images/bulk", bulk_delete, methods=["DELETE"]),
    Route("/api/images/{image_id}", get_image, methods=["GET"]),
    Route("/api/images/{image_id}", patch_image, methods=["PATCH"]),
    Route("/api/images/{image_id}", delete_image, methods=["DELETE"]),
    Route(f"{ID}/images", list_images, methods=["GET"]),
    Route(f"{ID}/images", selected_images, methods=["POST"]),
    Route(f"{ID}/images/urls", image_urls_by_hash, methods=["POST"]),
    Route(f"{ID}/images/bulk", bulk_move, methods=["PATCH"]),
    Route(f"{ID}/images/bulk", bulk_delete, methods=["DELETE"]),
    Route(f"{ID}/images/{{hash}}", delete_by_hash, methods=["DELETE"]),
    Route(f"{ID}/images/{{hash}}/labels", labels_by_hash, methods=["GET"]),
    Route(f"{ID}/images/{{hash}}/labels", put_labels_by_hash, methods=["PUT"]),
    Route(f"{SLUG}/images", list_images, methods=["GET"]),
    Route(f"{SLUG}/images", selected_images, methods=["POST"]),
]
