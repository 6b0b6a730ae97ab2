"""Projects through the API, both route families: create, list, retrieve,
update, trash, restore and purge, clone with weights, icon. The stock SDK
drives the contract's routes; every JSON answer of a contract operation is
checked against the contract."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest
from conftest import jpeg_bytes, make_app
from contract import problems
from starlette.testclient import TestClient
from ultralytics_platform import Platform
from ultralytics_platform._exceptions import APIError

from appliance.keys import create_key

ONE = "/api/projects/{owner}/{project}"


@pytest.fixture
def world(home):
    app, key = make_app(home)
    db = app.state.services.db
    bob = db.create_user("bob")
    bob_key = create_key(db, bob["id"])
    with TestClient(app) as client:
        yield SimpleNamespace(
            app=app,
            db=db,
            blobs=app.state.services.blobs,
            client=client,
            sdk=_sdk(client, key),
            bob_sdk=_sdk(client, bob_key),
            alice={"Authorization": f"Bearer {key}"},
            bob={"Authorization": f"Bearer {bob_key}"},
        )


def _sdk(client, key):
    return Platform(
        base_url="http://testserver", api_key=key, http_client=client, max_retries=0
    )


def ok(method: str, template: str, body: dict, status: int = 200) -> dict:
    assert problems(method, template, status, body) == []
    return body


def _status(call) -> int:
    with pytest.raises(APIError) as caught:
        call()
    return caught.value.status_code


def _weights(world, model_id: str, data: bytes = b"weights-bytes") -> None:
    """Weights for a model, stored as training would store them."""
    target = world.blobs.path("models", model_id, "best.pt")
    world.blobs.put_bytes(target, data)
    world.db.update_model(model_id, weights_size=len(data), status="completed")


def test_create_list_retrieve_update_in_both_families(world):
    sdk, client = world.sdk, world.client
    created = ok(
        "POST", "/api/projects", sdk.projects.create(project="cars", name="Cars"), 201
    )
    assert created["owner"] == "alice" and created["project"] == "cars"
    seed = client.post(
        "/api/projects",
        json={"name": "Trucks", "slug": "trucks", "description": "Detection"},
        headers=world.alice,
    ).json()
    assert seed["project"] == "trucks" and seed["projectId"] == seed["id"]
    assert (
        _status(lambda: sdk.projects.create(project="cars", name="Cars")) == 400
    )  # the contract has no 409 for create
    assert _status(lambda: sdk.projects.create(project="Bad!", name="x")) == 400
    assert (
        _status(lambda: sdk.projects.create(project="x", name="x", license="WTFPL"))
        == 400
    )

    listed = ok("GET", "/api/projects/{owner}", sdk.projects.list("alice"))
    assert listed["total"] == 2 and {p["project"] for p in listed["projects"]} == {
        "cars",
        "trucks",
    }
    assert len(sdk.projects.list("alice", limit=1)["projects"]) == 1
    for bad in ("0", "501", "x"):
        response = client.get(f"/api/projects/alice?limit={bad}", headers=world.alice)
        assert response.status_code == 400
    assert (
        client.get("/api/projects/alice?limit=500", headers=world.alice).status_code
        == 200
    )
    mine = client.get("/api/projects", headers=world.alice).json()
    assert (
        mine["total"] == 2 and mine["projects"][0]["_id"] == mine["projects"][0]["id"]
    )
    by_name = client.get(
        "/api/projects?username=alice&limit=1", headers=world.alice
    ).json()
    assert (
        len(by_name["projects"]) == 1 and by_name["projects"][0]["username"] == "alice"
    )
    assert (
        client.get("/api/projects?owner=alice", headers=world.bob).json()["total"] == 0
    )

    detail = ok("GET", ONE, sdk.projects.retrieve("alice", "cars"))
    assert detail["isOwner"] and detail["project"]["modelCount"] == 0
    by_id = client.get(f"/api/projects/{created['id']}", headers=world.alice).json()
    assert by_id["project"]["id"] == created["id"]
    assert _status(lambda: world.bob_sdk.projects.retrieve("alice", "cars")) == 404
    assert (
        client.get(f"/api/projects/{created['id']}", headers=world.bob).status_code
        == 404
    )

    changed = sdk.projects.update(
        "alice",
        "cars",
        description="Cars and vans",
        tags=["road"],
        license="MIT",
        icon_color="#ff0000",
        icon_letter="C",
        archived=False,
        visibility="public",
    )
    ok("PATCH", ONE, changed)
    project = ok("GET", ONE, sdk.projects.retrieve("alice", "cars"))["project"]
    assert project["tags"] == ["road"] and project["license"] == "MIT"
    assert project["iconColor"] == "#ff0000" and project["iconLetter"] == "C"
    assert (
        project["visibility"] == "public" and project["description"] == "Cars and vans"
    )
    assert world.bob_sdk.projects.retrieve("alice", "cars")["isOwner"] is False
    sdk.projects.update("alice", "cars", icon_letter=None)
    assert "iconLetter" not in sdk.projects.retrieve("alice", "cars")["project"]
    renamed = client.patch(
        f"/api/projects/{created['id']}", json={"name": "Autos"}, headers=world.alice
    ).json()
    assert renamed == {"success": True, "project": "autos"}
    assert _status(lambda: sdk.projects.retrieve("alice", "cars")) == 404
    for body in (
        {"starred": True},
        {"colour": "x"},
        {"license": "WTFPL"},
        {"name": None},
    ):
        response = client.patch(
            "/api/projects/alice/autos", json=body, headers=world.alice
        )
        assert response.status_code == 400, body
    view = {"viewPreferences": {"sortBy": "sideways"}}
    assert (
        client.patch(
            "/api/projects/alice/autos", json=view, headers=world.alice
        ).status_code
        == 400
    )
    assert (
        client.patch(
            "/api/projects/alice/autos", json={"description": "x"}, headers=world.bob
        ).status_code
        == 403
    )


def test_trash_restore_and_purge(world):
    sdk, client, db = world.sdk, world.client, world.db
    sdk.projects.create(project="p", name="P", visibility="public")
    model = sdk.models.create(body={"project": "p", "model": "m"})
    _weights(world, model["id"])
    explore = "/api/explore/search?type=projects"
    assert len(client.get(explore).json()["projects"]) == 1
    gone = ok("DELETE", ONE, sdk.projects.delete("alice", "p"))
    assert client.get(explore).json()["projects"] == []
    assert gone == {"success": True, "cascadedModels": 1}
    assert _status(lambda: sdk.projects.retrieve("alice", "p")) == 404
    assert _status(lambda: sdk.models.retrieve("alice", "p", "m")) == 404
    assert (
        client.get(f"/api/models/{model['id']}", headers=world.alice).status_code == 404
    )
    assert sdk.projects.list("alice")["total"] == 0
    counts = sdk.account.summary()["counts"]
    assert counts["projects"] == 0 and counts["models"] == 0
    taken = client.post(
        "/api/projects", json={"project": "p", "name": "P"}, headers=world.alice
    )
    assert taken.status_code == 400 and "trash" in taken.json()["error"]

    trash = ok(
        "GET", "/api/trash", client.get("/api/trash", headers=world.alice).json()
    )
    (item,) = trash["items"]
    assert item["type"] == "project" and item["cascadedCount"] == 1
    assert item["sizeBytes"] == len(b"weights-bytes")
    assert trash["summary"]["byType"]["projects"]["count"] == 1
    assert (
        client.get("/api/trash?type=dataset", headers=world.alice).json()["total"] == 0
    )
    body = {"id": item["_id"], "type": "project"}
    assert client.post("/api/trash", json=body, headers=world.bob).status_code == 404
    restored = client.post("/api/trash", json=body, headers=world.alice).json()
    assert ok("POST", "/api/trash", restored) == {"success": True, "restoredModels": 1}
    assert sdk.models.retrieve("alice", "p", "m")["model"]["hasWeights"] is True

    project_id = sdk.projects.retrieve("alice", "p")["project"]["id"]
    icon = {"file": ("i.jpg", jpeg_bytes(), "image/jpeg")}
    client.post(f"/api/projects/{project_id}/icon", files=icon, headers=world.alice)
    assert world.blobs.path("icons", project_id, "icon.png").exists()
    assert (
        client.delete(f"/api/projects/{project_id}", headers=world.alice).json()[
            "cascadedModels"
        ]
        == 1
    )
    purged = client.request(
        "DELETE", "/api/trash", json=body, headers=world.alice
    ).json()
    assert ok("DELETE", "/api/trash", purged) == {
        "success": True,
        "deletedCount": 1,
        "cascadedModels": 1,
    }
    assert not world.blobs.path("models", model["id"]).exists()
    assert not world.blobs.path("icons", item["_id"]).exists()
    assert db.model(model["id"]) is None
    assert client.post("/api/trash", json=body, headers=world.alice).status_code == 404
    assert sdk.projects.create(project="p", name="P")["project"] == "p"


def test_clone_copies_models_and_shares_weights(world):
    sdk, client = world.sdk, world.client
    sdk.projects.create(project="src", name="Source", visibility="public")
    first = sdk.models.create(body={"project": "src", "model": "a", "task": "detect"})
    sdk.models.create(body={"project": "src", "model": "b"})
    _weights(world, first["id"])
    world.db.record_epoch(first["id"], 0, {"metrics/mAP50(B)": 0.5}, 0.5)

    cloned = ok(
        "POST",
        f"{ONE}/clone",
        world.bob_sdk.projects.clone("alice", "src", name="Mine"),
        201,
    )
    assert cloned["owner"] == "bob" and cloned["project"] == "mine"
    assert cloned["modelCount"] == 2
    detail = ok("GET", ONE, world.bob_sdk.projects.retrieve("bob", "mine"))
    assert (
        detail["project"]["clonedFrom"] and detail["project"]["visibility"] == "private"
    )
    copy = world.bob_sdk.models.retrieve("bob", "mine", "a")["model"]
    assert (
        copy["hasWeights"]
        and copy["task"] == "detect"
        and len(copy["trainResults"]) == 1
    )
    source_file = world.blobs.path("models", first["id"], "best.pt")
    copy_file = world.blobs.path("models", copy["id"], "best.pt")
    assert copy_file.read_bytes() == source_file.read_bytes()
    assert os.stat(copy_file).st_ino == os.stat(source_file).st_ino  # one file, linked
    found = world.bob_sdk.projects.retrieve("bob", "mine", search="A")["models"]
    assert [m["model"] for m in found] == ["a"]
    url = world.bob_sdk.models.files("bob", "mine", "a")["files"][0]["downloadUrl"]
    assert client.get(url).content == b"weights-bytes"

    # The source going for good leaves the clone's weights whole.
    sdk.models.delete("alice", "src", "a")
    client.request("DELETE", "/api/trash", json={"all": True}, headers=world.alice)
    assert not source_file.exists() and copy_file.read_bytes() == b"weights-bytes"

    # Into its own workspace: a free slug, unless one is named.
    again = sdk.projects.clone("alice", "src")
    assert again["project"] == "src-copy" and again["modelCount"] == 1
    assert sdk.projects.clone("alice", "src")["project"] == "src-copy-2"
    assert (
        _status(lambda: sdk.projects.clone("alice", "src", project_body="src")) == 400
    )
    seed = client.post(
        f"/api/projects/{cloned['id']}/clone", json={"project": "x"}, headers=world.bob
    )
    assert seed.status_code == 201 and seed.json()["project"] == "x"
    sdk.projects.update("alice", "src", visibility="private")
    assert _status(lambda: world.bob_sdk.projects.clone("alice", "src")) == 404
    assert (
        _status(
            lambda: world.bob_sdk.projects.clone("alice", "src", owner_body="alice")
        )
        == 404
    )


@pytest.mark.parametrize("family", ["slug", "id"])
def test_icon_upload_and_removal(world, family):
    sdk, client = world.sdk, world.client
    created = sdk.projects.create(project="p", name="P")
    path = (
        "/api/projects/alice/p"
        if family == "slug"
        else f"/api/projects/{created['id']}"
    )
    image = jpeg_bytes(size=(600, 300))
    posted = client.post(
        f"{path}/icon",
        files={"file": ("i.jpg", image, "image/jpeg")},
        headers=world.alice,
    )
    assert posted.status_code == 200, posted.text
    project = ok("GET", ONE, sdk.projects.retrieve("alice", "p"))["project"]
    fetched = client.get(project["iconImage"])
    assert fetched.status_code == 200 and fetched.content.startswith(b"\x89PNG")
    bad = client.post(
        f"{path}/icon",
        files={"file": ("i.jpg", b"nope", "image/jpeg")},
        headers=world.alice,
    )
    assert bad.status_code == 400
    assert client.post(f"{path}/icon", headers=world.alice).status_code == 400
    assert (
        client.post(
            f"{path}/icon",
            files={"file": ("i.jpg", image, "image/jpeg")},
            headers=world.bob,
        ).status_code
        == 404
    )
    assert client.delete(f"{path}/icon", headers=world.alice).json() == {
        "success": True
    }
    assert "iconImage" not in sdk.projects.retrieve("alice", "p")["project"]
    assert client.get(project["iconImage"]).status_code == 404
