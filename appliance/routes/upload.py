"""Signed-URL uploads: ask for a URL, PUT the bytes to it, confirm."""

from __future__ import annotations

import hashlib
import os
import re
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from ..archive import is_archive_name
from ..errors import Conflict, Forbidden, Invalid, NotFound, TooLarge, Unauthorized
from ..ids import is_id, parse_time
from ..sweep import forget_upload
from ..web import can_edit, can_see, field, json_body, reply, require_user, services
from .model_ops import attach_checkpoint
from .models import editable_model

_RANGE = re.compile(r"^bytes (?:(\d+)-(\d+)|\*)/(\d+)$")
ASSET_TYPES = frozenset({"datasets", "models", "images", "videos"})


def upload_path(request: Request, session_id: str):
    return services(request).blobs.path("uploads", session_id, "data")


def _dataset_target(request: Request, user: dict, asset_id: str) -> str:
    """An assetId that names a dataset (its id, or a slug of the caller's own
    workspace) must be one the caller may change; the session is then bound to
    it (its id is returned). Any other assetId is kept as a label, as stock
    clients send various ones."""
    db = services(request).db
    dataset = db.dataset(asset_id) if is_id(asset_id) else None
    if dataset is None:
        dataset = db.dataset_by_slug(user["id"], asset_id)
    if dataset is None or dataset.get("deleted_at"):
        return asset_id
    if not can_see(request, dataset["owner_id"], dataset["visibility"]):
        raise NotFound("Dataset not found")
    if not can_edit(request, dataset["owner_id"]):
        raise Forbidden("you cannot upload into this dataset")
    return dataset["id"]


async def signed_url(request: Request):
    user = require_user(request)
    svc = services(request)
    body = await json_body(request)
    asset_type = field(body, "assetType", str, required=True)
    if asset_type not in ASSET_TYPES:
        raise Invalid(f"assetType must be one of: {', '.join(sorted(ASSET_TYPES))}")
    filename = field(body, "filename", str, required=True).strip()
    asset_id = field(body, "assetId", str, required=True)
    content_type = field(body, "contentType", str, required=True)
    total = field(body, "totalBytes", (int, float), required=True)
    if not 1 <= len(asset_id) <= 128 or not 1 <= len(content_type) <= 50:
        raise Invalid("assetId must be 1-128 characters and contentType 1-50")
    if total != int(total) or total <= 0:
        raise Invalid("totalBytes must be a whole number of bytes, more than 0")
    if total > svc.settings.max_upload_bytes:
        limit = svc.settings.max_upload_bytes
        raise Invalid(
            f"totalBytes {int(total)} is over this appliance's limit of {limit}"
        )
    if not filename or len(filename) > 256 or "/" in filename or "\\" in filename:
        raise Invalid("filename must be a plain file name of at most 256 characters")
    if asset_type == "datasets" and not (
        is_archive_name(filename) or filename.lower().endswith(".ndjson")
    ):
        raise Invalid(
            "dataset uploads must be .zip, .tar, .tar.gz, .tgz or .ndjson archives"
        )
    if asset_type == "models" and not filename.lower().endswith(".pt"):
        raise Invalid("model uploads must be .pt files")
    if asset_type == "datasets":
        asset_id = _dataset_target(request, user, asset_id)
    if asset_type == "models":
        editable_model(request, asset_id)  # the model the weights are for
    expires = svc.signer.expiry()
    session = svc.db.create_upload(
        user_id=user["id"],
        asset_type=asset_type,
        asset_id=asset_id,
        filename=filename,
        content_type=content_type,
        total_bytes=int(total),
        expires_at=datetime.fromtimestamp(expires, UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.000Z"
        ),
    )
    return reply(
        {
            "sessionId": session["id"],
            "uploadUrl": svc.signer.url(f"/uploads/{session['id']}", method="PUT"),
            "expiresAt": session["expires_at"],
        }
    )


async def put_upload(request: Request):
    """The signed upload target: no Authorization header, the signature is the proof.

    A plain PUT sends the whole file; after a dropped connection the client sends
    it again (nothing half-written is kept). A PUT with `Content-Range: bytes
    START-END/TOTAL` appends to what arrived before, so a dropped transfer resumes
    where it stopped; `Content-Range: bytes */TOTAL` asks how much arrived."""
    svc = services(request)
    session_id = request.path_params["session_id"]
    if not svc.signer.verify(
        "PUT",
        request.url.path,
        request.query_params.get("expires"),
        request.query_params.get("signature"),
    ):
        raise Unauthorized("invalid or expired upload signature")
    session = svc.db.upload(session_id)
    if session is None:
        raise NotFound("upload session not found")
    if session["status"] not in ("pending", "uploaded"):
        raise Conflict("this upload session is already complete")
    limit = session["total_bytes"] or svc.settings.max_upload_bytes
    if request.headers.get("content-range"):
        return await _put_range(request, session, limit)
    target = upload_path(request, session_id)
    size = 0
    digest = hashlib.md5()
    with svc.blobs.writer(target) as handle:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise TooLarge(
                    f"upload is larger than the declared {limit} bytes; declare the"
                    " real size, or split the images over several archives"
                )
            digest.update(chunk)
            handle.write(chunk)
    svc.db.update_upload(session_id, status="uploaded", size=size)
    return reply({"success": True, "size": size, "md5": digest.hexdigest()})


def _content_range(value: str, limit: int) -> tuple[int | None, int]:
    """(start, total) from `bytes START-END/TOTAL`, or (None, total) for `bytes */TOTAL`."""
    match = _RANGE.match(value.strip())
    if not match:
        raise Invalid(
            "Content-Range must be 'bytes START-END/TOTAL' or 'bytes */TOTAL'"
        )
    total = int(match.group(3))
    if total != limit:
        raise Invalid(f"Content-Range total {total} is not the declared {limit} bytes")
    if match.group(1) is None:
        return None, total
    start, end = int(match.group(1)), int(match.group(2))
    if end < start or end >= total:
        raise Invalid("Content-Range END must be at least START and below TOTAL")
    return start, total


async def _put_range(request: Request, session: dict, limit: int):
    svc = services(request)
    start, total = _content_range(request.headers["content-range"], limit)
    partial = svc.blobs.path("uploads", session["id"], "partial")
    have = partial.stat().st_size if partial.exists() else 0
    if start is None:
        return reply({"success": True, "received": have, "size": total})
    if start != have:
        raise Conflict(f"resume from byte {have}: that much has arrived")
    partial.parent.mkdir(parents=True, exist_ok=True)
    # Kept as it arrives, so a dropped connection loses nothing already received.
    with open(partial, "ab") as handle:
        async for chunk in request.stream():
            have += len(chunk)
            if have > total:
                raise TooLarge(f"upload is larger than the declared {total} bytes")
            handle.write(chunk)
    if have == total:
        os.replace(partial, upload_path(request, session["id"]))
        svc.db.update_upload(session["id"], status="uploaded", size=total)
    return reply({"success": True, "received": have, "size": total})


def finish_upload(request: Request, session_id: str, user: dict) -> dict:
    """Check an upload arrived whole; mark it completed. Shared with dataset ingest."""
    svc = services(request)
    session = svc.db.upload(session_id)
    if session is None or session["user_id"] != user["id"]:
        raise NotFound("upload session not found")
    if session["status"] == "consumed":
        raise Invalid("this upload was ingested already; upload the file again")
    if (
        parse_time(session["expires_at"]) < datetime.now(UTC)
        and session["status"] == "pending"
    ):
        raise Invalid("upload session expired")
    partial = svc.blobs.path("uploads", session_id, "partial")
    if session["status"] == "pending" and partial.exists():
        have = partial.stat().st_size
        raise Invalid(
            f"the upload is incomplete: {have} of {session['total_bytes']} bytes"
            " arrived; resume it with Content-Range"
        )
    if session["status"] == "pending" or not upload_path(request, session_id).exists():
        raise Invalid("nothing has been uploaded for this session yet")
    if session["total_bytes"] and session["size"] != session["total_bytes"]:
        raise Invalid(
            f"upload has {session['size']} bytes but {session['total_bytes']} were declared"
        )
    if session["status"] == "uploaded":
        svc.db.update_upload(session_id, status="completed")
        session["status"] = "completed"
    return session


async def complete(request: Request):
    user = require_user(request)
    body = await json_body(request)
    session = finish_upload(request, field(body, "sessionId", str, required=True), user)
    md5 = field(body, "md5", str)
    if md5:
        actual = hashlib.md5(
            upload_path(request, session["id"]).read_bytes()
        ).hexdigest()
        if actual != md5.lower():
            raise Invalid("md5 does not match the uploaded bytes")
    if session["asset_type"] == "models":
        try:
            await run_in_threadpool(
                attach_checkpoint, request, session, upload_path(request, session["id"])
            )
        finally:
            # Kept (as the model's weights) or refused: the upload itself is done.
            svc = services(request)
            svc.db.update_upload(session["id"], status="consumed")
            forget_upload(svc.blobs, session["id"])
    return reply(
        {
            "success": True,
            "file": {"size": session["size"], "contentType": session["content_type"]},
        }
    )


routes = [
    Route("/api/upload/signed-url", signed_url, methods=["POST"]),
    Route("/api/upload/complete", complete, methods=["POST"]),
    Route("/uploads/{session_id}", put_upload, methods=["PUT"]),
]
