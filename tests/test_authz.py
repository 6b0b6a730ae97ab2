"""Every route, every kind of caller: anonymous, a stranger, and a team's viewer,
editor, admin and owner, against the team's private resources.

Each route is classified once below; a route the app has and this table lacks fails
the test, so no route goes unchecked."""

from __future__ import annotations

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from appliance.app import create_app
from appliance.keys import create_key
from appliance.settings import load_settings

CODES = {
    400: "VALIDATION_ERROR",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    429: "RATE_LIMITED",
}
PERSONAS = ("anonymous", "stranger", "viewer", "editor", "admin", "owner")
RANK = {"viewer": 0, "editor": 1, "admin": 2, "owner": 3}

ID = "/api/datasets/{dataset_id:id}"
SLUG = "/api/datasets/{owner}/{dataset}"
DS_IMAGE = "/api/datasets/{dataset}/images/" + "a" * 32
LABELS = {"labels": []}
VERSION = {"version": 1, "description": "x"}
COMPARE_ID = "/api/datasets/{dataset}/versions/compare"
COMPARE_SLUG = "/api/datasets/lab/ds/versions/compare"
ROBOFLOW = "/api/integrations/roboflow"
BUCKETS = "/api/integrations/buckets"
BUCKET = f"{BUCKETS}/{'a' * 24}"
LOCAL = "/api/integrations/local"
LOCAL_ROOT = f"{LOCAL}/{'a' * 24}"
PROJECT_ID = "/api/projects/{project_id:id}"
PROJECT_SLUG = "/api/projects/{owner}/{project}"
MODEL_ID = "/api/models/{model_id:id}"
MODEL_SLUG = "/api/models/{owner}/{project}/{model}"
HOOK = "/api/webhooks/{webhook_id:id}"

# level: anyone | signed | user | self | invitee | member | read | write | admin | owner
TABLE = [
    ("GET", "/api/account/summary", "/api/account/summary", None, "user"),
    ("GET", "/api/api-keys", "/api/api-keys", None, "user"),
    ("POST", "/api/api-keys", "/api/api-keys", {"name": "x"}, "user"),
    ("DELETE", "/api/api-keys", "/api/api-keys?keyId=nope", None, "user"),
    ("DELETE", "/api/api-keys/{key_id}", "/api/api-keys/nope", None, "user"),
    ("POST", "/api/upload/signed-url", "/api/upload/signed-url", {}, "user"),
    ("POST", "/api/upload/complete", "/api/upload/complete", {}, "user"),
    ("PUT", "/uploads/{session_id}", "/uploads/{upload}", None, "signed"),
    ("GET", "/files/{path:path}", "/files/models/{model}/best.pt", None, "signed"),
    (
        "POST",
        "/api/datasets",
        "/api/datasets",
        {"dataset": "n", "name": "N", "owner": "lab"},
        "write",
    ),
    (
        "POST",
        "/api/datasets/ingest",
        "/api/datasets/ingest",
        {"datasetId": "{dataset}"},
        "write",
    ),
    ("GET", "/api/datasets/{owner}", "/api/datasets/lab", None, "anyone"),
    ("GET", ID, "/api/datasets/{dataset}", None, "read"),
    ("GET", f"{ID}/images", "/api/datasets/{dataset}/images", None, "read"),
    ("GET", f"{ID}/export", "/api/datasets/{dataset}/export", None, "read"),
    ("GET", f"{ID}/images/{{hash}}/labels", f"{DS_IMAGE}/labels", None, "read"),
    ("PUT", f"{ID}/images/{{hash}}/labels", f"{DS_IMAGE}/labels", LABELS, "write"),
    ("DELETE", f"{ID}/images/{{hash}}", DS_IMAGE, None, "write"),
    ("GET", SLUG, "/api/datasets/lab/ds", None, "read"),
    ("POST", f"{SLUG}/ingest", "/api/datasets/lab/ds/ingest", {}, "write"),
    ("GET", f"{SLUG}/images", "/api/datasets/lab/ds/images", None, "read"),
    ("GET", f"{SLUG}/export", "/api/datasets/lab/ds/export", None, "read"),
    ("POST", f"{ID}/export", "/api/datasets/{dataset}/export", {}, "write"),
    ("POST", f"{SLUG}/export", "/api/datasets/lab/ds/export", {}, "write"),
    ("PATCH", f"{ID}/export", "/api/datasets/{dataset}/export", VERSION, "write"),
    ("PATCH", f"{SLUG}/export", "/api/datasets/lab/ds/export", VERSION, "write"),
    ("POST", f"{ID}/restore", "/api/datasets/{dataset}/restore", VERSION, "write"),
    ("POST", f"{SLUG}/restore", "/api/datasets/lab/ds/restore", VERSION, "write"),
    ("GET", f"{ID}/versions/compare", f"{COMPARE_ID}?base=current", None, "read"),
    ("GET", f"{SLUG}/versions/compare", f"{COMPARE_SLUG}?base=current", None, "read"),
    ("POST", "/api/integrations/roboflow/preview", ROBOFLOW + "/preview", {}, "user"),
    ("POST", "/api/integrations/roboflow/import", ROBOFLOW + "/import", {}, "user"),
    ("GET", BUCKETS, BUCKETS, None, "user"),
    ("POST", BUCKETS, BUCKETS, {}, "user"),
    ("POST", f"{BUCKETS}/discover", f"{BUCKETS}/discover", {}, "user"),
    ("GET", f"{BUCKETS}/{{id}}/objects", f"{BUCKET}/objects?target=x", None, "user"),
    ("DELETE", f"{BUCKETS}/{{id}}", BUCKET, None, "user"),
    ("GET", LOCAL, LOCAL, None, "user"),
    ("GET", f"{LOCAL}/{{root_id}}/objects", f"{LOCAL_ROOT}/objects", None, "user"),
    (
        "POST",
        f"{LOCAL}/{{root_id}}/ingest",
        f"{LOCAL_ROOT}/ingest",
        {"datasetId": "{dataset}", "key": "x"},
        "write",
    ),
    (
        "POST",
        "/api/projects",
        "/api/projects",
        {"project": "n", "name": "N", "owner": "lab"},
        "write",
    ),
    ("GET", "/api/projects/{owner}", "/api/projects/lab", None, "anyone"),
    ("GET", "/api/projects/{owner}/{project}", "/api/projects/lab/proj", None, "read"),
    (
        "POST",
        "/api/models",
        "/api/models",
        {"owner": "lab", "project": "proj", "model": "n"},
        "write",
    ),
    ("GET", "/api/models/{owner}/{project}", "/api/models/lab/proj", None, "read"),
    (
        "GET",
        "/api/models/ultralytics/{project}/{model}/files",
        "/api/models/ultralytics/yolo26/yolo26n/files",
        None,
        "anyone",
    ),
    (
        "POST",
        "/api/webhooks/training/metrics",
        "/api/webhooks/training/metrics",
        {"project": "lab/proj", "name": "run", "event": "training_started"},
        "write",
    ),
    (
        "POST",
        "/api/webhooks/training/metrics",
        "/api/webhooks/training/metrics",
        {"modelId": "{model}", "event": "training_started"},
        "write",
    ),
    (
        "POST",
        "/api/webhooks/models/upload",
        "/api/webhooks/models/upload",
        {"filename": "best.pt", "modelId": "{model}"},
        "write",
    ),
    (
        "GET",
        "/api/models/{owner}/{project}/{model}",
        "/api/models/lab/proj/m",
        None,
        "read",
    ),
    (
        "GET",
        "/api/models/{owner}/{project}/{model}/files",
        "/api/models/lab/proj/m/files",
        None,
        "read",
    ),
    (
        "GET",
        "/api/models/{owner}/{project}/{model}/training",
        "/api/models/lab/proj/m/training",
        None,
        "read",
    ),
    (
        "DELETE",
        "/api/models/{owner}/{project}/{model}/training",
        "/api/models/lab/proj/m/training",
        None,
        "write",
    ),
    (
        "POST",
        "/api/models/{owner}/{project}/{model}/predict",
        "/api/models/lab/proj/m/predict",
        None,
        "read",
    ),
    (
        "POST",
        "/api/models/{owner}/{project}/{model}/exports",
        "/api/models/lab/proj/m/exports",
        {"format": "onnx"},
        "write",
    ),
    (
        "GET",
        "/api/models/{owner}/{project}/{model}/exports",
        "/api/models/lab/proj/m/exports",
        None,
        "read",
    ),
    (
        "GET",
        "/api/models/{owner}/{project}/{model}/exports/{export_id}",
        "/api/models/lab/proj/m/exports/{export}",
        None,
        "read",
    ),
    (
        "POST",
        "/api/training/start",
        "/api/training/start",
        {"modelId": "{model}"},
        "write",
    ),
    (
        "GET",
        "/api/training/gpu-availability",
        "/api/training/gpu-availability",
        None,
        "user",
    ),
    ("GET", "/api/jobs", "/api/jobs", None, "user"),
    ("GET", "/api/jobs/{job_id}", "/api/jobs/{job}", None, "self"),
    ("POST", "/api/auth/login", "/api/auth/login", {}, "anyone"),
    ("POST", "/api/auth/logout", "/api/auth/logout", None, "user"),
    ("GET", "/api/auth/session", "/api/auth/session", None, "user"),
    ("GET", "/api/teams", "/api/teams", None, "user"),
    (
        "POST",
        "/api/teams/create",
        "/api/teams/create",
        {"username": "other-team"},
        "user",
    ),
    ("GET", "/api/members", "/api/members?owner=lab", None, "member"),
    (
        "POST",
        "/api/members",
        "/api/members",
        {"owner": "lab", "username": "z", "role": "viewer"},
        "admin",
    ),
    (
        "POST",
        "/api/members/transfer-ownership",
        "/api/members/transfer-ownership",
        {"owner": "lab", "userId": "{extra}"},
        "owner",
    ),
    (
        "PATCH",
        "/api/members/{user_id}",
        "/api/members/{extra}",
        {"owner": "lab", "role": "editor"},
        "admin",
    ),
    (
        "DELETE",
        "/api/members/{user_id}",
        "/api/members/{extra}?owner=lab",
        None,
        "admin",
    ),
    (
        "POST",
        "/api/invites/accept",
        "/api/invites/accept",
        {"token": "{token}"},
        "invitee",
    ),
    ("GET", "/api/invites/info", "/api/invites/info?token={token}", None, "anyone"),
    ("GET", "/api/users", "/api/users?username=lab", None, "user"),
    (
        "PATCH",
        "/api/users",
        "/api/users",
        {"username": "lab", "followed": True},
        "user",
    ),
    ("GET", "/api/username/check", "/api/username/check?username=abc", None, "user"),
    ("GET", "/api/settings", "/api/settings", None, "user"),
    ("POST", "/api/settings", "/api/settings", {"bio": "hi"}, "user"),
    ("POST", "/api/settings/icon", "/api/settings/icon", None, "user"),
    ("DELETE", "/api/settings/icon", "/api/settings/icon", None, "user"),
    ("POST", "/api/onboarding", "/api/onboarding", {}, "user"),
    ("GET", "/api/explore/search", "/api/explore/search?q=ds", None, "anyone"),
    ("GET", "/api/gdpr", "/api/gdpr?jobId={job}", None, "user"),
    ("POST", "/api/gdpr", "/api/gdpr", {"action": "delete"}, "user"),
    ("GET", "/api/explore/sidebar", "/api/explore/sidebar", None, "anyone"),
    ("DELETE", "/api/invites/{invite_id}", "/api/invites/{invite}", None, "admin"),
    (
        "POST",
        "/api/invites/{invite_id}/resend",
        "/api/invites/{invite}/resend",
        None,
        "admin",
    ),
    ("GET", f"{ID}/embeddings", "/api/datasets/{dataset}/embeddings", None, "read"),
    ("POST", f"{ID}/embeddings", "/api/datasets/{dataset}/embeddings", {}, "write"),
    ("DELETE", f"{ID}/embeddings", "/api/datasets/{dataset}/embeddings", None, "write"),
    (
        "GET",
        f"{ID}/images/clustering",
        "/api/datasets/{dataset}/images/clustering",
        None,
        "read",
    ),
    (
        "POST",
        f"{ID}/predict",
        "/api/datasets/{dataset}/predict",
        {"imageHash": "a" * 32, "modelId": "{model}"},
        "write",
    ),
    ("POST", f"{ID}/annotate", "/api/datasets/{dataset}/annotate", {}, "write"),
    ("DELETE", f"{ID}/annotate", "/api/datasets/{dataset}/annotate", None, "write"),
    ("GET", f"{SLUG}/embeddings", "/api/datasets/lab/ds/embeddings", None, "read"),
    ("POST", f"{SLUG}/embeddings", "/api/datasets/lab/ds/embeddings", {}, "write"),
    ("DELETE", f"{SLUG}/embeddings", "/api/datasets/lab/ds/embeddings", None, "write"),
    (
        "GET",
        f"{SLUG}/images/clustering",
        "/api/datasets/lab/ds/images/clustering",
        None,
        "read",
    ),
    ("POST", f"{SLUG}/annotate", "/api/datasets/lab/ds/annotate", {}, "write"),
    ("DELETE", f"{SLUG}/annotate", "/api/datasets/lab/ds/annotate", None, "write"),
    (
        "POST",
        "/api/images/{image_id}/predict",
        "/api/images/{image}/predict",
        {"modelId": "ul://lab/proj/m"},
        "write",
    ),
    # Dataset and image operations, both route families, and the trash.
    ("GET", "/api/datasets", "/api/datasets?owner=lab", None, "anyone"),
    *(
        (method, f"{template}{tail}", f"{path}{tail}", body, level)
        for template, path in (
            (ID, "/api/datasets/{dataset}"),
            (SLUG, "/api/datasets/lab/ds"),
        )
        for method, tail, body, level in (
            ("PATCH", "", {"description": "x"}, "write"),
            ("DELETE", "", None, "write"),
            ("POST", "/clone", {}, "write"),
            ("GET", "/class-stats", None, "read"),
            (
                "POST",
                "/classes/merge",
                {"sourceClassIds": [0], "targetClassId": 0},
                "write",
            ),
            ("POST", "/classes/delete", {"classIds": [0]}, "write"),
            (
                "POST",
                "/splits/redistribute",
                {"train": 80, "val": 20, "test": 0},
                "write",
            ),
            ("GET", "/models", None, "read"),
            ("POST", "/images", {"imageIds": ["{image}"]}, "read"),
        )
    ),
    (
        "POST",
        f"{ID}/images/urls",
        "/api/datasets/{dataset}/images/urls",
        {"hashes": ["a" * 32]},
        "read",
    ),
    (
        "PATCH",
        f"{ID}/images/bulk",
        "/api/datasets/{dataset}/images/bulk",
        {"imageIds": ["{image}"], "split": "val"},
        "write",
    ),
    (
        "DELETE",
        f"{ID}/images/bulk",
        "/api/datasets/{dataset}/images/bulk",
        {"imageIds": ["{image}"]},
        "write",
    ),
    ("POST", "/api/images/urls", "/api/images/urls", {"imageIds": ["{image}"]}, "read"),
    (
        "PATCH",
        "/api/images/bulk",
        "/api/images/bulk",
        {"imageIds": ["{image}"], "split": "val"},
        "write",
    ),
    (
        "DELETE",
        "/api/images/bulk",
        "/api/images/bulk",
        {"imageIds": ["{image}"]},
        "write",
    ),
    ("GET", "/api/images/{image_id}", "/api/images/{image}", None, "read"),
    (
        "PATCH",
        "/api/images/{image_id}",
        "/api/images/{image}",
        {"metadata": {"a": 1}},
        "write",
    ),
    ("DELETE", "/api/images/{image_id}", "/api/images/{image}", None, "write"),
    ("GET", "/api/trash", "/api/trash?owner=lab", None, "member"),
    (
        "POST",
        "/api/trash",
        "/api/trash",
        {"id": "{trashed}", "type": "dataset"},
        "write",
    ),
    ("DELETE", "/api/trash", "/api/trash?owner=lab", {"all": True}, "write"),
    # Projects and models, both route families, and their trash.
    ("GET", "/api/projects", "/api/projects?owner=lab", None, "anyone"),
    ("GET", "/api/models", "/api/models?projectId={project}", None, "read"),
    ("GET", "/api/models/completed", "/api/models/completed", None, "user"),
    ("GET", PROJECT_ID, "/api/projects/{project}", None, "read"),
    *(
        (method, f"{template}{tail}", f"{path}{tail}", body, level)
        for template, path in (
            (PROJECT_ID, "/api/projects/{project}"),
            (PROJECT_SLUG, "/api/projects/lab/proj"),
        )
        for method, tail, body, level in (
            ("PATCH", "", {"description": "x"}, "write"),
            ("DELETE", "", None, "write"),
            ("POST", "/clone", {}, "write"),
            ("POST", "/icon", None, "write"),
            ("DELETE", "/icon", None, "write"),
        )
    ),
    *(
        (method, f"{MODEL_ID}{tail}", f"/api/models/{{model}}{tail}", body, level)
        for method, tail, body, level in (
            ("GET", "", None, "read"),
            ("GET", "/files", None, "read"),
            ("GET", "/training", None, "read"),
            ("DELETE", "/training", None, "write"),
            ("POST", "/predict", None, "read"),
        )
    ),
    *(
        (method, f"{template}{tail}", f"{path}{tail}", body, level)
        for template, path in (
            (MODEL_ID, "/api/models/{model}"),
            (MODEL_SLUG, "/api/models/lab/proj/m"),
        )
        for method, tail, body, level in (
            ("PATCH", "", {"description": "x"}, "write"),
            ("DELETE", "", None, "write"),
            ("GET", "/download", None, "read"),
            ("POST", "/track-download", None, "read"),
            ("POST", "/clone", {"owner": "lab", "project": "proj"}, "write"),
            ("POST", "/training/resume", None, "write"),
        )
    ),
    (
        "POST",
        "/api/trash",
        "/api/trash",
        {"id": "{oldproj}", "type": "project"},
        "write",
    ),
    (
        "POST",
        "/api/trash",
        "/api/trash",
        {"id": "{oldmodel}", "type": "model"},
        "write",
    ),
    ("GET", "/api/webhooks", "/api/webhooks?owner=lab", None, "admin"),
    (
        "POST",
        "/api/webhooks",
        "/api/webhooks",
        {"owner": "lab", "url": "http://127.0.0.1:9/hook"},
        "admin",
    ),
    ("GET", HOOK, "/api/webhooks/{webhook}", None, "admin"),
    ("PATCH", HOOK, "/api/webhooks/{webhook}", {"description": "x"}, "admin"),
    ("DELETE", HOOK, "/api/webhooks/{webhook}", None, "admin"),
    ("GET", f"{HOOK}/deliveries", "/api/webhooks/{webhook}/deliveries", None, "admin"),
    ("POST", f"{HOOK}/test", "/api/webhooks/{webhook}/test", None, "admin"),
]


def _world(home):
    settings = load_settings(environ={}, home=str(home), public_url="http://testserver")
    app = create_app(settings, run_queue=False)
    db = app.state.services.db
    ids, headers = {}, {"anonymous": {}}
    users = {
        name: db.create_user(name)
        for name in ("owner", "admin", "editor", "viewer", "stranger", "extra")
    }
    for name, user in users.items():
        headers[name] = {"Authorization": f"Bearer {create_key(db, user['id'])}"}
    team = db.create_team("lab", "Lab", users["owner"]["id"])
    for name in ("admin", "editor", "viewer"):
        db.set_membership(team["id"], users[name]["id"], name)
    db.set_membership(team["id"], users["extra"]["id"], "viewer")
    dataset = db.create_dataset(
        owner_id=team["id"], slug="ds", name="ds", task="detect", visibility="private"
    )
    image = {
        "hash": "a" * 32,
        "ext": "jpg",
        "name": "a.jpg",
        "width": 8,
        "height": 8,
        "bytes": 1,
        "split": "train",
        "labels": [],
        "label_count": 0,
    }
    db.replace_images(dataset["id"], [image], [], "setup")
    trashed = db.create_dataset(
        owner_id=team["id"], slug="old", name="old", task="detect", visibility="private"
    )
    db.trash_dataset(trashed["id"])
    project = db.create_project(
        owner_id=team["id"], slug="proj", name="proj", visibility="private"
    )
    model = db.create_model(project_id=project["id"], slug="m", name="m")
    weights = app.state.services.blobs.path("models", model["id"], "best.pt")
    app.state.services.blobs.put_bytes(weights, b"weights")
    db.update_model(model["id"], weights_size=7, status="completed")
    old_project = db.create_project(
        owner_id=team["id"], slug="oldp", name="oldp", visibility="private"
    )
    db.trash_project(old_project["id"])
    old_model = db.create_model(project_id=project["id"], slug="oldm", name="oldm")
    db.trash_model(old_model["id"])
    export = db.create_export(model_id=model["id"], format="onnx")
    job = db.create_job("ingest", dataset["id"], users["editor"]["id"])
    upload = db.create_upload(
        user_id=users["editor"]["id"],
        asset_type="datasets",
        asset_id="x",
        filename="x.zip",
        content_type="application/zip",
        total_bytes=3,
        expires_at="2999-01-01T00:00:00.000Z",
    )
    from appliance.web import hash_token

    invite = db.create_invite(
        team_id=team["id"],
        invitee="stranger",
        role="viewer",
        token_hash=hash_token("tok-123"),
        invited_by=users["owner"]["id"],
        expires_at="2999-01-01T00:00:00.000Z",
    )
    _analysed(app, dataset["id"])
    webhook = db.create_webhook(team["id"], "http://127.0.0.1:9/hook", ["ping"], "s")
    ids.update(
        webhook=webhook["id"],
        image=db.image_by_hash(dataset["id"], "a" * 32)["id"],
        dataset=dataset["id"],
        project=project["id"],
        model=model["id"],
        export=export["id"],
        job=job["id"],
        upload=upload["id"],
        invite=invite["id"],
        token="tok-123",
        extra=users["extra"]["id"],
        trashed=trashed["id"],
        oldproj=old_project["id"],
        oldmodel=old_model["id"],
    )
    return app, headers, ids


def _analysed(app, dataset_id):
    """A stored embedding analysis of the dataset, so its layout can be read."""
    import numpy as np

    from appliance import embeddings

    svc = app.state.services
    ids = [r["id"] for r in svc.db.image_refs(dataset_id)]
    layout = embeddings.Analysis(
        np.zeros((len(ids), 2), np.float32), np.zeros(len(ids), np.int32)
    )
    target = svc.blobs.path("embeddings", dataset_id, "setup.npz")
    with svc.blobs.writer(target) as handle:
        vectors = np.ones((len(ids), 4), np.float32)
        embeddings.save(handle, ids, vectors, layout, np.zeros(len(ids), bool))
    svc.db.save_analysis(
        dataset_id,
        job_id="setup",
        feature="test",
        dims=4,
        count=len(ids),
        file="setup.npz",
    )


def _fill(value, ids):
    if isinstance(value, list):
        return [_fill(v, ids) for v in value]
    if isinstance(value, str):
        for key, real in ids.items():
            value = value.replace("{" + key + "}", real)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, ids) for k, v in value.items()}
    return value


def _expected_denial(level: str, persona: str) -> int | None:
    """The status a persona must get, or None when it must not be denied."""
    if level == "anyone":
        return None
    if level == "signed":
        return 401
    if persona == "anonymous":
        return 404 if level == "read" else 401
    if level == "user":
        return None
    if level == "self":
        return None if persona == "editor" else 404
    if level == "invitee":
        return None if persona == "stranger" else 403
    if persona == "stranger":
        return 404
    needed = {
        "member": "viewer",
        "read": "viewer",
        "write": "editor",
        "admin": "admin",
        "owner": "owner",
    }[level]
    return None if RANK[persona] >= RANK[needed] else 403


def test_every_route_is_in_the_table(tmp_path):
    app, _, _ = _world(tmp_path / "h")
    routes = {
        (method, r.path)
        for r in app.routes
        if isinstance(r, Route)
        for method in r.methods - {"HEAD"}
    }
    covered = {(method, template) for method, template, *_ in TABLE}
    assert routes - covered == set(), "classify these routes in TABLE"


@pytest.mark.parametrize(
    "method,template,path,body,level", TABLE, ids=[f"{m} {p}" for m, _, p, *_ in TABLE]
)
def test_route_access(tmp_path, method, template, path, body, level):
    for persona in PERSONAS:
        app, headers, ids = _world(tmp_path / persona)
        with TestClient(app) as client:
            kwargs = {"headers": headers[persona]}
            if body is not None:
                kwargs["json"] = _fill(body, ids)
            response = client.request(method, _fill(path, ids), **kwargs)
        denial = _expected_denial(level, persona)
        status = response.status_code
        assert status < 500, (persona, status, response.text)
        if status >= 400:
            assert set(response.json()) == {"error"} and response.json()["error"]
            assert response.headers["x-error-code"] == CODES.get(
                status, response.headers["x-error-code"]
            )
        if denial is None:
            assert status not in (401, 403) and not (
                status == 404 and level in ("read", "member")
            ), (persona, status, response.text)
        else:
            assert status == denial, (persona, status, response.text)
