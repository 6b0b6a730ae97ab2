"""Dataset exports and versions, in both route families.

GET .../export is the current dataset as Ultralytics NDJSON (or, with `v`, a
saved version); POST .../export saves a numbered, immutable version (an
unchanged dataset reuses the version it already has); PATCH .../export names a
version; POST .../restore makes the dataset a saved version again.
GET .../versions/compare is an extension: the contract has no comparison."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from .. import ndjson
from ..errors import Conflict, Invalid, NotFound
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
    digest = ndjson.content_digest(dataset, images)
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


def _class_counts(names: list[str], images: list[dict]) -> Counter:
    """Annotations per class name (names, not indices: indices shift when a
    class is deleted)."""
    counts: Counter = Counter()
    for image in images:
        for label in image["labels"] or []:
            cid = label["classId"]
            counts[names[cid] if 0 <= cid < len(names) else f"class{cid}"] += 1
    return counts


def _side(svc: Services, dataset: dict, raw: str | None, name: str):
    """(version number or None, class names, images) of a version, or of the
    current dataset ("current", the default)."""
    if raw in (None, "", "current"):
        return None, dataset["class_names"] or [], svc.db.all_images(dataset["id"])
    version = _version(svc, dataset, _number(raw, name))
    names = version["class_names"] or []
    return version["version"], names, svc.db.version_images(version["id"])


def _keyed(names: list[str], images: list[dict]) -> dict:
    """Images by (content hash, name), each with what a change would touch."""
    out = {}
    for image in images:
        labels = [
            {**label, "class": names[label["classId"]]}
            if 0 <= label["classId"] < len(names)
            else label
            for label in image["labels"] or []
        ]
        state = (image["split"], repr(labels), repr(image.get("metadata")))
        out[(image["hash"], image["name"])] = state
    return out


async def compare(request: Request):
    """GET .../versions/compare?a=1&b=2: images added, removed and changed from
    a to b, annotations per class name. Either side may be `current` (b is by
    default), the dataset as it is now."""
    dataset = dataset_of(request)
    if "a" not in request.query_params:
        raise Invalid("a is required: the version to compare from")
    query = request.query_params
    body = await run_in_threadpool(
        _compare, services(request), dataset, query["a"], query.get("b")
    )
    return reply(body)


def _compare(svc: Services, dataset: dict, raw_a: str, raw_b: str | None) -> dict:
    number_a, names_a, images_a = _side(svc, dataset, raw_a, "a")
    number_b, names_b, images_b = _side(svc, dataset, raw_b, "b")
    old, new = _keyed(names_a, images_a), _keyed(names_b, images_b)
    counts_a = _class_counts(names_a, images_a)
    counts_b = _class_counts(names_b, images_b)
    named = [*names_b, *(n for n in names_a if n not in names_b)]
    unnamed = sorted((set(counts_a) | set(counts_b)) - set(named))
    classes = [
        {
            "name": name,
            "a": counts_a[name],
            "b": counts_b[name],
            "delta": counts_b[name] - counts_a[name],
        }
        for name in [*named, *unnamed]
    ]
    both = old.keys() & new.keys()
    changed = sum(old[key] != new[key] for key in both)
    return {
        "a": number_a,
        "b": number_b,
        "images": {
            "added": len(new.keys() - old.keys()),
            "removed": len(old.keys() - new.keys()),
            "changed": changed,
            "unchanged": len(both) - changed,
        },
        "annotations": {"a": sum(counts_a.values()), "b": sum(counts_b.values())},
        "classes": classes,
    }


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
