"""Signed downloads of blobs: images, model weights, exports."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import FileResponse
from starlette.routing import Route

from ..errors import NotFound, Unauthorized
from ..web import services

_KINDS = frozenset(
    {"images", "thumbnails", "models", "exports", "icons", "gdpr", "ndjson", "weights"}
)


async def download(request: Request):
    svc = services(request)
    if not svc.signer.verify(
        request.method,
        request.url.path,
        request.query_params.get("expires"),
        request.query_params.get("signature"),
    ):
        raise Unauthorized("invalid or expired signature")
    parts = request.path_params["path"].split("/")
    if not parts or parts[0] not in _KINDS:
        raise NotFound("file not found")
    path = svc.blobs.path(*parts)
    if not path.is_file():
        raise NotFound("file not found")
    return FileResponse(path, filename=parts[-1], content_disposition_type="attachment")


routes = [Route("/files/{path:path}", download, methods=["GET", "HEAD"])]
