"""The API in-process: the real app, a real SQLite file and a real Huey consumer,
driven by the stock ultralytics-platform SDK over Starlette's test transport."""

from __future__ import annotations

import time

import httpx
import pytest
from conftest import base_files, dataset_upload_body, jpeg_bytes, write_zip
from starlette.testclient import TestClient
from ultralytics_platform import Platform
from ultralytics_platform._exceptions import APIError

from appliance.app import create_app
from appliance.keys import create_key
from appliance.settings import load_settings


@pytest.fixture
def appliance(home):
    settings = load_settings(environ={}, home=str(home), public_url="http://testserver")
    app = create_app(settings)
    db = app.state.services.db
    user = db.create_user("alice")
    key = create_key(db, user["id"])
    with TestClient(app) as client:
        sdk = Platform(
            base_url="http://testserver", api_key=key, http_client=client, max_retries=0
        )
        yield client, sdk, key


def _error(exc: APIError) -> dict:
    return exc.json if isinstance(exc.json, dict) else {}


def test_summary_needs_a_valid_key(appliance):
    client, sdk, key = appliance
    assert sdk.account.summary()["username"] == "alice"
    for headers in (
        {},
        {"Authorization": "Bearer ul_" + "0" * 40},
        {"Authorization": "Bearer nonsense"},
    ):
        response = client.get("/api/account/summary", headers=headers)
        assert response.status_code == 401
        assert set(response.json()) == {"error"} and response.json()["error"]
        assert response.headers["x-error-code"] == "UNAUTHORIZED"


def test_unknown_route_and_bad_json_are_json_errors(appliance):
    client, _, key = appliance
    auth = {"Authorization": f"Bearer {key}"}
    missing = client.get("/api/nothing/here", headers=auth)
    assert missing.status_code == 404 and set(missing.json()) == {"error"}
    bad = client.post("/api/datasets", content=b"{not json", headers=auth)
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]
    wrong = client.post("/api/datasets", json=[1, 2], headers=auth)
    assert wrong.status_code == 400


def test_dataset_create_retrieve_list(appliance):
    client, sdk, key = appliance
    created = sdk.datasets.create(dataset="cars", name="Cars", task="detect")
    assert (
        set(created) == {"id", "owner", "dataset", "region"}
        and created["owner"] == "alice"
    )
    got = sdk.datasets.retrieve("alice", "cars")["dataset"]
    assert (
        got["status"] == "ready"
        and got["imageCount"] == 0
        and got["splits"]["train"] == 0
    )
    by_id = client.get(
        f"/api/datasets/{created['id']}", headers=client_auth(key)
    ).json()["dataset"]
    assert by_id["id"] == created["id"]
    listed = sdk.datasets.list("alice")
    assert listed["total"] == 1 and listed["datasets"][0]["dataset"] == "cars"
    with pytest.raises(APIError) as dup:
        sdk.datasets.create(dataset="cars", name="Cars")
    assert dup.value.status_code == 400  # the contract has no 409 for create
    with pytest.raises(APIError) as bad:
        sdk.datasets.create(dataset="Bad Slug!", name="x")
    assert bad.value.status_code == 400
    with pytest.raises(APIError) as missing:
        sdk.datasets.retrieve("alice", "nope")
    assert (
        missing.value.status_code == 404
        and _error(missing.value)["error"] == "Dataset not found"
    )


def client_auth(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


def upload(
    client: TestClient, sdk: Platform, data: bytes, filename: str = "ds.zip"
) -> str:
    session = sdk.upload.signed_url(body=dataset_upload_body(filename, len(data)))
    response = client.put(
        session["uploadUrl"], content=data, headers=session.get("headers") or {}
    )
    assert response.status_code == 200, response.text
    return session["sessionId"]


def wait_dataset(sdk: Platform, slug: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dataset = sdk.datasets.retrieve("alice", slug)["dataset"]
        if dataset["status"] != "processing":
            return dataset
        time.sleep(0.1)
    raise AssertionError("ingest did not finish")


def test_upload_and_ingest_records_bad_files(appliance, tmp_path):
    client, sdk, key = appliance
    sdk.datasets.create(dataset="base", name="Base")
    files = base_files()
    files["ds/images/train/broken.jpg"] = b"not an image at all"
    files["ds/labels/train/broken.txt"] = b"0 0.5 0.5 0.2 0.2\n"
    files["ds/images/val/pixels.jpg"] = jpeg_bytes(color=(1, 2, 3))
    files["ds/labels/val/pixels.txt"] = b"0 32 32 16 16\n"
    data = write_zip(tmp_path / "ds.zip", files).read_bytes()
    session_id = upload(client, sdk, data)
    assert sdk.upload.complete(session_id=session_id)["file"]["size"] == len(data)
    job = sdk.datasets.ingest("alice", "base", body={"sessionId": session_id})
    assert job["status"] == "queued"
    dataset = wait_dataset(sdk, "base")
    assert dataset["status"] == "ready"
    # pixels.jpg stays, unlabeled, with its label's reason as its error.
    assert dataset["imageCount"] == 5 and dataset["errorCount"] == 1
    assert dataset["splits"] == {"train": 2, "val": 3, "test": 0, "labeled": 4}
    assert dataset["classNames"] == ["a", "b"] and dataset["annotationCount"] == 4
    assert dataset["lastIngestSummary"]["skippedCounts"] == {
        "not_an_image": 1,
        "pixel_coordinates": 1,
    }
    report = client.get(f"/api/jobs/{job['jobId']}", headers=client_auth(key)).json()[
        "job"
    ]
    verdicts = {f["path"]: (f["verdict"], f["reason"]) for f in report["files"]}
    assert verdicts["ds/images/train/broken.jpg"] == ("rejected", "not_an_image")
    assert verdicts["ds/labels/val/pixels.txt"] == ("rejected", "pixel_coordinates")
    assert verdicts["ds/images/val/pixels.jpg"] == ("accepted", None)
    assert verdicts["ds/images/train/a.jpg"] == ("accepted", None)
    total = report["filesTotal"]
    assert total == len(report["files"]) and "nextFilesOffset" not in report
    page = client.get(
        f"/api/jobs/{job['jobId']}?filesLimit=2&filesOffset=1", headers=client_auth(key)
    ).json()["job"]
    assert page["files"] == report["files"][1:3] and page["nextFilesOffset"] == 3
    rejected = client.get(
        f"/api/jobs/{job['jobId']}?verdict=rejected", headers=client_auth(key)
    ).json()["job"]
    assert {f["path"] for f in rejected["files"]} == {
        "ds/images/train/broken.jpg",
        "ds/labels/val/pixels.txt",
    }
    images = sdk.datasets.images(
        "alice", "base", include_labels="true", limit=2, sort="name-asc"
    )
    assert (
        images["total"] == 5
        and images["hasMore"] is True
        and len(images["images"]) == 2
    )
    first = images["images"][0]
    assert first["name"] == "a.jpg" and (first["width"], first["height"]) == (64, 64)
    assert first["labels"] == [{"classId": 0, "bbox": [0.5, 0.5, 0.25, 0.25]}]
    thumb = client.get(first["thumbnailUrl"])
    assert thumb.status_code == 200 and thumb.content[:2] == b"\xff\xd8"
    # The same archive again: every image is a duplicate, nothing is added twice.
    sdk.datasets.ingest("alice", "base", body={"sessionId": upload(client, sdk, data)})
    again = wait_dataset(sdk, "base")
    assert (
        again["imageCount"] == 5
        and again["lastIngestSummary"]["skippedCounts"]["duplicate"] == 5
    )


def test_failed_ingest_says_why(appliance):
    client, sdk, _ = appliance
    sdk.datasets.create(dataset="junk", name="Junk")
    sdk.datasets.ingest(
        "alice", "junk", body={"sessionId": upload(client, sdk, b"PK\x03\x04garbage")}
    )
    dataset = wait_dataset(sdk, "junk")
    assert dataset["status"] == "failed"
    assert "zip or tar" in dataset["processingError"]["message"]


def test_ingest_refuses_incomplete_or_foreign_uploads(appliance):
    client, sdk, _ = appliance
    sdk.datasets.create(dataset="d", name="d")
    session = sdk.upload.signed_url(body=dataset_upload_body("d.zip", 10))
    with pytest.raises(APIError) as early:
        sdk.datasets.ingest("alice", "d", body={"sessionId": session["sessionId"]})
    assert early.value.status_code == 400
    with pytest.raises(APIError) as unknown:
        sdk.datasets.ingest("alice", "d", body={"sessionId": "nope"})
    assert unknown.value.status_code == 404
    with pytest.raises(APIError) as bad_name:
        sdk.upload.signed_url(body=dataset_upload_body("d.rar", 1, "x"))
    assert bad_name.value.status_code == 400


def test_signed_urls_cannot_be_forged(appliance):
    client, sdk, _ = appliance
    session = sdk.upload.signed_url(body=dataset_upload_body("d.zip", 3))
    url = httpx.URL(session["uploadUrl"])
    forged = url.copy_set_param("signature", "0" * 64)
    assert client.put(str(forged), content=b"abc").status_code == 401
    other = str(url).replace(session["sessionId"], "A" * 20)
    assert client.put(other, content=b"abc").status_code == 401
    too_big = client.put(str(url), content=b"abcdef")
    assert too_big.status_code == 413
    assert client.get("/files/images/aa/" + "a" * 32 + ".jpg").status_code == 401


def test_projects_models_and_training_validation(appliance):
    client, sdk, _ = appliance
    created = sdk.projects.create(project="proj", name="Project")
    assert created["project"] == "proj"
    with pytest.raises(APIError) as no_project:
        sdk.models.create(body={"project": "missing", "model": "m"})
    assert no_project.value.status_code == 404
    model = sdk.models.create(
        body={"owner": "alice", "project": "proj", "model": "m1", "name": "M1"}
    )
    assert set(model) == {"id", "owner", "project", "model", "region"}
    detail = sdk.models.retrieve("alice", "proj", "m1")
    assert detail["isOwner"] is True and detail["model"]["hasWeights"] is False
    assert sdk.projects.retrieve("alice", "proj")["project"]["modelCount"] == 1
    assert sdk.models.training("alice", "proj", "m1")["job"] is None
    assert sdk.models.files("alice", "proj", "m1")["files"] == []
    sdk.datasets.create(dataset="empty", name="Empty")
    cases = [
        (
            {"model": "yolo26n.yaml", "data": "ul://alice/datasets/empty"},
            400,
        ),  # no epochs
        (
            {"model": "yolo26n.yaml", "data": "ul://alice/datasets/nope", "epochs": 1},
            404,
        ),
        (
            {"model": "yolo26n.yaml", "data": "ul://alice/datasets/empty", "epochs": 1},
            400,
        ),  # no images
        ({"model": "../x.pt", "data": "ul://alice/datasets/empty", "epochs": 1}, 400),
        (
            {"model": "yolo26n.yaml", "data": "ul://alice/datasets/empty", "epochs": 0},
            400,
        ),
    ]
    for train_args, status in cases:
        with pytest.raises(APIError) as err:
            sdk.training.start(model_id=model["id"], train_args=train_args)
        assert err.value.status_code == status, train_args
    with pytest.raises(APIError) as no_weights:
        sdk.models.predict(
            "alice", "proj", "m1", body={"file": ("a.jpg", jpeg_bytes(), "image/jpeg")}
        )
    assert no_weights.value.status_code == 400
    with pytest.raises(APIError) as export:
        sdk.exports.create("alice", "proj", "m1", format="onnx")
    assert export.value.status_code == 400
    with pytest.raises(APIError) as hailo:
        sdk.exports.create("alice", "proj", "m1", format="hailo")
    assert hailo.value.status_code == 400


def test_hostile_requests_get_clear_4xx(appliance):
    client, sdk, key = appliance
    auth = client_auth(key)
    assert client.get("/api/datasets/alice/", headers=auth).status_code == 404
    assert client.get("/files/x?expires=%C2%B2&signature=x").status_code == 401
    assert (
        client.put("/uploads/x?expires=%C2%B2&signature=x", content=b"1").status_code
        == 401
    )
    nested = b"[" * 100_000
    assert client.post("/api/datasets", content=nested, headers=auth).status_code == 400
    anonymous = client.post("/api/datasets", content=b"x" * 10_000)
    assert anonymous.status_code == 401
    huge = client.post("/api/datasets", content=b" " * (3 * 1024 * 1024), headers=auth)
    assert huge.status_code == 413
    for total in ("NaN", "Infinity", "1e400", "0", "1.5", "-3"):
        body = (
            '{"assetType": "datasets", "assetId": "a", "filename": "a.zip",'
            f' "contentType": "application/zip", "totalBytes": {total}}}'
        )
        response = client.post("/api/upload/signed-url", content=body, headers=auth)
        assert response.status_code == 400, total
    sdk.datasets.create(dataset="s", name="S")
    long_search = client.get(
        "/api/datasets/alice/s/images?search=" + "a" * 201, headers=auth
    )
    assert long_search.status_code == 400
    for name in ("", "   ", "a\x00b", "x" * 101):
        response = client.post(
            "/api/datasets", json={"dataset": "n1", "name": name}, headers=auth
        )
        assert response.status_code == 400, repr(name)
    made = client.post(
        "/api/datasets", json={"name": "Café au lait"}, headers=auth
    ).json()
    assert made["dataset"] == "cafe-au-lait"


def test_a_failed_ingest_leaves_a_good_dataset_usable(appliance, tmp_path):
    client, sdk, _ = appliance
    sdk.datasets.create(dataset="good", name="Good")
    data = write_zip(tmp_path / "ds.zip", base_files()).read_bytes()
    sdk.datasets.ingest("alice", "good", body={"sessionId": upload(client, sdk, data)})
    assert wait_dataset(sdk, "good")["imageCount"] == 4
    sdk.datasets.ingest(
        "alice", "good", body={"sessionId": upload(client, sdk, b"garbage")}
    )
    after = wait_dataset(sdk, "good")
    assert after["status"] == "ready" and after["imageCount"] == 4
    assert "zip or tar" in after["processingError"]["message"]


def test_training_arguments_are_checked_up_front(appliance, tmp_path):
    client, sdk, _ = appliance
    sdk.datasets.create(dataset="t", name="T")
    data = write_zip(tmp_path / "ds.zip", base_files()).read_bytes()
    sdk.datasets.ingest("alice", "t", body={"sessionId": upload(client, sdk, data)})
    wait_dataset(sdk, "t")
    sdk.projects.create(project="p", name="P")
    model = sdk.models.create(body={"project": "p", "model": "m"})
    base = {"model": "yolo26n.yaml", "data": "ul://alice/datasets/t", "epochs": 1}
    for extra, needle in [
        ({"x": 1}, "unknown argument"),
        ({"model": "yolo99z.yaml"}, "yolo99z.yaml"),
        ({"model": "mine.pt"}, "mine.pt"),
        ({"device": "cuda:3"}, "device"),
        ({"batch": 0}, "batch"),
    ]:
        with pytest.raises(APIError) as err:
            sdk.training.start(model_id=model["id"], train_args={**base, **extra})
        assert err.value.status_code == 400 and needle in _error(err.value)["error"]
    gpus = sdk.training.gpu_availability()
    assert list(gpus.values()) == ["High"]


def test_ndjson_export(appliance, tmp_path):
    import json as _json

    client, sdk, _ = appliance
    sdk.datasets.create(dataset="nd", name="ND")
    data = write_zip(tmp_path / "ds.zip", base_files()).read_bytes()
    sdk.datasets.ingest("alice", "nd", body={"sessionId": upload(client, sdk, data)})
    wait_dataset(sdk, "nd")
    first = sdk.datasets.export("alice", "nd")
    assert (
        first["cached"] is False
        and sdk.datasets.export("alice", "nd")["cached"] is True
    )
    lines = [
        _json.loads(line) for line in client.get(first["downloadUrl"]).text.splitlines()
    ]
    header, images = lines[0], lines[1:]
    assert header["type"] == "dataset" and header["task"] == "detect"
    assert header["class_names"] == {"0": "a", "1": "b"}
    assert header["url"] == "http://testserver/alice/datasets/nd"
    assert len(images) == 4 and {i["split"] for i in images} == {"train", "val"}
    for record in images:
        assert record["annotations"] == {"boxes": [[0, 0.5, 0.5, 0.25, 0.25]]}
        stem = record["url"].split("?")[0].rsplit("/", 1)[1].split(".")[0]
        assert len(stem) == 32 and client.get(record["url"]).status_code == 200
    with pytest.raises(APIError) as versioned:
        sdk.datasets.export("alice", "nd", v=1)
    assert versioned.value.status_code == 404
    saved = sdk.datasets.create_export("alice", "nd", description="first")
    assert (saved["version"], saved["reused"]) == (1, False)
    assert sdk.datasets.export("alice", "nd", v=1)["version"] == 1
    assert sdk.datasets.update_export("alice", "nd", version=1, description="v1") == {
        "ok": True
    }
    restored = sdk.datasets.restore("alice", "nd", version=1)
    assert restored == {"version": 1, "imageCount": 4}


def test_image_labels_read_write_and_delete(appliance, tmp_path):
    client, sdk, key = appliance
    auth = client_auth(key)
    created = sdk.datasets.create(dataset="lab", name="Lab")
    data = write_zip(tmp_path / "ds.zip", base_files()).read_bytes()
    sdk.datasets.ingest("alice", "lab", body={"sessionId": upload(client, sdk, data)})
    wait_dataset(sdk, "lab")
    image = sdk.datasets.images("alice", "lab", sort="name-asc", limit=1)["images"][0]
    base = f"/api/datasets/{created['id']}/images/{image['hash']}"
    got = client.get(f"{base}/labels", headers=auth).json()
    assert got == {
        "labels": [{"classId": 0, "bbox": [0.5, 0.5, 0.25, 0.25]}],
        "classNames": ["a", "b"],
    }
    new = {
        "labels": [
            {"classId": 1, "bbox": [0.4, 0.4, 0.2, 0.3]},
            {"classId": 0, "bbox": [0.1, 0.1, 0.1, 0.1]},
        ]
    }
    assert client.put(f"{base}/labels", json=new, headers=auth).status_code == 200
    assert client.get(f"{base}/labels", headers=auth).json()["labels"] == new["labels"]
    assert sdk.datasets.retrieve("alice", "lab")["dataset"]["annotationCount"] == 5
    for bad in (
        {"labels": [{"classId": 2, "bbox": [0.5, 0.5, 0.1, 0.1]}]},
        {"labels": [{"classId": 0, "bbox": [0.5, 0.5, 0, 0.1]}]},
        {"labels": [{"classId": 0, "bbox": [1.5, 0.5, 0.1, 0.1]}]},
        {"labels": "none"},
    ):
        assert client.put(f"{base}/labels", json=bad, headers=auth).status_code == 400
    assert client.delete(base, headers=auth).status_code == 200
    assert client.get(f"{base}/labels", headers=auth).status_code == 404
    assert sdk.datasets.retrieve("alice", "lab")["dataset"]["imageCount"] == 3
