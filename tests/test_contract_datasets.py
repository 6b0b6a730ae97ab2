"""Every JSON response of the dataset, image and trash operations, successes
and errors, checked against the contract's schema for its status, through the
real app; the seed's id routes too, where they answer in the contract's shapes
(the seed's list and model entries add its own field names)."""

from __future__ import annotations

import pytest
from conftest import add_images, make_app
from contract import problems
from starlette.testclient import TestClient

from appliance.keys import create_key

DS = "/api/datasets/{owner}/{dataset}"
IMAGE = "/api/images/{imageId}"


@pytest.fixture
def api(home):
    app, key = make_app(home, run_queue=False)
    db = app.state.services.db
    alice = db.user_by_name("alice")
    bob = db.create_user("bob")
    db.create_team("lab", "Lab", alice["id"])
    ds = db.create_dataset(
        owner_id=alice["id"],
        slug="pub",
        name="Pub",
        task="pose",
        visibility="public",
        class_names=["person", "dog", "cat"],
        metadata={"kptShape": [2, 3], "flipIdx": [1, 0]},
    )
    pose = {
        "classId": 0,
        "bbox": [0.5, 0.5, 0.2, 0.2],
        "keypoints": [0.5, 0.5, 2, 0.4, 0.4, 1],
    }
    images = add_images(
        db,
        ds["id"],
        [
            {"name": "a.jpg", "labels": [pose, {**pose, "classId": 1}]},
            {"name": "b.jpg", "labels": [{**pose, "classId": 2}]},
            {"name": "c.jpg", "split": "val"},
            {"name": "d.jpg", "split": "val", "hash": "d" * 32},
            {"name": "e.jpg", "hash": "d" * 32},
        ],
        blobs=app.state.services.blobs,
    )
    auth = {
        "alice": {"Authorization": f"Bearer {key}"},
        "bob": {"Authorization": f"Bearer {create_key(db, bob['id'])}"},
        "nobody": {},
    }
    with TestClient(app) as client:

        def check(method, path, template, status, who="alice", body=None):
            kwargs = {"headers": auth[who]}
            if body is not None:
                kwargs["json"] = body
            response = client.request(method, path, **kwargs)
            assert response.status_code == status, (path, response.text)
            found = problems(method, template, status, response.json())
            assert found == [], (method, path, status, found)
            return response.json()

        yield check, ds, {i["name"]: i["id"] for i in images}


def test_dataset_operations_match_the_contract(api):
    check, ds, _ = api
    for base in ("/api/datasets/alice/pub", f"/api/datasets/{ds['id']}"):
        detail = check("GET", base, DS, 200)["dataset"]
        assert detail["kptShape"] == [2, 3] and detail["sampleImages"]
        check("GET", f"{base}/models", f"{DS}/models", 200)
        check("POST", f"{base}/images", f"{DS}/images", 400, body={"imageIds": []})
        check(
            "GET",
            f"{base}/images?includeLabels=true&includeImageUrls=true&limit=2",
            f"{DS}/images",
            200,
        )
    check(
        "GET", "/api/datasets/alice?includeImageUrls=true", "/api/datasets/{owner}", 200
    )
    check("GET", "/api/datasets/alice?limit=0", "/api/datasets/{owner}", 400)
    check("GET", "/api/datasets/nobody-here", "/api/datasets/{owner}", 404)
    check("GET", "/api/datasets/alice/nope", DS, 404)
    stats = check(
        "GET", "/api/datasets/alice/pub/class-stats", f"{DS}/class-stats", 200
    )
    assert stats["imageStats"]["pointsHistogram"] == [{"bin": 2, "count": 3, "size": 1}]
    check("GET", "/api/datasets/alice/nope/class-stats", f"{DS}/class-stats", 404)
    check("GET", "/api/datasets/alice/nope/models", f"{DS}/models", 404)
    patch = f"{DS}"
    check(
        "PATCH",
        "/api/datasets/alice/pub",
        patch,
        200,
        body={"description": "d", "license": "MIT"},
    )
    check("PATCH", "/api/datasets/alice/pub", patch, 400, body={"visibility": "x"})
    check(
        "PATCH",
        "/api/datasets/alice/pub",
        patch,
        403,
        who="bob",
        body={"description": "x"},
    )
    check("PATCH", "/api/datasets/alice/pub", patch, 409, body={"classNames": ["p"]})
    check("PATCH", "/api/datasets/alice/pub", patch, 401, who="nobody", body={})
    check("PATCH", "/api/datasets/alice/nope", patch, 404, body={})
    clone = f"{DS}/clone"
    check(
        "POST",
        "/api/datasets/alice/pub/clone",
        clone,
        201,
        who="bob",
        body={"name": "Mine"},
    )
    check("POST", "/api/datasets/alice/pub/clone", clone, 400, body={})
    check("POST", "/api/datasets/alice/pub/clone", clone, 401, who="nobody", body={})
    check("POST", "/api/datasets/alice/nope/clone", clone, 404, body={})
    merge = f"{DS}/classes/merge"
    check(
        "POST",
        "/api/datasets/alice/pub/classes/merge",
        merge,
        400,
        body={"sourceClassIds": [9], "targetClassId": 0},
    )
    check(
        "POST", "/api/datasets/alice/pub/classes/merge", merge, 403, who="bob", body={}
    )
    check("POST", "/api/datasets/alice/nope/classes/merge", merge, 404, body={})
    check(
        "POST",
        "/api/datasets/alice/pub/classes/merge",
        merge,
        200,
        body={"sourceClassIds": [2], "targetClassId": 1},
    )
    delete = f"{DS}/classes/delete"
    check(
        "POST",
        "/api/datasets/alice/pub/classes/delete",
        delete,
        400,
        body={"classIds": []},
    )
    check(
        "POST",
        "/api/datasets/alice/pub/classes/delete",
        delete,
        403,
        who="bob",
        body={},
    )
    check(
        "POST",
        "/api/datasets/alice/pub/classes/delete",
        delete,
        200,
        body={"classIds": [0]},
    )
    split = f"{DS}/splits/redistribute"
    body = {"train": 60, "val": 40, "test": 0}
    check(
        "POST", f"/api/datasets/{ds['id']}/splits/redistribute", split, 200, body=body
    )
    check(
        "POST",
        "/api/datasets/alice/pub/splits/redistribute",
        split,
        400,
        body={**body, "test": 1},
    )
    check(
        "POST",
        "/api/datasets/alice/pub/splits/redistribute",
        split,
        403,
        who="bob",
        body=body,
    )
    check("DELETE", "/api/datasets/alice/pub", DS, 403, who="bob")
    check("DELETE", "/api/datasets/alice/pub", DS, 200)
    check("DELETE", "/api/datasets/alice/pub", DS, 404)


def test_image_operations_match_the_contract(api):
    check, ds, ids = api
    a, c, d, e = ids["a.jpg"], ids["c.jpg"], ids["d.jpg"], ids["e.jpg"]
    page = check(
        "GET",
        "/api/datasets/alice/pub/images?limit=2&includeTotal=false",
        f"{DS}/images",
        200,
    )
    check(
        "GET",
        f"/api/datasets/alice/pub/images?cursor={page['nextCursor']}",
        f"{DS}/images",
        200,
    )
    check("GET", "/api/datasets/alice/pub/images?cursor=123", f"{DS}/images", 400)
    check("GET", "/api/datasets/alice/nope/images", f"{DS}/images", 404)
    check(
        "POST",
        "/api/datasets/alice/pub/images?includeLabels=true",
        f"{DS}/images",
        200,
        body={"imageIds": [a, c]},
    )
    check(
        "POST",
        "/api/datasets/alice/nope/images",
        f"{DS}/images",
        404,
        body={"imageIds": [a]},
    )
    check(
        "POST", "/api/images/urls", "/api/images/urls", 200, body={"imageIds": [a, c]}
    )
    check(
        "POST",
        "/api/images/urls",
        "/api/images/urls",
        400,
        body={"imageIds": [a] * 101},
    )
    check(
        "POST",
        "/api/images/urls",
        "/api/images/urls",
        404,
        body={"imageIds": ["0" * 24]},
    )
    check("GET", f"/api/images/{a}", IMAGE, 200)
    check("GET", "/api/images/xyz", IMAGE, 400)
    check("GET", f"/api/images/{'0' * 24}", IMAGE, 404)
    labels = [
        {
            "classId": 0,
            "bbox": [0.5, 0.5, 0.2, 0.2],
            "keypoints": [0.5, 0.5, 2, 0.1, 0.1, 0],
        }
    ]
    check("PATCH", f"/api/images/{c}", IMAGE, 200, body={"labels": labels})
    check(
        "PATCH",
        f"/api/images/{c}",
        IMAGE,
        200,
        body={"metadata": {"location": "strasbourg"}},
    )
    check("PATCH", f"/api/images/{c}", IMAGE, 400, body={"labels": [{"classId": 0}]})
    check("PATCH", f"/api/images/{c}", IMAGE, 403, who="bob", body={"metadata": {}})
    check("PATCH", f"/api/images/{'0' * 24}", IMAGE, 404, body={"metadata": {}})
    bulk = "/api/images/bulk"
    check("PATCH", bulk, bulk, 409, body={"imageIds": [e], "split": "val"})
    check(
        "PATCH",
        bulk,
        bulk,
        200,
        body={"imageIds": [e], "split": "val", "conflictPolicy": "keep_both"},
    )
    check("PATCH", bulk, bulk, 400, body={"imageIds": [e], "split": "dev"})
    check("PATCH", bulk, bulk, 404, body={"imageIds": ["0" * 24], "split": "val"})
    check("PATCH", bulk, bulk, 403, who="bob", body={"imageIds": [e], "split": "val"})
    check("DELETE", bulk, bulk, 400, body={"imageIds": []})
    check("DELETE", bulk, bulk, 404, body={"imageIds": [d, "0" * 24]})
    check("DELETE", bulk, bulk, 200, body={"imageIds": [d, e]})
    check("DELETE", f"/api/images/{a}", IMAGE, 403, who="bob")
    check("DELETE", f"/api/images/{a}", IMAGE, 200)
    check("DELETE", f"/api/images/{a}", IMAGE, 409)  # the contract: already deleted
    check("DELETE", f"/api/images/{'f' * 24}", IMAGE, 404)


def test_trash_operations_match_the_contract(api):
    check, ds, _ = api
    check("DELETE", "/api/datasets/alice/pub", DS, 200)
    listed = check("GET", "/api/trash", "/api/trash", 200)
    assert listed["total"] == 1
    check("GET", "/api/trash?limit=201", "/api/trash", 400)
    item = {"id": ds["id"], "type": "dataset"}
    check("POST", "/api/trash", "/api/trash", 404, who="bob", body=item)
    check("POST", "/api/trash", "/api/trash", 400, body={**item, "type": "file"})
    check("POST", "/api/trash", "/api/trash", 200, body=item)
    check("DELETE", "/api/datasets/alice/pub", DS, 200)
    check("DELETE", "/api/trash", "/api/trash", 400, body={"all": True, "id": "x"})
    check("DELETE", "/api/trash", "/api/trash", 200, body={"all": True})
    check("DELETE", "/api/trash", "/api/trash", 404, body=item)
