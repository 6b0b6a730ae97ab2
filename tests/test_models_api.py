"""Models through the API, both route families: create, list, completed,
retrieve, update, trash, files, download, download counts, clone, and `.pt`
uploads through the generic upload flow (read without running their code).
The stock SDK drives the contract's routes; every JSON answer of a contract
operation is checked against the contract."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import make_app, tiny_checkpoint
from contract import problems
from starlette.testclient import TestClient
from ultralytics_platform import Platform
from ultralytics_platform._exceptions import APIError

from appliance.keys import create_key

ONE = "/api/models/{owner}/{project}/{model}"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("pt")
    return SimpleNamespace(
        good=tiny_checkpoint(folder / "good.pt", nc=2, names=["cat", "dog"]),
        mismatch=tiny_checkpoint(folder / "mismatch.pt", nc=2, names=["a", "b", "c"]),
        classify=tiny_checkpoint(folder / "cls.pt", nc=3, task="classify"),
    )


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


def _error(call) -> tuple[int, str]:
    with pytest.raises(APIError) as caught:
        call()
    body = caught.value.json if isinstance(caught.value.json, dict) else {}
    return caught.value.status_code, body.get("error", "")


def upload(world, sdk, model_id: str, path: Path):
    """The SDK's model upload: signed URL, PUT, complete."""
    data = path.read_bytes()
    session = sdk.upload.signed_url(
        body={
            "assetType": "models",
            "assetId": model_id,
            "filename": path.name,
            "contentType": "application/octet-stream",
            "totalBytes": len(data),
        }
    )
    put = world.client.put(
        session["uploadUrl"], content=data, headers=session.get("headers") or {}
    )
    assert put.status_code == 200, put.text
    return sdk.upload.complete(session_id=session["sessionId"])


def test_create_list_retrieve_in_both_families(world):
    sdk, client = world.sdk, world.client
    project = sdk.projects.create(project="p", name="P")
    created = ok(
        "POST",
        "/api/models",
        sdk.models.create(
            body={
                "project": "p",
                "model": "m1",
                "name": "First",
                "task": "detect",
                "description": "d",
                "metadata": {"camera": 1},
                "epochs": 5,
                "trainResults": [
                    {"epoch": 0, "metrics": {"mAP50": 0.1}, "fitness": 0.1}
                ],
            }
        ),
        201,
    )
    seed = client.post(
        "/api/models",
        json={"projectId": project["id"], "slug": "m2", "name": "Second"},
        headers=world.alice,
    ).json()
    assert seed["model"] == "m2" and seed["modelId"] == seed["id"]
    assert (
        _error(lambda: sdk.models.create(body={"project": "p", "model": "m1"}))[0]
        == 409
    )
    assert _error(lambda: sdk.models.create(body={"project": "nope"}))[0] == 404
    assert (
        _error(lambda: sdk.models.create(body={"project": "p", "task": "x"}))[0] == 400
    )

    listed = ok("GET", "/api/models/{owner}/{project}", sdk.models.list("alice", "p"))
    assert [m["model"] for m in listed["models"]] == ["m2", "m1"]
    assert len(sdk.models.list("alice", "p", limit=1)["models"]) == 1
    for bad in ("0", "101"):
        assert (
            client.get(
                f"/api/models/alice/p?limit={bad}", headers=world.alice
            ).status_code
            == 400
        )
    seed_list = client.get(
        f"/api/models?projectId={project['id']}&fields=summary&ids={created['id']}",
        headers=world.alice,
    ).json()["models"]
    assert [m["_id"] for m in seed_list] == [created["id"]]
    assert (
        "trainResults" not in seed_list[0]
        and seed_list[0]["projectId"] == project["id"]
    )
    assert client.get("/api/models", headers=world.alice).status_code == 400
    assert (
        client.get(
            f"/api/models?projectId={project['id']}", headers=world.bob
        ).status_code
        == 404
    )

    detail = ok("GET", ONE, sdk.models.retrieve("alice", "p", "m1"))["model"]
    assert detail["metadata"] == {"camera": 1} and detail["epochs"] == 5
    assert detail["trainResults"][0]["metrics"] == {"mAP50": 0.1}
    by_id = client.get(f"/api/models/{created['id']}", headers=world.alice).json()
    assert by_id["model"]["id"] == created["id"] and by_id["isOwner"]
    assert _error(lambda: world.bob_sdk.models.retrieve("alice", "p", "m1"))[0] == 404
    analysis = client.get(
        "/api/models/alice/p/m1?analysis=1", headers=world.alice
    ).json()
    assert ok("GET", ONE, analysis) == {"analysis": None}


def test_update(world):
    sdk, client, db = world.sdk, world.client, world.db
    sdk.projects.create(project="p", name="P")
    sdk.projects.create(project="q", name="Q")
    sdk.datasets.create(dataset="cars", name="Cars")
    created = sdk.models.create(body={"project": "p", "model": "m"})
    changed = sdk.models.update(
        "alice",
        "p",
        "m",
        color="#00ff00",
        description="new",
        license="MIT",
        epochs=7,
        best_epoch=3,
        best_fitness=0.7,
        version="8.4",
        metadata={"k": "v"},
        train_results=[{"epoch": 1, "metrics": {"mAP50": 0.4}, "fitness": 0.4}],
        training_error={
            "message": "out of memory",
            "timestamp": "2026-01-01T00:00:00Z",
        },
        dataset_slug="cars",
    )
    assert ok("PATCH", ONE, changed) == {
        "success": True,
        "model": "m",
        "datasetLinked": True,
    }
    model = ok("GET", ONE, sdk.models.retrieve("alice", "p", "m"))["model"]
    assert model["color"] == "#00ff00" and model["license"] == "MIT"
    assert (
        model["epochs"] == 7 and model["bestEpoch"] == 3 and model["version"] == "8.4"
    )
    assert model["datasetId"] and model["trainingError"]["message"] == "out of memory"
    assert model["trainResults"][0]["epoch"] == 1
    unlinked = client.patch(
        "/api/models/alice/p/m",
        json={"datasetSlug": None, "color": None},
        headers=world.alice,
    ).json()
    assert unlinked["datasetLinked"] is False
    assert "color" not in sdk.models.retrieve("alice", "p", "m")["model"]
    q = sdk.projects.retrieve("alice", "q")["project"]["id"]
    moved = client.patch(
        f"/api/models/{created['id']}",
        json={"projectId": q, "name": "Moved"},
        headers=world.alice,
    ).json()
    assert moved == {"success": True, "model": "moved"}
    assert db.model(created["id"])["project"] == "q"
    for body in (
        {"starred": True},
        {"status": "exploded"},
        {"wings": 2},
        {"name": None},
        {"color": "#1234567"},
        {"datasetSlug": "missing"},
    ):
        response = client.patch(
            "/api/models/alice/q/moved", json=body, headers=world.alice
        )
        assert response.status_code in (400, 404), body
    assert (
        client.patch(
            "/api/models/alice/q/moved", json={"status": "failed"}, headers=world.alice
        ).status_code
        == 200
    )
    assert (
        client.patch(
            "/api/models/alice/q/moved", json={"description": "x"}, headers=world.bob
        ).status_code
        == 404
    )


def test_checkpoint_upload_files_download_and_completed(world, checkpoints):
    sdk, client = world.sdk, world.client
    sdk.projects.create(project="p", name="P")
    created = sdk.models.create(
        body={"project": "p", "model": "uploaded", "task": "detect"}
    )
    sdk.models.create(body={"project": "p", "model": "empty"})
    assert sdk.models.files("alice", "p", "uploaded")["files"] == []
    done = upload(world, sdk, created["id"], checkpoints.good)
    assert problems("POST", "/api/upload/complete", 200, done) == []
    uploads = client.app.state.services.blobs.root / "uploads"
    assert not any(uploads.glob("*/data"))  # the weights are the model's now

    model = ok("GET", ONE, sdk.models.retrieve("alice", "p", "uploaded"))["model"]
    assert model["classNames"] == ["cat", "dog"] and model["task"] == "detect"
    assert model["status"] == "completed" and model["hasWeights"]
    assert model["trainArgs"]["epochs"] == 3 and model["trainArgs"]["imgsz"] == 32
    assert "data" not in model["trainArgs"]  # a path on the uploader's machine
    assert model["metrics"]["mAP50"] == pytest.approx(0.3)
    assert model["version"]
    assert [e["epoch"] for e in model["trainResults"]] == [0, 1, 2]
    assert model["trainResults"][2]["metrics"]["metrics/mAP50(B)"] == pytest.approx(0.3)
    assert model["completedAt"].endswith("Z")

    files = ok("GET", f"{ONE}/files", sdk.models.files("alice", "p", "uploaded"))
    fetched = client.get(files["files"][0]["downloadUrl"])
    assert fetched.content == checkpoints.good.read_bytes()
    for path in ("/api/models/alice/p/uploaded", f"/api/models/{created['id']}"):
        link = client.get(f"{path}/download", headers=world.alice).json()
        assert link["downloadUrl"].split("?")[0].endswith("/best.pt")
        assert client.get(link["downloadUrl"]).content == checkpoints.good.read_bytes()
    assert (
        client.get(
            "/api/models/alice/p/empty/download", headers=world.alice
        ).status_code
        == 404
    )
    counts = [
        client.post(f"{path}/track-download", headers=world.alice).json()[
            "downloadCount"
        ]
        for path in ("/api/models/alice/p/uploaded", f"/api/models/{created['id']}")
    ]
    assert counts == [1, 2]

    completed = client.get("/api/models/completed", headers=world.alice).json()[
        "models"
    ]
    assert [m["model"] for m in completed] == ["uploaded"]
    assert completed[0]["uri"] == "ul://alice/p/uploaded"
    assert client.get("/api/models/completed", headers=world.bob).json()["models"] == []
    assert (
        client.get("/api/models/completed?owner=alice", headers=world.bob).status_code
        == 404
    )
    assert client.get("/api/models/completed").status_code == 401

    second = _error(lambda: upload(world, sdk, created["id"], checkpoints.good))
    assert second[0] == 409


def test_bad_checkpoints_are_refused_with_a_reason(world, checkpoints, tmp_path):
    sdk = world.sdk
    sdk.projects.create(project="p", name="P")
    model = sdk.models.create(body={"project": "p", "model": "m", "task": "detect"})

    status, error = _error(
        lambda: upload(world, sdk, model["id"], checkpoints.mismatch)
    )
    assert status == 400 and "names 3 classes but its detect head predicts 2" in error
    status, error = _error(
        lambda: upload(world, sdk, model["id"], checkpoints.classify)
    )
    assert status == 400 and "classify" in error

    marker = tmp_path / "pwned"

    class Command:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    evil = tmp_path / "evil.pt"
    with zipfile.ZipFile(evil, "w") as archive:
        archive.writestr(
            "evil/data.pkl", pickle.dumps({"model": Command()}, protocol=2)
        )
    status, error = _error(lambda: upload(world, sdk, model["id"], evil))
    assert status == 400 and "system, which is not allowed" in error
    assert not marker.exists()

    after = sdk.models.retrieve("alice", "p", "m")["model"]
    assert after["hasWeights"] is False and "classNames" not in after
    assert sdk.models.files("alice", "p", "m")["files"] == []
    assert (
        _error(lambda: upload(world, world.bob_sdk, model["id"], checkpoints.good))[0]
        == 404
    )


def test_model_uploads_name_a_model_the_caller_edits(world):
    body = {
        "assetType": "models",
        "assetId": "NotAModelId12345678",
        "filename": "x.pt",
        "contentType": "application/octet-stream",
        "totalBytes": 10,
    }
    assert _error(lambda: world.sdk.upload.signed_url(body=body))[0] == 404
    world.sdk.projects.create(project="p", name="P", visibility="public")
    model = world.sdk.models.create(body={"project": "p", "model": "m"})
    body["assetId"] = model["id"]
    assert _error(lambda: world.bob_sdk.upload.signed_url(body=body))[0] == 403
    assert world.sdk.upload.signed_url(body=body)["sessionId"]


def test_trash_restore_and_purge(world):
    sdk, client, blobs = world.sdk, world.client, world.blobs
    sdk.projects.create(project="p", name="P")
    model = sdk.models.create(body={"project": "p", "model": "m"})
    blobs.put_bytes(blobs.path("models", model["id"], "best.pt"), b"w")
    world.db.update_model(model["id"], weights_size=1)
    assert ok("DELETE", ONE, sdk.models.delete("alice", "p", "m")) == {"success": True}
    assert _error(lambda: sdk.models.retrieve("alice", "p", "m"))[0] == 404
    assert sdk.models.list("alice", "p")["models"] == []
    assert sdk.projects.retrieve("alice", "p")["project"]["modelCount"] == 0
    taken = client.post(
        "/api/models", json={"project": "p", "model": "m"}, headers=world.alice
    )
    assert taken.status_code == 409 and "trash" in taken.json()["error"]

    trash = client.get("/api/trash?type=model", headers=world.alice).json()
    ok("GET", "/api/trash", trash)
    (item,) = trash["items"]
    assert item["parentProject"]["slug"] == "p" and item["sizeBytes"] == 1
    body = {"id": model["id"], "type": "model"}
    assert client.post("/api/trash", json=body, headers=world.alice).json() == {
        "success": True
    }
    assert sdk.models.retrieve("alice", "p", "m")["model"]["hasWeights"]

    assert (
        client.delete(f"/api/models/{model['id']}", headers=world.alice).status_code
        == 200
    )
    purged = client.request(
        "DELETE", "/api/trash", json=body, headers=world.alice
    ).json()
    assert purged == {"success": True, "deletedCount": 1}
    assert not blobs.path("models", model["id"]).exists()


def test_deleting_a_model_or_project_stops_its_training(world):
    sdk, db = world.sdk, world.db
    sdk.projects.create(project="p", name="P")
    first = sdk.models.create(body={"project": "p", "model": "a"})
    second = sdk.models.create(body={"project": "p", "model": "b"})
    jobs = [db.create_job("train", m["id"], None, {}) for m in (first, second)]
    assert db.job(jobs[0]["id"])["status"] == "queued"
    sdk.models.delete("alice", "p", "a")
    assert db.job(jobs[0]["id"])["status"] == "cancelled"
    assert db.job(jobs[1]["id"])["status"] == "queued"
    sdk.projects.delete("alice", "p")
    assert db.job(jobs[1]["id"])["status"] == "cancelled"


def test_clone_with_either_body(world, checkpoints):
    sdk, client = world.sdk, world.client
    sdk.projects.create(project="p", name="P", visibility="public")
    source = sdk.models.create(body={"project": "p", "model": "m"})
    upload(world, sdk, source["id"], checkpoints.good)
    world.bob_sdk.projects.create(project="mine", name="Mine")

    cloned = ok(
        "POST",
        f"{ONE}/clone",
        world.bob_sdk.models.clone("alice", "p", "m", project_body="mine"),
        201,
    )
    assert cloned["owner"] == "bob" and cloned["model"] == "m"
    copy = world.bob_sdk.models.retrieve("bob", "mine", "m")["model"]
    assert copy["classNames"] == ["cat", "dog"] and copy["clonedFrom"] == source["id"]
    url = world.bob_sdk.models.files("bob", "mine", "m")["files"][0]["downloadUrl"]
    assert client.get(url).content == checkpoints.good.read_bytes()
    again = world.bob_sdk.models.clone("alice", "p", "m", project_body="mine")
    assert again["model"] == "m-copy"

    seed = client.post(
        f"/api/models/{source['id']}/clone",
        json={"targetProjectSlug": "mine", "modelName": "Renamed"},
        headers=world.bob,
    ).json()
    assert seed["model"] == "renamed" and seed["name"] == "Renamed"
    clash = client.post(
        f"/api/models/{source['id']}/clone",
        json={"project": "mine", "model": "renamed"},
        headers=world.bob,
    )
    assert clash.status_code == 400
    missing = client.post(
        f"/api/models/{source['id']}/clone", json={"project": "nope"}, headers=world.bob
    )
    assert missing.status_code == 404
    assert (
        client.post(
            f"/api/models/{source['id']}/clone",
            json={"project": "p", "owner": "alice"},
            headers=world.bob,
        ).status_code
        == 404
    )
