"""Team workspaces: teams, members and roles, and invites that need no e-mail.

An invite yields a token (and a link built on it) for the admin to hand over; the
token is stored hashed, lives 14 days, and a resend rotates it."""

from __future__ import annotations

import re
import secrets
import sqlite3
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.routing import Route

from ..errors import Conflict, Forbidden, Invalid, NotFound
from ..ids import check_username, now, parse_time
from ..web import (
    display_name,
    field,
    hash_token,
    json_body,
    reply,
    require_role,
    require_user,
    role_in,
    services,
)

INVITE_DAYS = 14
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


_INVITABLE = ("viewer", "editor", "admin")


def team_json(team: dict, role: str) -> dict:
    return {
        "userId": team["id"],
        "username": team["username"],
        "fullName": team["name"],
        "plan": "enterprise",
        "region": "us",
        "role": role,
    }


def _workspace(request: Request, name: str | None) -> dict:
    """The workspace a member route acts on: a team named by `owner`, else the
    caller's personal one."""
    user = require_user(request)
    if not name or name == user["username"]:
        return user
    team = services(request).db.user_by_name(name)
    if team is None or team["kind"] != "team" or role_in(request, team["id"]) is None:
        raise NotFound(f"Team {name} not found")
    return team


async def list_teams(request: Request):
    user = require_user(request)
    teams = services(request).db.teams_of(user["id"])
    return reply({"teams": [team_json(t, t["role"]) for t in teams]})


async def create_team(request: Request):
    user = require_user(request)
    body = await json_body(request)
    username = field(body, "username", str, required=True)
    if reason := check_username(username):
        raise Invalid(f"username: {reason}")
    name = display_name(body.get("fullName") or username, "fullName")
    try:
        team = services(request).db.create_team(username, name, user["id"])
    except sqlite3.IntegrityError:
        raise Conflict(f"the name {username} is taken") from None
    return reply({"team": team_json(team, "owner")}, 201)


async def list_members(request: Request):
    workspace = _workspace(request, request.query_params.get("owner"))
    db = services(request).db
    if workspace["kind"] != "team":
        members = [
            {
                "id": workspace["id"],
                "username": workspace["username"],
                "name": workspace["name"],
                "role": "owner",
                "created_at": workspace["created_at"],
            }
        ]
        invites: list[dict] = []
    else:
        members = db.members_of(workspace["id"])
        admin = role_in(request, workspace["id"]) in ("admin", "owner")
        invites = db.pending_invites(workspace["id"]) if admin else []
    return reply(
        {
            "members": [
                {
                    "userId": m["id"],
                    "username": m["username"],
                    "fullName": m["name"],
                    "role": m["role"],
                    "joinedAt": m["created_at"],
                }
                for m in members
            ],
            "invites": [_invite_json(i) for i in invites],
        }
    )


def _invite_json(invite: dict, token: str | None = None) -> dict:
    out = {
        "id": invite["id"],
        "invitee": invite["invitee"],
        "role": invite["role"],
        "createdAt": invite["created_at"],
        "expiresAt": invite["expires_at"],
    }
    if token:
        out["token"] = token
        out["url"] = f"/invite?token={token}"
    return out


def _new_token() -> tuple[str, str, str]:
    token = secrets.token_urlsafe(32)
    expires = (datetime.now(UTC) + timedelta(days=INVITE_DAYS)).strftime(
        "%Y-%m-%dT%H:%M:%S.000Z"
    )
    return token, hash_token(token), expires


def _role(value: str | None, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise Invalid(f"role must be one of: {', '.join(allowed)}")
    return value


async def invite_member(request: Request):
    body = await json_body(request)
    team = _workspace(request, field(body, "owner", str))
    if team["kind"] != "team":
        raise Invalid("invite members to a team workspace: pass its name as owner")
    require_role(request, team["id"], "admin", "Inviting members")
    invitee = (field(body, "username", str) or field(body, "email", str) or "").strip()
    if not invitee:
        raise Invalid("username or email is required")
    db = services(request).db
    person = db.user_by_name(invitee) if "@" not in invitee else None
    if "@" in invitee:
        if not _EMAIL.match(invitee):
            raise Invalid("email is not an e-mail address")
    elif person is None or person["kind"] != "personal":
        raise NotFound(f"no user named {invitee}")
    elif db.membership_role(team["id"], person["id"]) is not None:
        raise Conflict(f"{invitee} is already a member")
    if any(i["invitee"] == invitee for i in db.pending_invites(team["id"])):
        raise Conflict(f"{invitee} already has an open invite; resend it instead")
    role = _role(field(body, "role", str, default="viewer"), _INVITABLE)
    token, token_hash, expires = _new_token()
    invite = services(request).db.create_invite(
        team_id=team["id"],
        invitee=invitee,
        role=role,
        token_hash=token_hash,
        invited_by=require_user(request)["id"],
        expires_at=expires,
    )
    return reply({"invite": _invite_json(invite, token)}, 201)


def _live_invite(request: Request, token: str | None) -> dict:
    if not token:
        raise Invalid("token is required")
    invite = services(request).db.invite_by_token(hash_token(token))
    if invite is None or invite["revoked_at"] or invite["accepted_at"]:
        raise NotFound("Invite not found")
    if parse_time(invite["expires_at"]) < datetime.now(UTC):
        raise Invalid("this invite has expired; ask for a new one")
    return invite


async def invite_info(request: Request):
    invite = _live_invite(request, request.query_params.get("token"))
    team = services(request).db.user_by_id(invite["team_id"])
    return reply(
        {
            "team": {"username": team["username"], "fullName": team["name"]},
            "role": invite["role"],
            "expiresAt": invite["expires_at"],
        }
    )


async def accept_invite(request: Request):
    user = require_user(request)
    body = await json_body(request)
    invite = _live_invite(request, field(body, "token", str, required=True))
    if invite["invitee"] not in (user["username"], user.get("email")):
        raise Forbidden("this invite is for someone else")
    db = services(request).db
    if role_in(request, invite["team_id"]) is not None:
        raise Conflict("you are already a member of this team")
    db.set_membership(invite["team_id"], user["id"], invite["role"])
    db.update_invite(invite["id"], accepted_at=now())
    team = db.user_by_id(invite["team_id"])
    return reply(
        {"success": True, "team": team_json(team, role_in(request, team["id"]))}
    )


def _managed_invite(request: Request) -> dict:
    require_user(request)
    invite = services(request).db.invite(request.path_params["invite_id"])
    if invite is None or role_in(request, invite["team_id"]) is None:
        raise NotFound("Invite not found")
    require_role(request, invite["team_id"], "admin", "Managing invites")
    return invite


async def revoke_invite(request: Request):
    invite = _managed_invite(request)
    services(request).db.update_invite(invite["id"], revoked_at=now())
    return reply({"success": True})


async def resend_invite(request: Request):
    invite = _managed_invite(request)
    if invite["accepted_at"] or invite["revoked_at"]:
        raise Conflict("this invite is no longer open")
    token, token_hash, expires = _new_token()
    services(request).db.update_invite(
        invite["id"], token_hash=token_hash, expires_at=expires
    )
    return reply({"invite": _invite_json({**invite, "expires_at": expires}, token)})


def _member_target(request: Request, team: dict) -> dict:
    db = services(request).db
    user_id = request.path_params.get("user_id")
    role = db.membership_role(team["id"], user_id) if user_id else None
    if role is None:
        raise NotFound("Member not found")
    return {"id": user_id, "role": role}


async def update_member(request: Request):
    body = await json_body(request)
    team = _workspace(
        request, field(body, "owner", str) or request.query_params.get("owner")
    )
    require_role(request, team["id"], "admin", "Changing roles")
    target = _member_target(request, team)
    role = _role(field(body, "role", str, required=True), _INVITABLE)
    if target["role"] == "owner":
        raise Forbidden("the owner's role changes only by transferring ownership")
    services(request).db.set_membership(team["id"], target["id"], role)
    return reply({"success": True, "userId": target["id"], "role": role})


async def remove_member(request: Request):
    team = _workspace(request, request.query_params.get("owner"))
    target = _member_target(request, team)
    me = require_user(request)
    if target["id"] != me["id"]:
        require_role(request, team["id"], "admin", "Removing members")
    if target["role"] == "owner":
        raise Forbidden("the owner cannot be removed; transfer ownership first")
    services(request).db.remove_membership(team["id"], target["id"])
    return reply({"success": True})


async def transfer_ownership(request: Request):
    body = await json_body(request)
    team = _workspace(request, field(body, "owner", str))
    require_role(request, team["id"], "owner", "Transferring ownership")
    new_owner = field(body, "userId", str, required=True)
    if not new_owner:
        raise Invalid("userId is required")
    me = require_user(request)
    if new_owner == me["id"]:
        raise Invalid("you already own this team; name another member")
    db = services(request).db
    if db.membership_role(team["id"], new_owner) is None:
        raise NotFound("the new owner must already be a member")
    with db.atomic():
        db.set_membership(team["id"], new_owner, "owner")
        db.set_membership(team["id"], me["id"], "admin")
    return reply({"success": True})


routes = [
    Route("/api/teams", list_teams, methods=["GET"]),
    Route("/api/teams/create", create_team, methods=["POST"]),
    Route("/api/members", list_members, methods=["GET"]),
    Route("/api/members", invite_member, methods=["POST"]),
    Route("/api/members/transfer-ownership", transfer_ownership, methods=["POST"]),
    Route("/api/members/{user_id}", update_member, methods=["PATCH"]),
    Route("/api/members/{user_id}", remove_member, methods=["DELETE"]),
    Route("/api/invites/accept", accept_invite, methods=["POST"]),
    Route("/api/invites/info", invite_info, methods=["GET"]),
    Route("/api/invites/{invite_id}", revoke_invite, methods=["DELETE"]),
    Route("/api/invites/{invite_id}/resend", resend_invite, methods=["POST"]),
]
