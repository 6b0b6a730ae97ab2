"""Datasets: create, list, retrieve, update, trash, clone, ingest, export,
trained models. Both route families: the contract's owner/slug paths and the
seed's dataset-id paths. Classes and splits live in routes/classes.py, image
operations in routes/images.py, the trash's own routes in routes/trash.py."""

from __future__ import annotations

import json
import logging
import sqlite3

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from ..archive import refuse_encrypted
from ..errors import Conflict, Forbidden, Invalid, NotFound
from ..ids import SLUG_RE, is_id, slugify
from ..ingest.classes import check_class_mapping
from ..ingest.metadata import check_image_metadata
from ..serialize import (
    REGION,
    dataset_extras,
    dataset_json,
    trained_model_json,
)
from ..vision import TASKS
from ..web import (
    can_edit,
    can_see,
    choice_field,
    display_name,
    field,
    json_body,
    owner_for_write,
    patch_fields,
    q_bool,
    q_int,
    reply,
    require_clone_rights,
    require_user,
    resource_fields,
    role_in,
    services,
    short_field,
    visible_owner,
)
from .upload import finish_upload, upload_path

logger = logging.getLogger(__name__)

VISIBILITIES = ("public", "private")
SPLITS = ("train", "val", "test")
CONFLICT_POLICIES = ("skip", "keep_both", "replace")
LICENSES = (
    "None",
    "CC0-1.0",
    "PDM-1.0",
    "CC-BY-2.5",
    "CC-BY-4.0",
    "CC-BY-NC-2.0",
    "CC-BY-SA-4.0",
    "CC-BY-NC-4.0",
    "CC-BY-NC-SA-3.0",
    "CC-BY-NC-SA-4.0",
    "CC-BY-ND-4.0",
    "CC-BY-NC-ND-4.0",
    "Apache-2.0",
    "MIT",
    "AGPL-3.0",
    "GPL-3.0",
    "Research-Only",
    "Other",
)
FORMATS = ("yolo", "coco", "raw", "ndjson")
#: The contract's cap on class lists and class-id lists.
MAX_CLASSES = 25_000
#: Sample images shown with each dataset in lists and details.
SAMPLES = 4
MAX_METADATA_CHARS = 500_000


def _dataset_out(request: Request, row: dict, *, detail: bool = False) -> dict:
    db = services(request).db
    versions = db.dataset_versions(row["id"]) if detail else None
    out = dataset_json(
        row, db.dataset_stats(row["id"]), detail=detail, versions=versions
    )
    samples = db.samples_of([row["id"]], SAMPLES)[row["id"]]
    out.update(
        dataset_extras(
            row,
            services(request).signer,
            samples,
            clone_count=db.clone_count(row["id"]),
        )
    )
    return out


def _datasets_out(request: Request, rows: list[dict]) -> list[dict]:
    """Many datasets for a list, with two queries for all of their counts and
    samples rather than two per dataset."""
    db = services(request).db
    ids = [r["id"] for r in rows]
    stats = db.stats_of(ids)
    samples = (
        db.samples_of(ids, SAMPLES)
        if q_bool(request, "includeSamples", True)
        else dict.fromkeys(ids)
    )
    image_urls = q_bool(request, "includeImageUrls", False)
    signer = services(request).signer
    out = []
    for row in rows:
        item = dataset_json(row, stats.get(row["id"], {}))
        item.update(
            dataset_extras(row, signer, samples[row["id"]], image_urls=image_urls)
        )
        out.append(item)
    return out


def find_dataset(request: Request, owner: str, slug: str | None = None) -> dict:
    """A dataset by id (seed routes) or by owner and slug (contract routes),
    hidden with 404 from anyone who may not see it, and while in the trash."""
    db = services(request).db
    if slug is None:
        row = db.dataset(owner) if is_id(owner) else None
    else:
        row = db.dataset_by_slug(visible_owner(request, owner)["id"], slug)
    if (
        row is None
        or row.get("deleted_at")
        or not can_see(request, row["owner_id"], row["visibility"])
    ):
        raise NotFound("Dataset not found")
    return row


def editable_dataset(request: Request, owner: str, slug: str | None = None) -> dict:
    require_user(request)
    row = find_dataset(request, owner, slug)
    if not can_edit(request, row["owner_id"]):
        raise Forbidden("You cannot change this dataset")
    return row


def dataset_of(request: Request, *, edit: bool = False) -> dict:
    """The dataset a route names, in either family: `{dataset_id:id}` (seed) or
    `{owner}/{dataset}` (contract). With edit, the caller must be an editor."""
    params = request.path_params
    if "dataset_id" in params:
        key, slug = params["dataset_id"], None
    else:
        key, slug = params["owner"], params["dataset"]
    if edit:
        return editable_dataset(request, key, slug)
    return find_dataset(request, key, slug)


async def create(request: Request):
    require_user(request)
    body = await json_body(request)
    owner = owner_for_write(request, field(body, "owner", str))
    fields = resource_fields(body, "dataset")
    task = field(body, "task", str, default="detect")
    if task not in TASKS:
        raise Invalid(f"task must be one of: {', '.join(TASKS)}")
    class_names = checked_class_names(field(body, "classNames", list, default=[]))
    slug = fields["slug"]
    try:
        row = services(request).db.create_dataset(
            owner_id=owner["id"], task=task, class_names=class_names, **fields
        )
    except sqlite3.IntegrityError:
        raise _taken(request, owner, slug) from None
    return reply(
        {
            "id": row["id"],
            "owner": row["owner"],
            "dataset": row["slug"],
            "region": "us",
        },
        201,
    )


def _taken(request: Request, owner: dict, slug: str) -> Invalid:
    """A slug in use: a bad request, as the contract's create and update answer
    (its 409s are for other conflicts)."""
    name = f"{owner['username']}/{slug}"
    if services(request).db.trashed_slug_taken(owner["id"], slug):
        return Invalid(
            f"Dataset {name} is in the trash: restore it or delete it permanently"
        )
    return Invalid(f"Dataset {name} already exists; choose another name")


def _listing(
    request: Request, owner: dict, limit: int, slug: str | None = None
) -> dict:
    private = role_in(request, owner["id"]) is not None
    rows, total = services(request).db.dataset_page(
        owner["id"], private=private, limit=limit, slug=slug
    )
    return {"datasets": _datasets_out(request, rows), "total": total, "region": REGION}


async def list_datasets(request: Request):
    """GET /api/datasets/{owner}: the owner's datasets the caller may see."""
    owner = visible_owner(request, request.path_params["owner"])
    return reply(_listing(request, owner, q_int(request, "limit", 1000, 1, 1000)))


async def list_seed(request: Request):
    """GET /api/datasets (seed): the datasets of `owner` (or `username`), by
    default the caller's own; `slug` narrows the list to one dataset."""
    params = request.query_params
    name = params.get("owner") or params.get("username")
    if name:
        owner = visible_owner(request, name)
    else:
        owner = require_user(request)
    limit = q_int(request, "limit", 20, 1, 500)
    out = _listing(request, owner, limit, params.get("slug") or None)
    for item in out["datasets"]:  # the seed's names beside the contract's
        item.update(_id=item["id"], slug=item["dataset"], username=item["owner"])
    return reply(out)


async def retrieve(request: Request):
    return reply({"dataset": _dataset_out(request, dataset_of(request), detail=True)})


#: What an ingest body may say besides where the upload is.
INGEST_OPTIONS = frozenset(
    {
        "conflictPolicy",
        "targetSplit",
        "classMapping",
        "imageMetadata",
        "dryRun",
        "extendClasses",
        "boxesAsPolygons",
    }
)


async def _start_ingest(request: Request, dataset: dict, body: dict):
    user = require_user(request)
    svc = services(request)
    if "sourceUrl" in body or "reference" in body:
        raise Invalid(
            "this appliance is offline: ingest from an uploaded archive (sessionId)"
        )
    session_id = field(body, "sessionId", str, required=True)
    pending = svc.db.upload(session_id)
    if (
        pending
        and pending["user_id"] == user["id"]
        and pending["asset_type"] != "datasets"
    ):
        raise Invalid("this upload session is not a dataset upload")
    if (
        pending
        and pending["user_id"] == user["id"]
        and is_id(pending["asset_id"])
        and pending["asset_id"] != dataset["id"]
        and svc.db.dataset(pending["asset_id"]) is not None
    ):
        raise Invalid("this upload was made for another dataset")
    session = finish_upload(request, session_id, user)
    policy = field(body, "conflictPolicy", str, default="skip")
    if policy not in CONFLICT_POLICIES:
        raise Invalid(f"conflictPolicy must be one of: {', '.join(CONFLICT_POLICIES)}")
    split = field(body, "targetSplit", str)
    if split is not None and split not in SPLITS:
        raise Invalid("targetSplit must be train, val or test")
    mapping = check_class_mapping(field(body, "classMapping", dict))
    metadata = check_image_metadata(field(body, "imageMetadata", dict))
    dry_run = field(body, "dryRun", bool, default=False)
    extend = field(body, "extendClasses", bool, default=False)
    as_polygons = field(body, "boxesAsPolygons", bool, default=False)
    if dataset["status"] == "processing":
        raise Conflict("an ingest is already running for this dataset")
    path = upload_path(request, session_id)
    if not path.exists():
        raise Invalid("nothing has been uploaded for this session")
    refuse_encrypted(path)
    args = {
        "sessionId": session_id,
        "filename": session["filename"],
        "conflictPolicy": policy,
        "targetSplit": split,
        "classMapping": mapping,
        "imageMetadata": metadata,
        "dryRun": dry_run,
        "extendClasses": extend,
        "boxesAsPolygons": as_polygons,
    }
    if dry_run:
        job = svc.queue.submit("ingest", dataset["id"], user["id"], args)
        return reply({"jobId": job["id"], "status": "queued"}, 201)
    svc.db.update_dataset(dataset["id"], status="processing", processing_error=None)
    job = svc.queue.submit("ingest", dataset["id"], user["id"], args)
    svc.db.update_dataset(dataset["id"], ingest_job_id=job["id"])
    return reply({"jobId": job["id"], "status": "queued"}, 201)


async def ingest(request: Request):
    dataset = dataset_of(request, edit=True)
    return await _start_ingest(request, dataset, await json_body(request))


async def ingest_by_id(request: Request):
    require_user(request)
    body = await json_body(request)
    dataset_id = field(body, "datasetId", str, required=True)
    return await _start_ingest(request, editable_dataset(request, dataset_id), body)


# -- update, trash, clone ----------------------------------------------------

_PATCHABLE = frozenset(
    {
        "starred",
        "name",
        "description",
        "metadata",
        "visibility",
        "tags",
        "classNames",
        "classColors",
        "format",
        "task",
        "license",
        "iconColor",
        "iconLetter",
    }
)


async def write_body(request: Request) -> dict:
    """A write's JSON body; a null is refused rather than read as absent."""
    body = await json_body(request)
    nulls = sorted(k for k, v in body.items() if v is None)
    if nulls:
        raise Invalid(f"{', '.join(nulls)} must not be null")
    return body


def _metadata(body: dict, current: dict) -> dict:
    """New custom metadata; the pose keys the appliance keeps there survive."""
    metadata = field(body, "metadata", dict)
    if any(len(key) > 128 for key in metadata):
        raise Invalid("metadata keys must be at most 128 characters")
    if len(json.dumps(metadata, separators=(",", ":"))) > MAX_METADATA_CHARS:
        raise Invalid(f"metadata must be at most {MAX_METADATA_CHARS} characters")
    kept = {k: current[k] for k in ("kptShape", "flipIdx") if k in current}
    return {**kept, **metadata}


def checked_class_names(names: list) -> list[str]:
    """Class names as the contract allows them: display names, none repeated."""
    if len(names) > MAX_CLASSES:
        raise Invalid(f"classNames holds at most {MAX_CLASSES} names")
    clean = [display_name(n, f"classNames[{i}]") for i, n in enumerate(names)]
    if len(set(clean)) != len(clean):
        raise Invalid("classNames must not repeat a name")
    return clean


def _class_names(request: Request, body: dict, dataset: dict) -> list[str]:
    """Renamed or added classes. Removing a class that labels use would leave
    those labels pointing nowhere: that is what classes/delete is for."""
    clean = checked_class_names(field(body, "classNames", list))
    used = services(request).db.class_counts(dataset["id"])
    if used and max(cls for cls, *_ in used) >= len(clean):
        raise Conflict(
            "classNames would drop classes that labels use; remove classes with"
            " classes/delete or classes/merge"
        )
    return clean


def _details(body: dict, current: dict) -> dict:
    """The presentation fields the contract lists (tags, licence, format,
    colours, icon), kept as given."""
    details = dict(current)
    tags = field(body, "tags", list)
    if tags is not None:
        if len(tags) > 50 or not all(isinstance(t, str) and len(t) <= 50 for t in tags):
            raise Invalid("tags must be at most 50 strings of at most 50 characters")
        details["tags"] = tags
    colors = field(body, "classColors", dict)
    if colors is not None:
        if len(colors) > MAX_CLASSES or not all(
            len(k) <= 128 and isinstance(v, str) and len(v) <= 7
            for k, v in colors.items()
        ):
            raise Invalid("classColors maps class names to colours such as #a1b2c3")
        details["classColors"] = colors
    for name, value in (
        ("license", choice_field(body, "license", LICENSES)),
        ("format", choice_field(body, "format", FORMATS)),
        ("iconColor", short_field(body, "iconColor", 50)),
        ("iconLetter", short_field(body, "iconLetter", 2)),
    ):
        if value is not None:
            details[name] = value
    return details


def check_settled(dataset: dict, change: str = "change its classes") -> None:
    """Classes, splits and the dataset itself must not change under a running
    ingest, which maps its labels onto the classes it read when it started and
    writes its images when it ends."""
    if dataset["status"] == "processing":
        raise Conflict(f"an ingest is running for this dataset; {change} after it")


async def update(request: Request):
    """PATCH a dataset. A new display name also renames the slug."""
    dataset = dataset_of(request, edit=True)
    body = await write_body(request)
    fields = patch_fields(body, _PATCHABLE, dataset["slug"], VISIBILITIES)
    if "metadata" in body:
        fields["metadata"] = _metadata(body, dataset["metadata"] or {})
    if "classNames" in body or "task" in body:
        check_settled(dataset)
    if "classNames" in body:
        fields["class_names"] = _class_names(request, body, dataset)
    task = choice_field(body, "task", TASKS)
    if task and task != dataset["task"]:
        if services(request).db.dataset_stats(dataset["id"]).get("labeled"):
            raise Conflict("the task of a dataset with labelled images cannot change")
        fields["task"] = task
    details = _details(body, dataset.get("details") or {})
    if details != (dataset.get("details") or {}):
        fields["details"] = details
    if fields:
        try:
            services(request).db.update_dataset(dataset["id"], **fields)
        except sqlite3.IntegrityError:
            if "slug" not in fields:
                raise
            owner = {"id": dataset["owner_id"], "username": dataset["owner"]}
            raise _taken(request, owner, fields["slug"]) from None
    return reply({"success": True, "dataset": fields.get("slug", dataset["slug"])})


async def delete(request: Request):
    """Move a dataset to the trash: hidden everywhere, restorable for
    TRASH_DAYS days through /api/trash."""
    dataset = dataset_of(request, edit=True)
    check_settled(dataset, "delete it")
    services(request).db.trash_dataset(dataset["id"])
    logger.info("dataset %s moved to the trash", dataset["id"])
    return reply({"success": True})


_CLONE_FIELDS = frozenset(
    {"name", "dataset", "description", "visibility", "license", "owner"}
)


async def clone(request: Request):
    """Copy a dataset, with its images and labels, into another workspace the
    caller edits (their own by default). A public dataset may be cloned by
    anyone signed in; a private one only by its workspace's editors, so a viewer
    cannot carry a team's private data off into a workspace of their own."""
    require_user(request)
    source = dataset_of(request)
    require_clone_rights(request, source, "dataset")
    body = await write_body(request)
    unknown = sorted(set(body) - _CLONE_FIELDS)
    if unknown:
        raise Invalid(
            f"this appliance clones whole datasets; unknown: {', '.join(unknown)}"
        )
    owner = owner_for_write(request, field(body, "owner", str))
    if owner["id"] == source["owner_id"]:
        raise Invalid(
            "a dataset cannot be cloned into its own workspace; name another owner"
        )
    name = display_name(body["name"]) if "name" in body else source["name"]
    slug = field(body, "dataset", str) or (
        slugify(name) if "name" in body else source["slug"]
    )
    if not SLUG_RE.match(slug):
        raise Invalid("dataset must be lower-case letters, digits and dashes (1-128)")
    details = dict(source.get("details") or {})
    if license_ := choice_field(body, "license", LICENSES):
        details["license"] = license_
    fields = {
        "owner_id": owner["id"],
        "slug": slug,
        "name": name,
        "description": short_field(body, "description", 1000) or source["description"],
        "visibility": choice_field(body, "visibility", VISIBILITIES) or "private",
        "details": details,
    }
    db = services(request).db
    try:
        row = await run_in_threadpool(db.clone_dataset, source, **fields)
    except sqlite3.IntegrityError:
        raise _taken(request, owner, slug) from None
    logger.info("dataset %s cloned into %s", source["id"], row["id"])
    return reply(
        {
            "id": row["id"],
            "owner": row["owner"],
            "dataset": row["slug"],
            "name": row["name"],
            "imageCount": db.dataset_stats(row["id"]).get("images", 0),
            "classCount": len(row["class_names"] or []),
            "region": REGION,
        },
        201,
    )


async def trained_models(request: Request):
    """Models trained on this dataset that the caller may see."""
    dataset = dataset_of(request)
    seed = "dataset_id" in request.path_params
    models = [
        trained_model_json(m, seed=seed)
        for m in services(request).db.models_trained_on(dataset["id"])
        if can_see(request, m["owner_id"], m["visibility"])
    ]
    return reply({"models": models, "count": len(models)})


ID = "/api/datasets/{dataset_id:id}"
SLUG = "/api/datasets/{owner}/{dataset}"

#: Operations on one dataset, offered in both route families.
_OPERATIONS = [
    ("", "GET", retrieve),
    ("", "PATCH", update),
    ("", "DELETE", delete),
    ("/clone", "POST", clone),
    ("/models", "GET", trained_models),
]

# The seed's id routes come first: `{dataset_id:id}` never matches a username, so a
# path is read as owner/slug only when its first segment is not an id.
routes = [
    Route("/api/datasets", list_seed, methods=["GET"]),
    Route("/api/datasets", create, methods=["POST"]),
    Route("/api/datasets/ingest", ingest_by_id, methods=["POST"]),
    *(Route(f"{ID}{tail}", fn, methods=[m]) for tail, m, fn in _OPERATIONS),
    Route("/api/datasets/{owner}", list_datasets, methods=["GET"]),
    *(Route(f"{SLUG}{tail}", fn, methods=[m]) for tail, m, fn in _OPERATIONS),
    Route(f"{SLUG}/ingest", ingest, methods=["POST"]),
]
