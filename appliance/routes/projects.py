"""Projects: create, list, retrieve, update, trash, clone and icon, in both
route families: the contract's owner/slug paths and the seed's project-id
paths (`GET /api/projects?owner=` lists for the seed). Restoring and purging
trashed projects is routes/trash.py's."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import warnings

from PIL import Image, UnidentifiedImageError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from ..errors import Forbidden, Invalid, NotFound, TooLarge
from ..ids import SLUG_RE, is_id, slugify
from ..serialize import REGION, model_summary_json, project_json
from ..web import (
    can_edit,
    can_see,
    choice_field,
    display_name,
    field,
    json_body,
    owner_for_write,
    patch_fields,
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

logger = logging.getLogger(__name__)

LICENSES = (
    "None",
    "Apache-2.0",
    "MIT",
    "BSD-3-Clause",
    "AGPL-3.0",
    "GPL-3.0",
    "LGPL-3.0",
    "MPL-2.0",
    "EUPL-1.1",
    "Unlicense",
    "CC0-1.0",
    "Ultralytics-Enterprise",
    "Other",
)
VISIBILITIES = ("public", "private")
MAX_METADATA_CHARS = 500_000
MAX_ICON_BYTES = 2 * 1024 * 1024
ICON_SIZE = 256
_VIEW_PREFERENCES = {
    "sortBy": ("newest", "oldest", "name-asc", "name-desc", "size-asc", "size-desc"),
    "groupBy": ("none", "task"),
    "statusFilter": ("all", "completed", "untrained", "running", "starting", "failed"),
}


def find_project(request: Request, owner: str, slug: str | None = None) -> dict:
    """A project by id (seed routes) or by owner and slug (contract routes),
    hidden with 404 from anyone who may not see it, and while in the trash."""
    db = services(request).db
    if slug is None:
        row = db.project(owner) if is_id(owner) else None
    else:
        row = db.project_by_slug(visible_owner(request, owner)["id"], slug)
    if (
        row is None
        or row.get("deleted_at")
        or not can_see(request, row["owner_id"], row["visibility"])
    ):
        raise NotFound("Project not found")
    return row


def project_of(request: Request, *, edit: bool = False) -> dict:
    """The project a route names, in either family; with edit, the caller
    must be an editor of its workspace."""
    params = request.path_params
    if edit:
        require_user(request)
    if "project_id" in params:
        row = find_project(request, params["project_id"])
    else:
        row = find_project(request, params["owner"], params["project"])
    if edit and not can_edit(request, row["owner_id"]):
        raise Forbidden("You cannot change this project")
    return row


def write_fields(body: dict) -> dict:
    """A JSON body's values as a write may take them: a null is refused."""
    nulls = sorted(k for k, v in body.items() if v is None and k != "iconLetter")
    if nulls:
        raise Invalid(f"{', '.join(nulls)} must not be null")
    return body


def check_metadata(value: dict) -> dict:
    if any(len(key) > 128 for key in value):
        raise Invalid("metadata keys must be at most 128 characters")
    if len(json.dumps(value, separators=(",", ":"))) > MAX_METADATA_CHARS:
        raise Invalid(f"metadata must be at most {MAX_METADATA_CHARS} characters")
    return value


def _details(body: dict, current: dict) -> dict:
    """Tags, licence, icon colour and letter, archived flag, view defaults."""
    details = dict(current)
    tags = field(body, "tags", list)
    if tags is not None:
        if len(tags) > 50 or not all(isinstance(t, str) and len(t) <= 50 for t in tags):
            raise Invalid("tags must be at most 50 strings of at most 50 characters")
        details["tags"] = tags
    if (license_ := choice_field(body, "license", LICENSES)) is not None:
        details["license"] = license_
    if (color := short_field(body, "iconColor", 50)) is not None:
        details["iconColor"] = color
    if "iconLetter" in body:
        letter = short_field(body, "iconLetter", 2)
        if letter:
            details["iconLetter"] = letter
        else:
            details.pop("iconLetter", None)
    if (archived := field(body, "archived", bool)) is not None:
        details["archived"] = archived
    prefs = field(body, "viewPreferences", dict)
    if prefs is not None:
        for key, value in prefs.items():
            if key not in _VIEW_PREFERENCES or value not in _VIEW_PREFERENCES[key]:
                raise Invalid(
                    "viewPreferences takes sortBy, groupBy and statusFilter with"
                    " the contract's values"
                )
        details["viewPreferences"] = {**details.get("viewPreferences", {}), **prefs}
    return details


def _taken(request: Request, owner: dict, slug: str) -> Invalid:
    """A slug in use: a bad request, the contract's only answer for it on
    project create."""
    name = f"{owner['username']}/{slug}"
    if services(request).db.slug_in_trash("projects", "owner_id", owner["id"], slug):
        return Invalid(
            f"Project {name} is in the trash: restore it or delete it permanently"
        )
    return Invalid(f"Project {name} already exists; choose another name")


def stop_training(request: Request, model_ids: list[str]) -> None:
    """Cancel the running or queued training of models leaving for the trash
    (or for good), so that the GPU is not kept busy for a hidden model."""
    svc = services(request)
    for model_id in model_ids:
        job = svc.db.latest_job(model_id, "train")
        if job and job["status"] in ("queued", "starting", "running"):
            svc.queue.cancel(job["id"])
            logger.info("training job %s cancelled: its model was deleted", job["id"])


def project_out(request: Request, row: dict, *, detail: bool = False) -> dict:
    db = services(request).db
    count = row.get("model_count")
    if count is None:
        count = db.project_with_count(row["id"])["model_count"]
    out = project_json(row, count, detail=detail)
    if (row.get("details") or {}).get("iconImage"):
        out["iconImage"] = services(request).signer.url(
            f"/files/icons/{row['id']}/{row['details']['iconImage']}"
        )
    if detail:
        out["cloneCount"] = db.project_clone_count(row["id"])
    return out


# -- create, list, retrieve --------------------------------------------------


async def create(request: Request):
    require_user(request)
    body = write_fields(await json_body(request))
    owner = owner_for_write(request, field(body, "owner", str))
    fields = resource_fields(body, "project")
    check_metadata(fields["metadata"])
    details = _details({k: body[k] for k in ("tags", "license") if k in body}, {})
    try:
        row = services(request).db.create_project(
            owner_id=owner["id"], details=details, **fields
        )
    except sqlite3.IntegrityError:
        raise _taken(request, owner, fields["slug"]) from None
    out = {"id": row["id"], "owner": row["owner"], "project": row["slug"]}
    if "project" not in body:  # the seed's form reads the id as projectId
        out["projectId"] = row["id"]
    return reply({**out, "region": REGION}, 201)


def _listing(request: Request, owner: dict, limit: int) -> dict:
    private = role_in(request, owner["id"]) is not None
    rows, total = services(request).db.project_page(
        owner["id"], private=private, limit=limit
    )
    return {
        "projects": [project_out(request, r) for r in rows],
        "total": total,
        "region": REGION,
    }


async def list_projects(request: Request):
    """GET /api/projects/{owner}: the owner's projects the caller may see."""
    owner = visible_owner(request, request.path_params["owner"])
    return reply(_listing(request, owner, q_int(request, "limit", 20, 1, 500)))


async def list_seed(request: Request):
    """GET /api/projects (seed): the projects of `owner` (or `username`), by
    default the caller's own."""
    name = request.query_params.get("owner") or request.query_params.get("username")
    owner = visible_owner(request, name) if name else require_user(request)
    out = _listing(request, owner, q_int(request, "limit", 20, 1, 500))
    for item in out["projects"]:  # the seed's names beside the contract's
        item.update(_id=item["id"], slug=item["project"], username=item["owner"])
    return reply(out)


async def retrieve(request: Request):
    row = project_of(request)
    db = services(request).db
    models = db.models_of_project(row["id"], 1000)
    search = (request.query_params.get("search") or "").strip().lower()
    if search:
        models = [
            m for m in models if search in m["name"].lower() or search in m["slug"]
        ]
    user = request.scope.get("user")
    project = project_out(request, row, detail=True)
    project["modelNames"] = [m["slug"] for m in models]
    return reply(
        {
            "project": project,
            "models": [model_summary_json(m, len(db.epochs(m["id"]))) for m in models],
            "isOwner": bool(user and user["id"] == row["owner_id"]),
        }
    )


# -- update, trash, clone ------------------------------------------------------

_PATCHABLE = frozenset(
    {
        "starred",
        "name",
        "description",
        "metadata",
        "visibility",
        "tags",
        "license",
        "archived",
        "iconColor",
        "iconLetter",
        "viewPreferences",
    }
)


async def update(request: Request):
    """PATCH a project. A new display name also renames the slug."""
    project = project_of(request, edit=True)
    body = write_fields(await json_body(request))
    fields = patch_fields(body, _PATCHABLE, project["slug"], VISIBILITIES)
    if "metadata" in body:
        fields["metadata"] = check_metadata(field(body, "metadata", dict))
    details = _details(body, project.get("details") or {})
    if details != (project.get("details") or {}):
        fields["details"] = details
    if fields:
        try:
            services(request).db.update_project(project["id"], **fields)
        except sqlite3.IntegrityError:
            owner = {"id": project["owner_id"], "username": project["owner"]}
            raise _taken(request, owner, fields["slug"]) from None
    return reply({"success": True, "project": fields.get("slug", project["slug"])})


async def delete(request: Request):
    """Move a project and its models to the trash (restorable for 30 days)."""
    project = project_of(request, edit=True)
    db = services(request).db
    stop_training(
        request, [m["id"] for m in db.models_of_project(project["id"], 10**6)]
    )
    cascaded = db.trash_project(project["id"])
    logger.info(
        "project %s moved to the trash with %d model(s)", project["id"], cascaded
    )
    return reply({"success": True, "cascadedModels": cascaded})


_CLONE_FIELDS = frozenset(
    {"name", "description", "visibility", "owner", "project", "license", "models"}
)


def free_slug(taken: set[str], slug: str) -> str:
    """`slug`, or `slug-copy`, `slug-copy-2`, ... whichever is free."""
    if slug not in taken:
        return slug
    base = f"{slug[:118]}-copy"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


async def clone(request: Request):
    """Copy a project the caller may see, with its models' metadata, metrics
    and weights, into a workspace the caller edits (their own by default).
    `models` (ids) clones only those models."""
    require_user(request)
    source = project_of(request)
    require_clone_rights(request, source, "project")
    body = write_fields(await json_body(request))
    unknown = sorted(set(body) - _CLONE_FIELDS)
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(unknown)}")
    owner = owner_for_write(request, field(body, "owner", str))
    db = services(request).db
    taken = {
        r["slug"]
        for r in db.query("SELECT slug FROM projects WHERE owner_id = ?", [owner["id"]])
    }
    name = display_name(body["name"]) if "name" in body else source["name"]
    slug = field(body, "project", str)
    if slug is not None:
        if not SLUG_RE.match(slug):
            raise Invalid(
                "project must be lower-case letters, digits and dashes (1-128)"
            )
        if slug in taken:
            raise Invalid(f"project {owner['username']}/{slug} already exists")
    else:
        slug = free_slug(taken, slugify(name) if "name" in body else source["slug"])
    details = dict(source.get("details") or {})
    details.pop("iconImage", None)
    if (license_ := choice_field(body, "license", LICENSES)) is not None:
        details["license"] = license_
    wanted = field(body, "models", list)
    if wanted is not None and not all(isinstance(i, str) for i in wanted):
        raise Invalid("models must be a list of model ids")
    models = (
        db.models_by_ids(source["id"], wanted)
        if wanted is not None
        else db.models_of_project(source["id"], 10_000)
    )
    row = db.create_project(
        owner_id=owner["id"],
        slug=slug,
        name=name,
        description=short_field(body, "description", 1000) or source["description"],
        visibility=choice_field(body, "visibility", VISIBILITIES) or "private",
        metadata=source.get("metadata") or {},
        details=details,
        cloned_from=source["id"],
    )
    from .model_ops import copy_model  # model_ops imports this module

    for model in models:
        await run_in_threadpool(copy_model, request, model, row["id"])
    logger.info("project %s cloned into %s", source["id"], row["id"])
    return reply(
        {
            "id": row["id"],
            "owner": row["owner"],
            "project": row["slug"],
            "name": row["name"],
            "modelCount": len(models),
            "region": REGION,
        },
        201,
    )


# -- icon ----------------------------------------------------------------------


def _icon_png(data: bytes) -> bytes:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > 40_000_000:
                raise Invalid("the image has too many pixels")
            image = image.convert("RGB")
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ):
        raise Invalid("the file is not a readable image") from None
    image.thumbnail((ICON_SIZE, ICON_SIZE))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


async def upload_icon(request: Request):
    """POST a project icon as the multipart field `file`; stored as a PNG of
    at most 256 pixels a side."""
    project = project_of(request, edit=True)
    form = await request.form(max_files=1, max_fields=5)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise Invalid("send the image as the multipart field 'file'")
    data = await upload.read(MAX_ICON_BYTES + 1)
    if len(data) > MAX_ICON_BYTES:
        raise TooLarge(f"project icons are limited to {MAX_ICON_BYTES} bytes")
    png = await run_in_threadpool(_icon_png, data)
    svc = services(request)
    svc.blobs.put_bytes(svc.blobs.path("icons", project["id"], "icon.png"), png)
    details = {**(project.get("details") or {}), "iconImage": "icon.png"}
    svc.db.update_project(project["id"], details=details)
    url = svc.signer.url(f"/files/icons/{project['id']}/icon.png")
    return reply({"success": True, "iconImage": url})


async def delete_icon(request: Request):
    project = project_of(request, edit=True)
    svc = services(request)
    svc.blobs.remove_tree("icons", project["id"])
    details = dict(project.get("details") or {})
    if details.pop("iconImage", None):
        svc.db.update_project(project["id"], details=details)
    return reply({"success": True})


ID = "/api/projects/{project_id:id}"
SLUG = "/api/projects/{owner}/{project}"

#: Operations on one project, offered in both route families.
_OPERATIONS = [
    ("", "GET", retrieve),
    ("", "PATCH", update),
    ("", "DELETE", delete),
    ("/clone", "POST", clone),
    ("/icon", "POST", upload_icon),
    ("/icon", "DELETE", delete_icon),
]

routes = [
    Route("/api/projects", list_seed, methods=["GET"]),
    Route("/api/projects", create, methods=["POST"]),
    *(Route(f"{ID}{tail}", fn, methods=[m]) for tail, m, fn in _OPERATIONS),
    Route("/api/projects/{owner}", list_projects, methods=["GET"]),
    *(Route(f"{SLUG}{tail}", fn, methods=[m]) for tail, m, fn in _OPERATIONS),
]
