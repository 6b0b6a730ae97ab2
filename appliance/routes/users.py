"""People: public profiles and follows, username checks, settings, the profile
icon and onboarding."""

from __future__ import annotations

import io
import re
import sqlite3

from PIL import Image, UnidentifiedImageError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..errors import Conflict, Invalid, NotFound, TooLarge
from ..ids import check_username, now
from ..web import display_name, field, json_body, reply, require_user, services

MAX_ICON_BYTES = 2 * 1024 * 1024
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
ICON_SIZE = 256
_PROFILE_TEXT = ("bio", "company", "useCase")
_SOCIALS = ("github", "linkedin", "twitter", "discord", "youtube", "scholar", "website")


def _followers(request: Request, user_id: str) -> int:
    return services(request).db.scalar(
        "SELECT count(*) FROM follows WHERE followee_id = ?", [user_id]
    )


def _is_followed(request: Request, user_id: str) -> bool:
    me = request.scope.get("user")
    if not me:
        return False
    return bool(
        services(request).db.scalar(
            "SELECT 1 FROM follows WHERE follower_id = ? AND followee_id = ?",
            [me["id"], user_id],
        )
    )


def public_user(request: Request, user: dict) -> dict:
    profile = user.get("profile") or {}
    out = {
        "username": user["username"],
        "fullName": user["name"],
        "accountType": user["kind"],
        "iconLetter": user["username"][:1].upper(),
        "followerCount": _followers(request, user["id"]),
        "isFollowed": _is_followed(request, user["id"]),
    }
    for key in _PROFILE_TEXT:
        if profile.get(key):
            out[key] = profile[key]
    if profile.get("socials"):
        out["socials"] = profile["socials"]
    if user.get("icon"):
        out["imageUrl"] = services(request).signer.url(
            f"/files/icons/{user['id']}/{user['icon']}"
        )
    return out


async def get_user(request: Request):
    require_user(request)
    name = request.query_params.get("username", "")
    if check_username(name) and not services(request).db.user_by_name(name):
        raise Invalid("username is not a valid username")
    user = services(request).db.user_by_name(name)
    if user is None:
        raise NotFound("User not found")
    return reply({"user": public_user(request, user)})


async def follow(request: Request):
    me = require_user(request)
    body = await json_body(request)
    target = services(request).db.user_by_name(
        field(body, "username", str, required=True)
    )
    if target is None:
        raise NotFound("User not found")
    followed = field(body, "followed", bool, required=True)
    if target["id"] == me["id"]:
        raise Invalid("you cannot follow yourself")
    with services(request).db.atomic() as db:
        if followed:
            db.execute(
                "INSERT OR IGNORE INTO follows (follower_id, followee_id, created_at) VALUES (?, ?, ?)",
                [me["id"], target["id"], now()],
            )
        else:
            db.execute(
                "DELETE FROM follows WHERE follower_id = ? AND followee_id = ?",
                [me["id"], target["id"]],
            )
    return reply(
        {"followed": followed, "followerCount": _followers(request, target["id"])}
    )


async def check_name(request: Request):
    require_user(request)
    name = request.query_params.get("username", "")
    reason = check_username(name)
    taken = services(request).db.user_by_name(name) is not None
    out: dict = {"username": name, "available": reason is None and not taken}
    if reason:
        out["reason"] = reason
    elif taken:
        out["reason"] = "taken"
        if request.query_params.get("suggest") == "true":
            out["suggestion"] = _suggest(request, name)
    return reply(out)


def _suggest(request: Request, name: str) -> str:
    db = services(request).db
    for n in range(2, 1000):
        candidate = f"{name[:34]}-{n}"
        if db.user_by_name(candidate) is None:
            return candidate
    return ""


def _settings_json(request: Request, user: dict) -> dict:
    return {
        **public_user(request, user),
        "email": user.get("email"),
        "onboarded": bool(user.get("onboarded_at")),
    }


async def get_settings(request: Request):
    return reply({"settings": _settings_json(request, require_user(request))})


async def update_settings(request: Request):
    user = require_user(request)
    body = await json_body(request)
    db = services(request).db
    profile = dict(user.get("profile") or {})
    fields: dict = {}
    if "fullName" in body:
        fields["name"] = display_name(body["fullName"], "fullName")
    for key in _PROFILE_TEXT:
        if key in body:
            text = field(body, key, str, default="")
            if len(text) > 500:
                raise Invalid(f"{key} must be at most 500 characters")
            profile[key] = text
    if "socials" in body:
        socials = field(body, "socials", dict, default={})
        unknown = set(socials) - set(_SOCIALS)
        if unknown or not all(
            isinstance(v, str) and len(v) <= 200 for v in socials.values()
        ):
            raise Invalid(f"socials takes text for: {', '.join(_SOCIALS)}")
        profile["socials"] = socials
    if "username" in body:
        raise Invalid("the username is chosen at onboarding; it is not a setting")
    if "email" in body:
        email = field(body, "email", str, default="")
        if email and (not _EMAIL.match(email) or len(email) > 254):
            raise Invalid("email is not an e-mail address")
        fields["email"] = email or None
    db.update_user(user["id"], profile=profile, **fields)
    return reply(
        {
            "success": True,
            "settings": _settings_json(request, db.user_by_id(user["id"])),
        }
    )


async def upload_icon(request: Request):
    user = require_user(request)
    form = await request.form(max_files=1, max_fields=5)
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise Invalid("send the image as the multipart field 'file'")
    data = await upload.read(MAX_ICON_BYTES + 1)
    if len(data) > MAX_ICON_BYTES:
        raise TooLarge(f"profile icons are limited to {MAX_ICON_BYTES} bytes")
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > 40_000_000:
            raise Invalid("the image has too many pixels")
        image = image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        raise Invalid("the file is not a readable image") from None
    image.thumbnail((ICON_SIZE, ICON_SIZE))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    svc = services(request)
    name = "icon.png"
    svc.blobs.put_bytes(svc.blobs.path("icons", user["id"], name), buffer.getvalue())
    svc.db.update_user(user["id"], icon=name)
    return reply(
        {
            "success": True,
            "imageUrl": svc.signer.url(f"/files/icons/{user['id']}/{name}"),
        }
    )


async def delete_icon(request: Request):
    user = require_user(request)
    svc = services(request)
    svc.blobs.remove_tree("icons", user["id"])
    svc.db.update_user(user["id"], icon=None)
    return Response(status_code=204)


async def onboarding(request: Request):
    user = require_user(request)
    body = await json_body(request)
    db = services(request).db
    fields: dict = {"onboarded_at": now()}
    username = field(body, "username", str)
    if username and username != user["username"]:
        if user.get("onboarded_at"):
            raise Invalid("the username can only be chosen during onboarding")
        if reason := check_username(username):
            raise Invalid(f"username: {reason}")
        fields["username"] = username
    if "fullName" in body:
        fields["name"] = display_name(body["fullName"], "fullName")
    try:
        db.update_user(user["id"], **fields)
    except sqlite3.IntegrityError:
        raise Conflict(f"the name {username} is taken") from None
    return reply(
        {"success": True, "username": fields.get("username", user["username"])}
    )


routes = [
    Route("/api/users", get_user, methods=["GET"]),
    Route("/api/users", follow, methods=["PATCH"]),
    Route("/api/username/check", check_name, methods=["GET"]),
    Route("/api/settings", get_settings, methods=["GET"]),
    Route("/api/settings", update_settings, methods=["POST"]),
    Route("/api/settings/icon", upload_icon, methods=["POST"]),
    Route("/api/settings/icon", delete_icon, methods=["DELETE"]),
    Route("/api/onboarding", onboarding, methods=["POST"]),
]
