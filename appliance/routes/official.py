"""Official weights the operator imported (`appliance weights import yolo26n.pt`),
offered where stock clients look for them: `ul://ultralytics/yolo26/yolo26n`
resolves through GET /api/models/ultralytics/yolo26/yolo26n/files."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from ..errors import NotFound
from ..web import current_user, reply, services
from ..weights import OFFICIAL_OWNER, Registry
from . import models


async def files(request: Request):
    svc = services(request)
    family, stem = request.path_params["project"], request.path_params["model"]
    current_user(request)  # a bad key is refused even here
    entry = Registry(svc.settings.home).official(family, stem)
    if entry is None:
        if svc.db.user_by_name(OFFICIAL_OWNER) is not None:
            return await models.files(request)  # a local account by that name
        raise NotFound(
            f"ul://{OFFICIAL_OWNER}/{family}/{stem} is not on this appliance; "
            f"bring {stem}.pt and run `appliance weights import {stem}.pt`"
        )
    url = svc.signer.url(f"/files/weights/{entry['name']}")
    return reply(
        {"files": [{"name": entry["name"], "size": entry["size"], "downloadUrl": url}]}
    )


routes = [
    Route(
        f"/api/models/{OFFICIAL_OWNER}/{{project}}/{{model}}/files",
        files,
        methods=["GET"],
    ),
]
