"""Dataset exports and versions, in both route families.

GET .../export is the current dataset as Ultralytics NDJSON (or, with `v`, a
saved version); POST .../export saves a numbered, immutable version (an
unchanged dataset reuses the version it already has); PATCH .../export names a
version; POST .../restore makes the dataset a saved version again.
GET .../versions/compare is an extension: the contract has no comparison."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from .. import ndjson
from ..errors import Conflict, Invalid, NotFound
from ..serialize import image_path
from ..web import Services, field, json_body, reply, services
from .datasets import ID, SLUG, dataset_of

MAX_DESCRIPTION = 200
MAX_VERSION = 10**9


def _number(value: object, name: str) -> int:
    """A version number from a query string or a JSON body."""
    if isinstance(value, str):
        if not (value.isascii() and value.isdigit()):
            raise Invalid(f"{name} must be a positive integer")
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise Invalid(f"{name} must be a positive integer")
    if value > MAX_VERSION:
        raise Invalid(f"{name} must be at most {MAX_VERSION}")
    return value


def _description(body: dict, required: bool) -> str:
    text = field(body, "description", str, required=required, default="")
    if len(text) > MAX_DESCRIPTION:
        raise Invalid(f"description must be at most {MAX_DESCRIPTION} characters")
    return text


def _version(svc: Services, dataset: dict, number: int) -> dict:
    version = svc.db.dataset_version(dataset["id"], number)
    if version is None:
        raise NotFound(f"Dataset version {number} not found")
    return version


def _not_processing(dataset: dict) -> None:
    if dataset["status"] == "processing":
        raise Conflict("the dataset is processing; try again when it is ready")


def _as_of(dataset: dict, version: dict) -> dict:
    """The dataset as it was when the version was saved (its current name and
    address, the version's task, classes and metadata)."""
    return {
        **dataset,
        "task": version["task"],
        "class_names": version["class_names"],
        "metadata": version["metadata"],
        "updated_at": version["source_updated_at"],
    }


def _write(svc: Services, target: Path, lines: Iterable[str]) -> None:
    with svc.blobs.writer(target) as handle:
        for line in lines:
            handle.write(line.encode() + b"\n")


def _version_url(svc: Services, dataset: dict, version: dict) -> str:
    """Render the version's NDJSON with freshly signed image URLs; its signed URL."""
    number = version["version"]
    name = f"{dataset['slug']}-v{number}.ndjson"
    images = svc.db.version_images(version["id"])
    lines = ndjson.lines(
        _as_of(dataset, version),
        images,
        svc.signer,
        svc.settings.base_url,
        version=number,
    )
    _write(svc, svc.blobs.path("ndjson", dataset["id"], f"v{number}", name), lines)
    return svc.signer.url(f"/files/ndjson/{dataset['id']}/v{number}/{name}")


def _current_url(svc: Services, dataset: dict) -> tuple[str, bool]:
    images = svc.db.all_images(dataset["id"])
    # The file's header carries the name and description too: a change to them
    # is a different export, though not a different version.
    header = (
        ndjson.content_digest(dataset, images),
        dataset["name"],
        dataset["description"],
    )
    digest = hashlib.sha256(json.dumps(header).encode()).hexdigest()[:16]
    name = f"{dataset['slug']}.ndjson"
    target = svc.blobs.path("ndjson", dataset["id"], digest, name)
    cached = target.exists()
    # Written again every time: the image URLs inside carry fresh signatures.
    lines = ndjson.lines(dataset, images, svc.signer, svc.settings.base_url)
    _write(svc, target, lines)
    return svc.signer.url(f"/files/ndjson/{dataset['id']}/{digest}/{name}"), cached


def _save_version(
    svc: Services, dataset: dict, description: str
) -> tuple[dict, bool, str]:
    images = svc.db.all_images(dataset["id"])
    digest = ndjson.content_digest(dataset, images)
    version, reused = svc.db.create_dataset_version(
        dataset, images, digest, description
    )
    return version, reused, _version_url(svc, dataset, version)


async def export(request: Request):
    """GET .../export[?v=N]: a signed URL to the NDJSON of the current dataset
    (`cached`: this content was exported before) or of version N."""
    dataset = dataset_of(request)
    svc = services(request)
    raw = request.query_params.get("v")
    if raw is not None:
        version = _version(svc, dataset, _number(raw, "v"))
        url = await run_in_threadpool(_version_url, svc, dataset, version)
        return reply({"downloadUrl": url, "version": version["version"]})
    _not_processing(dataset)
    url, cached = await run_in_threadpool(_current_url, svc, dataset)
    return reply({"downloadUrl": url, "cached": cached})


async def create_version(request: Request):
    """POST .../export: save the dataset as its next version."""
    dataset = dataset_of(request, edit=True)
    body = await json_body(request)
    description = _description(body, required=False)
    # The SDK may send `download`; the NDJSON is cheap to prepare, so it always is.
    field(body, "download", bool)
    _not_processing(dataset)
    version, reused, url = await run_in_threadpool(
        _save_version, services(request), dataset, description
    )
    return reply({"version": version["version"], "downloadUrl": url, "reused": reused})


async def describe_version(request: Request):
    """PATCH .../export: change a version's description (its content never changes)."""
    dataset = dataset_of(request, edit=True)
    body = await json_body(request)
    number = _number(field(body, "version", int, required=True), "version")
    description = _description(body, required=True)
    svc = services(request)
    version = _version(svc, dataset, number)
    svc.db.set_version_description(version["id"], description)
    return reply({"ok": True})


async def restore(request: Request):
    """POST .../restore: the dataset becomes the version again, in one
    transaction; the dataset reads `processing` while it runs."""
    dataset = dataset_of(request, edit=True)
    body = await json_body(request)
    number = _number(field(body, "version", int, required=True), "version")
    svc = services(request)
    version = _version(svc, dataset, number)
    _not_processing(dataset)
    svc.db.update_dataset(dataset["id"], status="processing")
    try:
        count = await run_in_threadpool(
            svc.db.restore_dataset_version, dataset["id"], version
        )
    except BaseException:
        svc.db.update_dataset(dataset["id"], status=dataset["status"])
        raise
    return reply({"version": number, "imageCount": count})


COMPARE_PAGE = 100
_CHANGE_ORDER = {"added": 0, "removed": 1, "modified": 2, "moved": 3}


async def compare(request: Request):
    """GET .../versions/compare?base=1&head=2, in the stock SDK's shape: the
    images added, removed, modified or moved from base to head, a summary on the
    first page with a preview of the first changed image, paged by `cursor`; or,
    with `hash`, that one image as each side stores it. `head` defaults to the
    dataset as it is now (an extension, reported as version 0)."""
    dataset = dataset_of(request)
    query = request.query_params
    if "base" not in query:
        raise Invalid("base is required: the version to compare from")
    cursor = query.get("cursor") or "0"
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 9:
        raise Invalid("cursor is not one this comparison gave out")
    body = await run_in_threadpool(
        _compare,
        services(request),
        dataset,
        (query["base"], query.get("head")),
        int(cursor),
        query.get("hash"),
    )
    return reply(body)


def _side(svc: Services, dataset: dict, raw: str | None, name: str) -> dict:
    """A version, or the current dataset ("current", the default), as the
    comparison reads it: number, task, class names, metadata and images."""
    if raw in (None, "", "current"):
        return {
            "version": 0,
            "task": dataset["task"],
            "classNames": dataset["class_names"] or [],
            "metadata": dataset.get("metadata") or {},
            "images": svc.db.all_images(dataset["id"]),
        }
    version = _version(svc, dataset, _number(raw, name))
    return {
        "version": version["version"],
        "task": version["task"],
        "classNames": version["class_names"] or [],
        "metadata": version.get("metadata") or {},
        "images": svc.db.version_images(version["id"]),
    }


def _named_labels(names: list[str], image: dict) -> list[str]:
    """An image's labels with class names for indices (indices shift when a
    class is deleted), as comparable strings."""
    out = []
    for label in image["labels"] or []:
        cid = label["classId"]
        name = names[cid] if 0 <= cid < len(names) else f"class{cid}"
        out.append(json.dumps({**label, "classId": name}, sort_keys=True))
    return out


def _changed_fields(old: dict, new: dict, before: Counter, after: Counter) -> list:
    checks = (
        ("labels", before != after),
        ("metadata", (old.get("metadata") or {}) != (new.get("metadata") or {})),
        ("size", (old["width"], old["height"]) != (new["width"], new["height"])),
        ("name", old["name"] != new["name"]),
        ("error", old.get("error") != new.get("error")),
    )
    return [name for name, changed in checks if changed]


def _difference(base: dict, head: dict, old: dict | None, new: dict | None) -> dict:
    """One image's change from base to head, or {} when it did not change."""
    image = new or old
    item = {"hash": image["hash"], "name": image["name"], "ext": image["ext"]}
    if old is None or new is None:
        labels = _named_labels((head if new else base)["classNames"], image)
        item.update(
            change="added" if new else "removed",
            fields=[],
            labelsAdded=len(labels) if new else 0,
            labelsRemoved=0 if new else len(labels),
        )
    else:
        before = Counter(_named_labels(base["classNames"], old))
        after = Counter(_named_labels(head["classNames"], new))
        fields = _changed_fields(old, new, before, after)
        if not fields and old["split"] == new["split"]:
            return {}
        item.update(
            change="modified" if fields else "moved",
            fields=fields,
            labelsAdded=sum((after - before).values()),
            labelsRemoved=sum((before - after).values()),
        )
    if old is not None:
        item["base"] = {"split": old["split"], "labelCount": old["label_count"]}
    if new is not None:
        item["head"] = {"split": new["split"], "labelCount": new["label_count"]}
    return item


def _header(base: dict, head: dict) -> dict:
    """What changed in the dataset's own description between the sides."""
    old, new = base["classNames"], head["classNames"]
    renamed = [
        {"from": a, "to": b}
        for a, b in zip(old, new, strict=False)
        if a != b and a not in new and b not in old
    ]
    gone, came = {r["from"] for r in renamed}, {r["to"] for r in renamed}
    pairs = (
        ("task", base["task"], head["task"]),
        ("classNames", old, new),
        (
            "kptShape",
            base["metadata"].get("kptShape"),
            head["metadata"].get("kptShape"),
        ),
        ("flipIdx", base["metadata"].get("flipIdx"), head["metadata"].get("flipIdx")),
    )
    return {
        "classesAdded": [n for n in new if n not in old and n not in came],
        "classesRemoved": [n for n in old if n not in new and n not in gone],
        "classesRenamed": renamed,
        "changed": [name for name, a, b in pairs if a != b],
    }


def _view(svc: Services, side: dict, image: dict | None) -> dict | None:
    """One image as a side stores it, with the side's task and classes."""
    if image is None:
        return None
    url = svc.signer.url(image_path(image))
    shown = {
        "split": image["split"],
        "name": image["name"],
        "ext": image["ext"],
        "width": image["width"],
        "height": image["height"],
        "labels": image["labels"] or [],
        "labelCount": image["label_count"],
        "imageUrl": url,
        "thumbnailUrl": url,
    }
    if image.get("metadata"):
        shown["metadata"] = image["metadata"]
    view = {
        "version": side["version"],
        "task": side["task"],
        "classNames": side["classNames"],
        "images": [shown],
    }
    if side["metadata"].get("kptShape"):
        view["kptShape"] = side["metadata"]["kptShape"]
    return view


def _summary(items: list[dict], base: dict, head: dict) -> dict:
    counts = Counter(i["change"] for i in items)
    return {
        **{change: counts[change] for change in _CHANGE_ORDER},
        "labelsAdded": sum(i["labelsAdded"] for i in items),
        "labelsRemoved": sum(i["labelsRemoved"] for i in items),
        "header": _header(base, head),
    }


def _compare(
    svc: Services,
    dataset: dict,
    sides: tuple[str, str | None],
    offset: int,
    digest: str | None,
) -> dict:
    base = _side(svc, dataset, sides[0], "base")
    head = _side(svc, dataset, sides[1], "head")
    old = {image["hash"]: image for image in base["images"]}
    new = {image["hash"]: image for image in head["images"]}
    if digest is not None:
        if digest not in old and digest not in new:
            raise NotFound("neither side holds an image with this hash")
        both = [_view(svc, base, old.get(digest)), _view(svc, head, new.get(digest))]
        return {"versions": both}
    # A renamed class does not make its labels changed: compare under new names.
    renames = {r["from"]: r["to"] for r in _header(base, head)["classesRenamed"]}
    as_head = {**base, "classNames": [renames.get(n, n) for n in base["classNames"]]}
    items = [
        item
        for key in old.keys() | new.keys()
        if (item := _difference(as_head, head, old.get(key), new.get(key)))
    ]
    items.sort(key=lambda i: (_CHANGE_ORDER[i["change"]], i["name"], i["hash"]))
    out: dict = {"items": items[offset : offset + COMPARE_PAGE]}
    if offset + COMPARE_PAGE < len(items):
        out["nextCursor"] = str(offset + COMPARE_PAGE)
    if offset == 0:
        out["summary"] = _summary(items, base, head)
        if items:
            first = items[0]["hash"]
            out["preview"] = [
                _view(svc, base, old.get(first)),
                _view(svc, head, new.get(first)),
            ]
    return out


routes = [
    Route(f"{ID}/export", export, methods=["GET"]),
    Route(f"{ID}/export", create_version, methods=["POST"]),
    Route(f"{ID}/export", describe_version, methods=["PATCH"]),
    Route(f"{ID}/restore", restore, methods=["POST"]),
    Route(f"{ID}/versions/compare", compare, methods=["GET"]),
    Route(f"{SLUG}/export", export, methods=["GET"]),
    Route(f"{SLUG}/export", create_version, methods=["POST"]),
    Route(f"{SLUG}/export", describe_version, methods=["PATCH"]),
    Route(f"{SLUG}/restore", restore, methods=["POST"]),
    Route(f"{SLUG}/versions/compare", compare, methods=["GET"]),
]
