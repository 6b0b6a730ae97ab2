"""Integrations. The appliance is offline, so Roboflow and cloud buckets answer
with a clear 400 and never make a request; no bucket can be connected, so none
is listed.

The offline stand-in is an extension, under /api/integrations/local: folders
the operator allows (APPLIANCE_STORAGE_ROOTS) can be browsed, and a file or a
folder from one ingested into a dataset. The chosen file, or a zip of the
folder, becomes an ordinary upload session that the ordinary ingest job reads.
Nothing outside a root is reachable: no `..`, no hidden names, no link that
leads out."""

from __future__ import annotations

import hashlib
import os
import stat
import zipfile
from datetime import UTC, datetime
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from ..archive import is_archive_name, is_junk
from ..errors import Conflict, Invalid, NotFound, TooLarge
from ..web import field, json_body, q_int, reply, require_user, services
from .datasets import INGEST_OPTIONS, _start_ingest, editable_dataset

_BUCKET_ID = frozenset("0123456789abcdefABCDEF")
_OFFLINE = "this appliance is offline and cannot reach"


# -- Roboflow and cloud buckets: unavailable offline ---------------------------


async def roboflow(request: Request):
    """Preview and import: both need Roboflow's servers. A 400, as the contract
    lists for both, so a client shows the message instead of retrying."""
    require_user(request)
    raise Invalid(
        f"{_OFFLINE} Roboflow; export the dataset from Roboflow in YOLO format and"
        " upload the archive instead"
    )


async def list_buckets(request: Request):
    require_user(request)
    return reply({"integrations": []})


async def connect_bucket(request: Request):
    require_user(request)
    raise Invalid(
        f"{_OFFLINE} cloud storage; the operator can allow local folders with"
        " APPLIANCE_STORAGE_ROOTS (see /api/integrations/local)"
    )


def _bucket_id(request: Request) -> str:
    value = request.path_params["id"]
    if len(value) != 24 or not set(value) <= _BUCKET_ID:
        raise Invalid("id must be a 24-character hex integration id")
    return value


async def bucket_objects(request: Request):
    require_user(request)
    _bucket_id(request)
    raise NotFound("Integration not found")


async def disconnect_bucket(request: Request):
    require_user(request)
    _bucket_id(request)
    raise NotFound("Integration not found")


# -- local folders (extension) ---------------------------------------------------


def root_id(path: Path) -> str:
    """A stable id for an allowed root, shaped like a bucket integration id."""
    return hashlib.sha256(str(path).encode()).hexdigest()[:24]


def _root(request: Request) -> Path:
    wanted = request.path_params["root_id"]
    for path in services(request).settings.storage_roots:
        if root_id(path) == wanted:
            return path
    raise NotFound("Storage root not found")


def _hidden(name: str) -> bool:
    return name.startswith(".") or is_junk(name)


def _inside(root: Path, path: Path) -> Path | None:
    """The real path when it stays inside the root (links followed), else None."""
    try:
        real = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    return real if real == root or real.is_relative_to(root) else None


def resolve_key(root: Path, key: str) -> Path:
    """The file or folder a key names under a root; never outside it."""
    if len(key) > 1024 or "\x00" in key:
        raise Invalid("key must be at most 1024 characters")
    parts = [part for part in key.split("/") if part not in ("", ".")]
    if any(part == ".." or _hidden(part) for part in parts):
        raise Invalid("key must not contain '..' or hidden names")
    real = _inside(root, root.joinpath(*parts))
    if real is None:
        raise NotFound("No such file or folder under this root")
    return real


def _entry(root: Path, path: Path, real: Path) -> dict | None:
    info = real.stat()
    key = path.relative_to(root).as_posix()
    stamp = datetime.fromtimestamp(info.st_mtime, UTC)
    updated = stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
    if stat.S_ISDIR(info.st_mode):
        return {
            "kind": "folder",
            "name": path.name,
            "key": key + "/",
            "updatedAt": updated,
        }
    if stat.S_ISREG(info.st_mode):
        return {
            "kind": "file",
            "name": path.name,
            "key": key,
            "size": info.st_size,
            "updatedAt": updated,
        }
    return None


def _listing(root: Path, folder: Path) -> list[dict]:
    entries = []
    with os.scandir(folder) as found:
        for item in found:
            if _hidden(item.name):
                continue
            path = folder / item.name
            real = _inside(root, path)
            entry = _entry(root, path, real) if real else None
            if entry:
                entries.append(entry)
    entries.sort(key=lambda e: (e["kind"] != "folder", e["name"]))
    return entries


async def list_roots(request: Request):
    require_user(request)
    roots = services(request).settings.storage_roots
    return reply(
        {
            "roots": [
                {"id": root_id(path), "name": path.name or str(path), "path": str(path)}
                for path in roots
            ]
        }
    )


async def root_objects(request: Request):
    """GET /api/integrations/local/{root_id}/objects?prefix=&cursor=: one folder,
    folders first, paged like the bucket browser (`cursor` is opaque)."""
    require_user(request)
    root = _root(request)
    folder = resolve_key(root, request.query_params.get("prefix", ""))
    if not folder.is_dir():
        raise Invalid("prefix must name a folder")
    limit = q_int(request, "limit", 1000, 1, 1000)
    cursor = request.query_params.get("cursor") or "0"
    if not (cursor.isascii() and cursor.isdigit()):
        raise Invalid("cursor is not one this listing gave out")
    start = int(cursor)
    entries = await run_in_threadpool(_listing, root, folder)
    out: dict = {"entries": entries[start : start + limit]}
    if start + limit < len(entries):
        out["cursor"] = str(start + limit)
    return reply(out)


def _folder_files(root: Path, folder: Path) -> list[tuple[Path, str]]:
    """(real path, name in the archive) of every visible file under a folder;
    links are followed only when they stay inside the root."""
    files = []
    for current, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        for name in sorted(names):
            if _hidden(name):
                continue
            path = Path(current) / name
            real = _inside(root, path)
            if real is not None and real.is_file():
                files.append((real, path.relative_to(folder).as_posix()))
    return files


def _stage(request: Request, source: Path, root: Path, target: Path) -> int:
    """Put the chosen file, or a zip of the folder, where an upload would land;
    returns its size."""
    svc = services(request)
    limit = svc.settings.max_upload_bytes
    if source.is_file():
        if source.stat().st_size > limit:
            raise TooLarge(f"the file is over this appliance's limit of {limit} bytes")
        svc.blobs.put_file(target, source)
        return target.stat().st_size
    files = _folder_files(root, source)
    if not files:
        raise Invalid("the folder holds no files")
    if sum(path.stat().st_size for path, _ in files) > limit:
        raise TooLarge(f"the folder is over this appliance's limit of {limit} bytes")
    with svc.blobs.writer(target) as handle:
        with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED, allowZip64=True) as out:
            for path, name in files:
                out.write(path, name)
    return target.stat().st_size


_LOCAL_FIELDS = frozenset({"datasetId", "owner", "dataset", "key"})


async def ingest_from_root(request: Request):
    """POST /api/integrations/local/{root_id}/ingest {datasetId | owner+dataset,
    key, and any option of a dataset ingest}: ingest a file or folder under the
    root, exactly as an uploaded archive would be."""
    user = require_user(request)
    body = await json_body(request)
    unknown = sorted(set(body) - _LOCAL_FIELDS - INGEST_OPTIONS)
    if unknown:
        raise Invalid(f"unknown fields: {', '.join(unknown)}")
    if body.get("datasetId") is not None:
        dataset = editable_dataset(request, field(body, "datasetId", str))
    else:
        owner = field(body, "owner", str, required=True)
        dataset = editable_dataset(
            request, owner, field(body, "dataset", str, required=True)
        )
    root = _root(request)
    source = resolve_key(root, field(body, "key", str, required=True))
    if source.is_file():
        lowered = source.name.lower()
        if not (is_archive_name(lowered) or lowered.endswith(".ndjson")):
            raise Invalid(
                "a file to ingest must be a .zip, .tar, .tar.gz, .tgz or .ndjson"
            )
        filename, content_type = source.name, "application/octet-stream"
    elif source.is_dir():
        filename, content_type = f"{source.name or 'root'}.zip", "application/zip"
    else:
        raise Invalid("key must name a file or a folder")
    if dataset["status"] == "processing":
        raise Conflict("an ingest is already running for this dataset")
    svc = services(request)
    session = svc.db.create_upload(
        user_id=user["id"],
        asset_type="datasets",
        asset_id=dataset["id"],
        filename=filename,
        content_type=content_type,
        total_bytes=0,
        expires_at=datetime.fromtimestamp(svc.signer.expiry(), UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z"
        ),
    )
    target = svc.blobs.path("uploads", session["id"], "data")
    size = await run_in_threadpool(_stage, request, source, root, target)
    svc.db.update_upload(session["id"], status="uploaded", size=size, total_bytes=size)
    ingest = {
        "sessionId": session["id"],
        **{k: body[k] for k in INGEST_OPTIONS if k in body},
    }
    return await _start_ingest(request, dataset, ingest)


routes = [
    Route("/api/integrations/roboflow/preview", roboflow, methods=["POST"]),
    Route("/api/integrations/roboflow/import", roboflow, methods=["POST"]),
    Route("/api/integrations/buckets", list_buckets, methods=["GET"]),
    Route("/api/integrations/buckets", connect_bucket, methods=["POST"]),
    Route("/api/integrations/buckets/discover", connect_bucket, methods=["POST"]),
    Route("/api/integrations/buckets/{id}/objects", bucket_objects, methods=["GET"]),
    Route("/api/integrations/buckets/{id}", disconnect_bucket, methods=["DELETE"]),
    Route("/api/integrations/local", list_roots, methods=["GET"]),
    Route("/api/integrations/local/{root_id}/objects", root_objects, methods=["GET"]),
    Route(
        "/api/integrations/local/{root_id}/ingest", ingest_from_root, methods=["POST"]
    ),
]
