"""Numbers past what SQLite stores (64-bit), in query strings and JSON bodies,
are 400s on every route that takes one, never a crash where they meet the
database."""

from __future__ import annotations

import pytest
from conftest import make_app
from starlette.testclient import TestClient

HUGE = 99999999999999999999999
CALLS = [
    ("GET", "/images?classIds={n}", None),
    ("GET", "/images?offset={n}", None),
    ("GET", "/export?v={n}", None),
    ("GET", "/versions/compare?base={n}&head=1", None),
    ("GET", "/images/clustering?offset={n}", None),
    ("POST", "/restore", {"version": HUGE}),
    ("PATCH", "/export", {"version": HUGE, "description": "x"}),
    ("POST", "/classes/merge", {"sourceClassIds": [HUGE], "targetClassId": 0}),
    ("POST", "/classes/delete", {"classIds": [HUGE]}),
    ("POST", "/splits/redistribute", {"train": HUGE, "val": 0, "test": 0}),
    ("POST", "/ingest", {"sessionId": "x", "classMapping": {"a": HUGE}}),
    ("POST", "/images", {"imageIds": ["0" * 24], "limit": HUGE}),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    app, key = make_app(tmp_path_factory.mktemp("home"))
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        created = client.post(
            "/api/datasets",
            json={"dataset": "d", "name": "D", "classNames": ["a"]},
            headers=auth,
        ).json()
        yield client, auth, created["id"]


@pytest.mark.parametrize("family", ["slug", "id"])
@pytest.mark.parametrize("method,tail,body", CALLS, ids=[c[1] for c in CALLS])
def test_huge_numbers_are_bad_requests(world, family, method, tail, body):
    client, auth, dataset_id = world
    base = (
        "/api/datasets/alice/d" if family == "slug" else f"/api/datasets/{dataset_id}"
    )
    path = base + tail.format(n=HUGE)
    if family == "id" and tail == "/ingest":  # the seed's ingest names the dataset
        path, body = "/api/datasets/ingest", {**body, "datasetId": dataset_id}
    response = client.request(method, path, json=body, headers=auth)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"}


def test_huge_numbers_in_image_and_trash_routes(world):
    client, auth, _ = world
    for method, path, body in [
        ("GET", f"/api/trash?page={HUGE}", None),
        ("PATCH", "/api/images/bulk", {"imageIds": ["0" * 24], "split": HUGE}),
        ("POST", "/api/images/urls", {"imageIds": ["0" * 24], "expiresIn": HUGE}),
    ]:
        response = client.request(method, path, json=body, headers=auth)
        assert response.status_code == 400, (path, response.text)
