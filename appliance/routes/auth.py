"""Browser sessions: log in with a username and password, get an HTTP-only cookie.

Unsafe requests made with the cookie must echo the session's CSRF token in an
X-CSRF-Token header; the cookie is SameSite=Strict as well."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from starlette.requests import Request
from starlette.routing import Route

from ..errors import Unauthorized
from ..secrets_ import verify_secret
from ..web import (
    SESSION_COOKIE,
    field,
    hash_token,
    json_body,
    reply,
    require_user,
    services,
)

SESSION_DAYS = 7


async def login(request: Request):
    body = await json_body(request)
    username = field(body, "username", str, required=True)
    password = field(body, "password", str, required=True)
    db = services(request).db
    user = db.user_by_name(username)
    stored = user["password_hash"] if user and user["kind"] == "personal" else None
    if not verify_secret(password, stored):
        raise Unauthorized("wrong username or password")
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(24)
    expires = datetime.now(UTC) + timedelta(days=SESSION_DAYS)
    db.create_session(hash_token(token), user["id"], csrf, expires.isoformat())
    response = reply({"username": user["username"], "csrfToken": csrf})
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_DAYS * 86400,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


async def logout(request: Request):
    require_user(request)
    if cookie := request.cookies.get(SESSION_COOKIE):
        services(request).db.delete_session(hash_token(cookie))
    response = reply({"success": True})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def session(request: Request):
    user = require_user(request)
    current = None
    if cookie := request.cookies.get(SESSION_COOKIE):
        current = services(request).db.session(hash_token(cookie))
    return reply(
        {
            "username": user["username"],
            "csrfToken": current["csrf"] if current else None,
        }
    )


routes = [
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
    Route("/api/auth/session", session, methods=["GET"]),
]
