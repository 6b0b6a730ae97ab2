"""Users, sessions, keys, teams, roles and invites through the real app in-process."""

from __future__ import annotations

import json

import pytest
from conftest import make_app
from starlette.testclient import TestClient

from appliance.app import create_app
from appliance.keys import create_key
from appliance.secrets_ import hash_secret
from appliance.settings import load_settings


@pytest.fixture
def world(home):
    settings = load_settings(environ={}, home=str(home), public_url="http://testserver")
    app = create_app(settings, run_queue=False)
    db = app.state.services.db
    people = {}
    for name in ("owner", "admin", "editor", "viewer", "stranger"):
        user = db.create_user(name, password_hash=hash_secret(f"{name}-password"))
        people[name] = {"Authorization": f"Bearer {create_key(db, user['id'])}"}
    with TestClient(app) as client:
        team = client.post(
            "/api/teams/create",
            json={"username": "lab", "fullName": "The Lab"},
            headers=people["owner"],
        )
        assert team.status_code == 201
        for role in ("admin", "editor", "viewer"):
            invite = client.post(
                "/api/members",
                json={"owner": "lab", "username": role, "role": role},
                headers=people["owner"],
            ).json()["invite"]
            accepted = client.post(
                "/api/invites/accept",
                json={"token": invite["token"]},
                headers=people[role],
            )
            assert (
                accepted.status_code == 200 and accepted.json()["team"]["role"] == role
            )
        yield client, people, db


def test_roles_decide_what_members_may_do_in_a_team(world):
    client, people, _ = world
    members = client.get("/api/members?owner=lab", headers=people["viewer"]).json()[
        "members"
    ]
    assert {m["username"]: m["role"] for m in members} == {
        "owner": "owner",
        "admin": "admin",
        "editor": "editor",
        "viewer": "viewer",
    }
    assert (
        client.get("/api/members?owner=lab", headers=people["stranger"]).status_code
        == 404
    )
    body = {"dataset": "shared", "name": "Shared", "owner": "lab"}
    assert (
        client.post("/api/datasets", json=body, headers=people["viewer"]).status_code
        == 403
    )
    assert (
        client.post("/api/datasets", json=body, headers=people["stranger"]).status_code
        == 404
    )
    assert (
        client.post("/api/datasets", json=body, headers=people["editor"]).status_code
        == 201
    )
    for who, status in (
        ("owner", 200),
        ("admin", 200),
        ("editor", 200),
        ("viewer", 200),
        ("stranger", 404),
    ):
        assert (
            client.get("/api/datasets/lab/shared", headers=people[who]).status_code
            == status
        ), who
    assert (
        client.get("/api/datasets/lab/shared").status_code == 404
    )  # private: anonymous sees nothing
    summary = client.get("/api/account/summary", headers=people["editor"]).json()
    assert [(t["username"], t["role"]) for t in summary["teams"]] == [("lab", "editor")]


def test_member_management_needs_admin(world):
    client, people, db = world
    editor_id = db.user_by_name("editor")["id"]
    viewer_id = db.user_by_name("viewer")["id"]
    change = {"owner": "lab", "role": "admin"}
    assert (
        client.patch(
            f"/api/members/{viewer_id}", json=change, headers=people["editor"]
        ).status_code
        == 403
    )
    assert (
        client.patch(
            f"/api/members/{viewer_id}", json=change, headers=people["admin"]
        ).status_code
        == 200
    )
    assert db.membership_role(db.user_by_name("lab")["id"], viewer_id) == "admin"
    invite = {"owner": "lab", "username": "stranger", "role": "viewer"}
    assert (
        client.post("/api/members", json=invite, headers=people["editor"]).status_code
        == 403
    )
    assert (
        client.post(
            "/api/members", json={**invite, "role": "owner"}, headers=people["admin"]
        ).status_code
        == 400
    )
    assert (
        client.delete(
            f"/api/members/{editor_id}?owner=lab", headers=people["admin"]
        ).status_code
        == 200
    )
    assert (
        client.get("/api/members?owner=lab", headers=people["editor"]).status_code
        == 404
    )
    owner_id = db.user_by_name("owner")["id"]
    assert (
        client.delete(
            f"/api/members/{owner_id}?owner=lab", headers=people["admin"]
        ).status_code
        == 403
    )


def test_transfer_ownership(world):
    client, people, db = world
    team_id = db.user_by_name("lab")["id"]
    admin_id = db.user_by_name("admin")["id"]
    body = {"owner": "lab", "userId": admin_id}
    assert (
        client.post(
            "/api/members/transfer-ownership", json=body, headers=people["admin"]
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/api/members/transfer-ownership", json=body, headers=people["owner"]
        ).status_code
        == 200
    )
    assert db.membership_role(team_id, admin_id) == "owner"
    assert db.membership_role(team_id, db.user_by_name("owner")["id"]) == "admin"


def test_invites_resend_rotates_revoke_and_info(world):
    client, people, _ = world
    made = client.post(
        "/api/members",
        json={"owner": "lab", "email": "new@lab.local", "role": "editor"},
        headers=people["admin"],
    ).json()["invite"]
    info = client.get(f"/api/invites/info?token={made['token']}").json()
    assert info["team"]["username"] == "lab" and info["role"] == "editor"
    resent = client.post(
        f"/api/invites/{made['id']}/resend", headers=people["admin"]
    ).json()["invite"]
    assert resent["token"] != made["token"]
    assert client.get(f"/api/invites/info?token={made['token']}").status_code == 404
    assert (
        client.delete(
            f"/api/invites/{made['id']}", headers=people["editor"]
        ).status_code
        == 403
    )
    assert (
        client.delete(f"/api/invites/{made['id']}", headers=people["admin"]).status_code
        == 200
    )
    accepted = client.post(
        "/api/invites/accept",
        json={"token": resent["token"]},
        headers=people["stranger"],
    )
    assert accepted.status_code == 404


def test_expired_invites_are_refused(world):
    client, people, db = world
    made = client.post(
        "/api/members",
        json={"owner": "lab", "username": "stranger"},
        headers=people["owner"],
    ).json()["invite"]
    db.update_invite(made["id"], expires_at="2020-01-01T00:00:00.000Z")
    response = client.post(
        "/api/invites/accept", json={"token": made["token"]}, headers=people["stranger"]
    )
    assert response.status_code == 400 and "expired" in response.json()["error"]


def test_api_keys_create_list_revoke(world):
    client, people, _ = world
    made = client.post("/api/api-keys", json={"name": "ci"}, headers=people["editor"])
    assert made.status_code == 201
    key = made.json()["key"]
    fresh = {"Authorization": f"Bearer {key}"}
    listed = client.get("/api/api-keys", headers=fresh).json()["keys"]
    assert [k["name"] for k in listed] == ["default", "ci"]
    assert all(key not in str(k) for k in listed) and listed[1]["keyPrefix"] == key[:11]
    assert set(listed[1]) == {"keyId", "name", "keyPrefix", "createdAt"}
    detailed = client.get("/api/api-keys?details=true", headers=fresh).json()["keys"]
    assert detailed[1]["lastUsedAt"] is not None
    revoked = client.delete(
        f"/api/api-keys?keyId={made.json()['keyId']}", headers=people["editor"]
    )
    assert revoked.status_code == 200
    assert client.get("/api/account/summary", headers=fresh).status_code == 401
    other = client.delete(
        f"/api/api-keys?keyId={made.json()['keyId']}", headers=people["viewer"]
    )
    assert other.status_code == 404


def test_sessions_log_in_with_a_cookie_and_need_csrf(world):
    client, _, _ = world
    wrong = client.post(
        "/api/auth/login", json={"username": "editor", "password": "nope-nope"}
    )
    assert wrong.status_code == 401
    login = client.post(
        "/api/auth/login", json={"username": "editor", "password": "editor-password"}
    )
    assert login.status_code == 200
    cookie = login.headers["set-cookie"]
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    csrf = login.json()["csrfToken"]
    assert client.get("/api/account/summary").json()["username"] == "editor"
    forged = client.post("/api/datasets", json={"dataset": "c", "name": "C"})
    assert forged.status_code == 403 and "CSRF" in forged.json()["error"]
    made = client.post(
        "/api/datasets",
        json={"dataset": "c", "name": "C"},
        headers={"X-CSRF-Token": csrf},
    )
    assert made.status_code == 201
    assert (
        client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code
        == 200
    )
    assert client.get("/api/account/summary").status_code == 401


def test_team_names_follow_username_rules(world):
    client, people, _ = world
    for name in (
        "Lab",
        "a",
        "ab--c",
        "-ab",
        "images",
        "x" * 40,
        "AbCdEfGhIjKlMnOpQrSt",
    ):
        response = client.post(
            "/api/teams/create", json={"username": name}, headers=people["owner"]
        )
        assert response.status_code == 400, name
    assert (
        client.post(
            "/api/teams/create", json={"username": "lab"}, headers=people["owner"]
        ).status_code
        == 409
    )


def test_profiles_follows_and_username_checks(world):
    client, people, _ = world
    followed = client.patch(
        "/api/users",
        json={"username": "owner", "followed": True},
        headers=people["viewer"],
    )
    assert followed.json() == {"followed": True, "followerCount": 1}
    profile = client.get("/api/users?username=owner", headers=people["viewer"]).json()[
        "user"
    ]
    assert profile["isFollowed"] is True and profile["accountType"] == "personal"
    assert (
        client.get("/api/users?username=lab", headers=people["viewer"]).json()["user"][
            "accountType"
        ]
        == "team"
    )
    assert (
        client.get("/api/users?username=nobody", headers=people["viewer"]).status_code
        == 404
    )
    taken = client.get(
        "/api/username/check?username=lab&suggest=true", headers=people["viewer"]
    ).json()
    assert taken["available"] is False and taken["suggestion"] == "lab-2"
    assert (
        client.get("/api/username/check?username=Bad", headers=people["viewer"]).json()[
            "available"
        ]
        is False
    )
    assert (
        client.get(
            "/api/username/check?username=free-one", headers=people["viewer"]
        ).json()["available"]
        is True
    )


def test_settings_and_icon(world):
    import io

    from PIL import Image

    client, people, _ = world
    saved = client.post(
        "/api/settings",
        json={"fullName": "Vi Ewer", "bio": "labels", "socials": {"github": "vi"}},
        headers=people["viewer"],
    )
    assert saved.status_code == 200 and saved.json()["settings"]["bio"] == "labels"
    assert (
        client.post(
            "/api/settings",
            json={"socials": {"myspace": "x"}},
            headers=people["viewer"],
        ).status_code
        == 400
    )
    buffer = io.BytesIO()
    Image.new("RGBA", (900, 300), (0, 0, 255, 128)).save(buffer, "PNG")
    icon = client.post(
        "/api/settings/icon",
        files={"file": ("me.png", buffer.getvalue(), "image/png")},
        headers=people["viewer"],
    )
    assert icon.status_code == 200
    fetched = client.get(icon.json()["imageUrl"])
    assert fetched.status_code == 200 and Image.open(
        io.BytesIO(fetched.content)
    ).size == (256, 85)
    junk = client.post(
        "/api/settings/icon",
        files={"file": ("x.png", b"not an image", "image/png")},
        headers=people["viewer"],
    )
    assert junk.status_code == 400
    big = client.post(
        "/api/settings/icon",
        files={"file": ("x.png", b"0" * (3 * 1024 * 1024), "image/png")},
        headers=people["viewer"],
    )
    assert big.status_code == 413
    assert (
        client.delete("/api/settings/icon", headers=people["viewer"]).status_code == 204
    )


def test_explore_lists_only_public_content(world):
    client, people, db = world
    team = db.user_by_name("lab")
    db.create_dataset(
        owner_id=team["id"],
        slug="open-cars",
        name="Open cars",
        task="detect",
        visibility="public",
    )
    db.create_dataset(
        owner_id=team["id"],
        slug="secret-cars",
        name="Secret cars",
        task="detect",
        visibility="private",
    )
    db.create_project(
        owner_id=team["id"], slug="open-proj", name="Open project", visibility="public"
    )
    found = client.get("/api/explore/search?q=cars").json()
    assert [d["dataset"] for d in found["datasets"]] == ["open-cars"] and found[
        "hasMore"
    ] is False
    only = client.get("/api/explore/search?type=projects&sort=name-asc").json()
    assert only["datasets"] == [] and [p["project"] for p in only["projects"]] == [
        "open-proj"
    ]
    assert client.get("/api/explore/search?sort=loudest").status_code == 400
    assert (
        client.get("/api/datasets/lab/open-cars").status_code == 200
    )  # anonymous read of public
    assert client.get("/api/datasets/lab/secret-cars").status_code == 404


def test_gdpr_export_is_a_job_and_delete_needs_the_word(home, tmp_path):
    import io
    import time
    import zipfile

    app, key = make_app(home, "gina")
    db = app.state.services.db
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        client.post(
            "/api/datasets", json={"dataset": "mine", "name": "Mine"}, headers=auth
        )
        client.post(
            "/api/projects", json={"project": "proj", "name": "Proj"}, headers=auth
        )
        job = client.post("/api/gdpr", json={"action": "export"}, headers=auth).json()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = client.get(f"/api/gdpr?jobId={job['jobId']}", headers=auth).json()[
                "job"
            ]
            if state["status"] in ("completed", "failed"):
                break
            time.sleep(0.1)
        assert state["status"] == "completed", state
        archive = zipfile.ZipFile(io.BytesIO(client.get(state["downloadUrl"]).content))
        names = set(archive.namelist())
        assert {
            "account.json",
            "datasets/mine/dataset.json",
            "projects/proj/project.json",
        } <= names
        assert "password_hash" not in archive.read("account.json").decode()
        team = client.post(
            "/api/teams/create", json={"username": "gina-team"}, headers=auth
        )
        assert team.status_code == 201
        no_word = client.post("/api/gdpr", json={"action": "delete"}, headers=auth)
        assert no_word.status_code == 400
        owns_team = client.post(
            "/api/gdpr",
            json={"action": "delete", "confirmationWord": "DELETE"},
            headers=auth,
        )
        assert owns_team.status_code == 409
        gone_team = client.post(
            "/api/gdpr",
            json={
                "action": "delete",
                "confirmationWord": "DELETE",
                "teamUsername": "gina-team",
            },
            headers=auth,
        )
        assert gone_team.status_code == 200
        gone = client.post(
            "/api/gdpr",
            json={"action": "delete", "confirmationWord": "DELETE"},
            headers=auth,
        )
        assert gone.json()["deleted"] == {"datasets": 1, "projects": 1, "models": 0}
        assert client.get("/api/account/summary", headers=auth).status_code == 401
    assert (
        db.user_by_name("gina") is None
        and db.scalar("SELECT count(*) FROM datasets") == 0
    )


def test_no_secret_reaches_a_log_line_and_cors_stays_closed(home, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    settings = load_settings(environ={}, home=str(home), public_url="http://testserver")
    app = create_app(settings, run_queue=False)
    db = app.state.services.db
    user = db.create_user("sam", password_hash=hash_secret("sam-password-1"))
    key = create_key(db, user["id"])
    with TestClient(app) as client:
        client.get("/api/account/summary", headers={"Authorization": f"Bearer {key}"})
        client.get(
            "/api/account/summary", headers={"Authorization": "Bearer ul_" + "f" * 40}
        )
        login = client.post(
            "/api/auth/login", json={"username": "sam", "password": "sam-password-1"}
        )
        made = client.post(
            "/api/api-keys",
            json={"name": "x"},
            headers={"X-CSRF-Token": login.json()["csrfToken"]},
        )
        preflight = client.options(
            "/api/account/summary",
            headers={
                "Origin": "http://elsewhere.example",
                "Access-Control-Request-Method": "GET",
            },
        )
    text = caplog.text
    for secret in (
        key,
        "sam-password-1",
        made.json()["key"],
        login.cookies.get("appliance_session") or "x" * 40,
    ):
        assert secret not in text
    assert "access-control-allow-origin" not in {h.lower() for h in preflight.headers}


def test_second_trial_findings(world):
    client, people, db = world
    owner_id = db.user_by_name("owner")["id"]
    to_self = client.post(
        "/api/members/transfer-ownership",
        json={"owner": "lab", "userId": owner_id},
        headers=people["owner"],
    )
    assert to_self.status_code == 400
    assert db.membership_role(db.user_by_name("lab")["id"], owner_id) == "owner"
    assert (
        client.post(
            "/api/members/transfer-ownership",
            json={"owner": "lab", "userId": ""},
            headers=people["owner"],
        ).status_code
        == 400
    )
    # Invites name one person, who alone may accept; nonsense names are refused.
    for invitee, status in (
        ("nosuchuser", 404),
        ("editor", 409),
        ("<script>", 404),
        ("not-an-email@", 400),
    ):
        made = client.post(
            "/api/members",
            json={"owner": "lab", "username": invitee},
            headers=people["owner"],
        )
        assert made.status_code == status, invitee
    made = client.post(
        "/api/members",
        json={"owner": "lab", "username": "stranger"},
        headers=people["owner"],
    )
    token = made.json()["invite"]["token"]
    again = client.post(
        "/api/members",
        json={"owner": "lab", "username": "stranger"},
        headers=people["owner"],
    )
    assert again.status_code == 409
    assert (
        client.post(
            "/api/invites/accept", json={"token": token}, headers=people["viewer"]
        ).status_code
        == 403
    )
    assert (
        client.post(
            "/api/invites/accept", json={"token": token}, headers=people["stranger"]
        ).status_code
        == 200
    )
    # Lone surrogates are bad requests, not server errors.
    for path, body in (
        ("/api/teams/create", {"username": "okteam", "fullName": "\ud800"}),
        ("/api/settings", {"bio": "\ud800"}),
        ("/api/api-keys", {"name": "\udfff"}),
    ):
        raw = json.dumps(body)  # ASCII escapes: the only way to send a lone surrogate
        response = client.post(path, content=raw, headers=people["viewer"])
        assert response.status_code == 400, path
    # A bad key is refused even on a public read.
    bad = {"Authorization": "Bearer ul_" + "0" * 40}
    assert client.get("/api/projects/lab", headers=bad).status_code == 401
    assert client.get("/api/datasets/lab", headers=bad).status_code == 401


def test_gdpr_export_is_gone_with_the_account(home):
    import time

    app, key = make_app(home, "hal")
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        job = client.post("/api/gdpr", json={"action": "export"}, headers=auth).json()
        for _ in range(300):
            state = client.get(f"/api/gdpr?jobId={job['jobId']}", headers=auth).json()[
                "job"
            ]
            if state["status"] == "completed":
                break
            time.sleep(0.1)
        assert client.get(state["downloadUrl"]).status_code == 200
        client.post(
            "/api/gdpr",
            json={"action": "delete", "confirmationWord": "DELETE"},
            headers=auth,
        )
        assert client.get(state["downloadUrl"]).status_code == 404
