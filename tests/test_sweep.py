"""Disk is given back: image files go when no dataset or version uses them any
more, uploads go once ingested, and the server sweeps leftovers at start."""

from __future__ import annotations

import os
import time

import pytest
from conftest import Api, base_files, make_app, write_zip
from starlette.testclient import TestClient

from appliance.sweep import sweep_all


def _age(root) -> None:
    """Make every stored file look old enough to be swept."""
    past = time.time() - 3600
    for path in root.rglob("*"):
        if path.is_file():
            os.utime(path, (past, past))


def _image_files(blobs) -> set[str]:
    return {p.name for p in (blobs.root / "images").glob("*/*.*")}


@pytest.fixture
def world(home, tmp_path):
    app, key = make_app(home)
    archive = write_zip(tmp_path / "a.zip", base_files()).read_bytes()
    with TestClient(app) as client:
        yield Api(client, key), app.state.services, archive


def _forget(api: Api, slug: str) -> None:
    dataset = api("GET", f"/api/datasets/alice/{slug}")["dataset"]
    api("DELETE", f"/api/datasets/alice/{slug}")
    api("DELETE", "/api/trash", json={"id": dataset["id"], "type": "dataset"})


def test_files_go_with_the_last_dataset_that_uses_them(world):
    api, svc, archive = world
    for slug in ("one", "two"):
        api("POST", "/api/datasets", 201, json={"dataset": slug, "name": slug})
        api.ingest(slug, "a.zip", archive)
    stored = _image_files(svc.blobs)
    assert len(stored) == 4
    listed = api("GET", "/api/datasets/alice/two/images?includeImageUrls=true")
    url = listed["images"][0]["imageUrl"]
    assert api.client.get(url).status_code == 200
    _age(svc.blobs.root)
    _forget(api, "one")
    assert _image_files(svc.blobs) == stored  # "two" still holds them
    _forget(api, "two")
    assert _image_files(svc.blobs) == set()
    assert not list((svc.blobs.root / "thumbnails").glob("*/*"))
    assert api.client.get(url).status_code == 404


def test_a_version_keeps_a_deleted_images_file(world):
    api, svc, archive = world
    api("POST", "/api/datasets", 201, json={"dataset": "v", "name": "V"})
    api.ingest("v", "a.zip", archive)
    api("POST", "/api/datasets/alice/v/export", json={})
    first, second = api.images("v")[:2]
    assert api("GET", f"/api/images/{first['id']}")["properties"]["retainedByVersion"]
    _age(svc.blobs.root)
    api("DELETE", f"/api/images/{first['id']}")
    assert f"{first['hash']}.jpg" in _image_files(svc.blobs)  # v1 holds it
    api("POST", "/api/datasets", 201, json={"dataset": "w", "name": "W"})
    api("DELETE", "/api/images/bulk", json={"imageIds": [second["id"]]})
    assert f"{second['hash']}.jpg" in _image_files(svc.blobs)
    api.ingest("w", "a.zip", archive)  # the same pictures, in a dataset with no version
    fresh = api.images("w")[0]["id"]
    assert not api("GET", f"/api/images/{fresh}")["properties"]["retainedByVersion"]


def test_recent_files_survive_a_sweep(world):
    """A file written moments ago may belong to an ingest whose rows are not
    written yet: it is kept until a later sweep."""
    api, svc, archive = world
    api("POST", "/api/datasets", 201, json={"dataset": "r", "name": "R"})
    api.ingest("r", "a.zip", archive)
    _forget(api, "r")
    assert len(_image_files(svc.blobs)) == 4
    _age(svc.blobs.root)
    sweep_all(svc.db, svc.blobs)
    assert _image_files(svc.blobs) == set()


def test_an_ingested_upload_is_freed_and_cannot_be_ingested_twice(world):
    api, svc, archive = world
    api("POST", "/api/datasets", 201, json={"dataset": "u", "name": "U"})
    session = api(
        "POST",
        "/api/upload/signed-url",
        json={
            "assetType": "datasets",
            "assetId": "u",
            "filename": "a.zip",
            "contentType": "application/zip",
            "totalBytes": len(archive),
        },
    )
    assert api.client.put(session["uploadUrl"], content=archive).status_code == 200
    body = {"sessionId": session["sessionId"]}
    api("POST", "/api/datasets/alice/u/ingest", 201, json={**body, "dryRun": True})
    for _ in range(200):
        if api("GET", "/api/datasets/alice/u")["dataset"]["status"] != "processing":
            break
        time.sleep(0.05)
    assert svc.blobs.path("uploads", session["sessionId"]).exists()  # dry run keeps it
    api("POST", "/api/datasets/alice/u/ingest", 201, json=body)
    for _ in range(200):
        if api("GET", "/api/datasets/alice/u")["dataset"]["status"] != "processing":
            break
        time.sleep(0.05)
    assert api("GET", "/api/datasets/alice/u")["dataset"]["imageCount"] == 4
    assert not svc.blobs.path("uploads", session["sessionId"]).exists()
    again = api("POST", "/api/datasets/alice/u/ingest", 400, json=body)
    assert "ingested already" in again["error"]


def test_the_server_sweeps_orphans_at_start(home):
    app, _ = make_app(home)
    blobs = app.state.services.blobs
    orphan = blobs.root / "images" / "ab" / ("ab" + "0" * 30 + ".jpg")
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"x")
    stale = blobs.root / "ndjson" / "NoSuchDatasetAtAll1"
    stale.mkdir(parents=True)
    _age(blobs.root)
    with TestClient(app):
        for _ in range(100):
            if not orphan.exists() and not stale.exists():
                break
            time.sleep(0.05)
    assert not orphan.exists() and not stale.exists()
