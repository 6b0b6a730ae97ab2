"""GDPR: an export of everything the caller owns (a queued job), or the deletion of
their account (or of a team they own) after typing the confirmation word."""

from __future__ import annotations

from starlette.requests import Request
from starlette.routing import Route

from ..errors import Conflict, Invalid, NotFound
from ..gdpr import delete_everything
from ..web import field, json_body, reply, require_role, require_user, services

CONFIRMATION = "DELETE"


async def start(request: Request):
    user = require_user(request)
    body = await json_body(request)
    action = field(body, "action", str, required=True)
    svc = services(request)
    if action == "export":
        job = svc.queue.submit("gdpr_export", user["id"], user["id"])
        return reply({"jobId": job["id"], "status": "queued"}, 201)
    if action != "delete":
        raise Invalid("action must be export or delete")
    if field(body, "confirmationWord", str) != CONFIRMATION:
        raise Invalid(f"type the confirmation word {CONFIRMATION} to delete")
    team_name = field(body, "teamUsername", str)
    if team_name:
        team = svc.db.user_by_name(team_name)
        if team is None or team["kind"] != "team":
            raise NotFound(f"Team {team_name} not found")
        require_role(request, team["id"], "owner", "Deleting a team")
        return reply(
            {
                "success": True,
                "deleted": delete_everything(svc.db, svc.blobs, team["id"]),
            }
        )
    owned = [t["username"] for t in svc.db.teams_of(user["id"]) if t["role"] == "owner"]
    if owned:
        raise Conflict(
            f"transfer or delete the teams you own first: {', '.join(owned)}"
        )
    return reply(
        {"success": True, "deleted": delete_everything(svc.db, svc.blobs, user["id"])}
    )


async def status(request: Request):
    user = require_user(request)
    svc = services(request)
    job = svc.db.job(request.query_params.get("jobId", ""))
    if job is None or job["user_id"] != user["id"] or job["kind"] != "gdpr_export":
        raise NotFound("GDPR job not found")
    out = {
        "id": job["id"],
        "action": "export",
        "status": job["status"],
        "progress": job["progress"],
        "createdAt": job["created_at"],
        "updatedAt": job["updated_at"],
    }
    if job["status"] == "completed":
        out["downloadUrl"] = svc.signer.url(f"/files/gdpr/{job['id']}/export.zip")
        out["size"] = (job["result"] or {}).get("size")
    if job["error"]:
        out["error"] = job["error"]
    return reply({"job": out})


routes = [
    Route("/api/gdpr", status, methods=["GET"]),
    Route("/api/gdpr", start, methods=["POST"]),
]
