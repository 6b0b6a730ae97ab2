"""Integrations: Roboflow and cloud buckets refuse clearly and never reach out;
local storage roots (an extension) browse safely and ingest through the
ordinary upload session and ingest job."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from conftest import base_files, make_app, write_zip
from contract import problems
from starlette.testclient import TestClient

from appliance.routes.integrations import root_id
from appliance.settings import SettingsError, load_settings

BUCKET = "a1" * 12


@pytest.fixture
def no_network(monkeypatch):
    """Every connection or lookup off this machine is recorded and refused."""
    attempts: list = []
    connect, lookup = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in (
            "127.0.0.1",
            "::1",
        ):
            attempts.append(address)
            raise OSError("network refused by the test")
        return connect(sock, address)

    def guarded_lookup(host, *args, **kwargs):
        if host not in ("127.0.0.1", "::1", "localhost", "testserver"):
            attempts.append(host)
            raise OSError("network refused by the test")
        return lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_lookup)
    return attempts


@pytest.fixture
def storage(tmp_path) -> Path:
    """A root with a dataset folder, an archive, hidden files and links."""
    root = tmp_path / "storage"
    (root / "incoming").mkdir(parents=True)
    for name, data in base_files("").items():
        target = root / "incoming" / "base" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    (root / "incoming" / "base" / ".DS_Store").write_bytes(b"junk")
    (root / "incoming" / "base" / ".secret").write_text("hidden")
    write_zip(root / "incoming" / "base.zip", base_files())
    (root / "notes.txt").write_text("hello")
    (root / ".hidden").mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.zip").write_bytes(b"secret")
    (root / "escape").symlink_to(outside)
    (root / "escape.zip").symlink_to(outside / "private.zip")
    (root / "incoming" / "base" / "leak.txt").symlink_to(outside / "private.zip")
    (root / "inside.zip").symlink_to(root / "incoming" / "base.zip")
    return root


@pytest.fixture
def client(home, storage):
    app, key = make_app(home, storage_roots=(storage.resolve(),))
    with TestClient(app) as test_client:
        test_client.headers["Authorization"] = f"Bearer {key}"
        yield test_client


def _error(response, method: str, template: str, status: int) -> str:
    assert response.status_code == status, response.text
    assert problems(method, template, status, response.json()) == []
    assert response.headers["x-error-code"]
    return response.json()["error"]


def test_roboflow_and_buckets_are_unavailable_offline(client, no_network):
    body = {
        "apiKey": "rf_x",
        "items": [
            {
                "workspace": "w",
                "projectId": "p",
                "projectName": "P",
                "projectType": "object-detection",
                "latestVersion": 1,
            }
        ],
    }
    for path, payload in (
        ("/api/integrations/roboflow/preview", {"apiKey": "rf_x"}),
        ("/api/integrations/roboflow/import", body),
    ):
        message = _error(client.post(path, json=payload), "POST", path, 400)
        assert "offline" in message and "Roboflow" in message

    listed = client.get("/api/integrations/buckets")
    assert listed.json() == {"integrations": []}
    assert problems("GET", "/api/integrations/buckets", 200, listed.json()) == []
    s3 = {
        "provider": "s3",
        "credentials": {
            "access_key_id": "AKIAX",
            "secret_access_key": "s",
            "region": "us-east-1",
        },
    }
    for path in ("/api/integrations/buckets", "/api/integrations/buckets/discover"):
        message = _error(client.post(path, json=s3), "POST", path, 400)
        assert "offline" in message and "APPLIANCE_STORAGE_ROOTS" in message
    objects = "/api/integrations/buckets/{id}/objects"
    _error(
        client.get(f"/api/integrations/buckets/{BUCKET}/objects?target=b"),
        "GET",
        objects,
        404,
    )
    _error(client.get("/api/integrations/buckets/nope/objects"), "GET", objects, 400)
    _error(
        client.delete(f"/api/integrations/buckets/{BUCKET}"),
        "DELETE",
        "/api/integrations/buckets/{id}",
        404,
    )
    assert no_network == []


def test_storage_roots_setting_is_validated(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    env = {"APPLIANCE_HOME": str(tmp_path / "h")}
    roots = os.pathsep.join([str(one), str(two), str(one)])
    settings = load_settings({**env, "APPLIANCE_STORAGE_ROOTS": roots})
    assert settings.storage_roots == (one.resolve(), two.resolve())
    assert load_settings(env).storage_roots == ()
    for bad in ("relative/path", str(tmp_path / "missing"), str(tmp_path / "f")):
        (tmp_path / "f").write_text("a file, not a folder")
        with pytest.raises(SettingsError, match="APPLIANCE_STORAGE_ROOTS"):
            load_settings({**env, "APPLIANCE_STORAGE_ROOTS": bad})


def test_roots_are_listed_and_browsed_without_hidden_or_escaping_entries(
    client, storage
):
    listed = client.get("/api/integrations/local").json()["roots"]
    rid = root_id(storage.resolve())
    assert listed == [{"id": rid, "name": "storage", "path": str(storage.resolve())}]
    objects = f"/api/integrations/local/{rid}/objects"

    top = client.get(objects)
    assert top.status_code == 200, top.text
    body = top.json()
    assert problems("GET", "/api/integrations/buckets/{id}/objects", 200, body) == []
    assert [(e["kind"], e["key"]) for e in body["entries"]] == [
        ("folder", "incoming/"),
        ("file", "inside.zip"),
        ("file", "notes.txt"),
    ]
    assert body["entries"][2]["size"] == 5 and "cursor" not in body

    inner = client.get(objects, params={"prefix": "incoming/base"}).json()["entries"]
    assert [e["name"] for e in inner] == ["images", "labels", "data.yaml"]

    page = client.get(objects, params={"limit": 2}).json()
    assert len(page["entries"]) == 2 and page["cursor"] == "2"
    rest = client.get(objects, params={"limit": 2, "cursor": page["cursor"]}).json()
    assert [e["key"] for e in rest["entries"]] == ["notes.txt"] and "cursor" not in rest

    for prefix, status in (
        ("../", 400),
        ("incoming/../..", 400),
        (".hidden", 400),
        ("escape", 404),
        ("missing", 404),
        ("notes.txt", 400),
    ):
        got = client.get(objects, params={"prefix": prefix})
        assert got.status_code == status, (prefix, got.text)
    assert client.get(objects, params={"cursor": "x"}).status_code == 400
    missing = client.get(f"/api/integrations/local/{'f' * 24}/objects")
    assert missing.status_code == 404


def _wait_ready(client, slug: str) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        dataset = client.get(f"/api/datasets/alice/{slug}").json()["dataset"]
        if dataset["status"] != "processing":
            return dataset
        time.sleep(0.1)
    raise AssertionError("ingest did not finish")


def test_a_folder_and_an_archive_are_ingested_the_normal_way(client, storage):
    rid = root_id(storage.resolve())
    ingest = f"/api/integrations/local/{rid}/ingest"
    for slug in ("from-folder", "from-zip", "from-link"):
        created = client.post("/api/datasets", json={"slug": slug, "name": slug})
        assert created.status_code == 201, created.text

    folder = client.post(
        ingest,
        json={"owner": "alice", "dataset": "from-folder", "key": "incoming/base"},
    )
    assert folder.status_code == 201, folder.text
    assert set(folder.json()) == {"jobId", "status"}
    dataset = _wait_ready(client, "from-folder")
    assert dataset["status"] == "ready", dataset
    assert (dataset["imageCount"], dataset["classNames"]) == (4, ["a", "b"])
    assert dataset["splits"] == {"train": 2, "val": 2, "test": 0, "labeled": 4}
    db = client.app.state.services.db
    report = db.ingest_report(dataset["id"], folder.json()["jobId"])
    assert sorted(r["path"] for r in report) == sorted(
        [
            f"{kind}/{split}/{stem}.{ext}"
            for kind, ext in (("images", "jpg"), ("labels", "txt"))
            for split, stems in (("train", "ab"), ("val", "cd"))
            for stem in stems
        ]
        + ["data.yaml"]
    )

    zipped = client.post(
        ingest,
        json={
            "datasetId": client.get("/api/datasets/alice/from-zip").json()["dataset"][
                "id"
            ],
            "key": "incoming/base.zip",
            "targetSplit": "test",
        },
    )
    assert zipped.status_code == 201, zipped.text
    dataset = _wait_ready(client, "from-zip")
    assert dataset["imageCount"] == 4 and dataset["splits"]["test"] == 4

    linked = client.post(
        ingest, json={"owner": "alice", "dataset": "from-link", "key": "inside.zip"}
    )
    assert linked.status_code == 201, linked.text
    assert _wait_ready(client, "from-link")["imageCount"] == 4

    sessions = db.query("SELECT * FROM uploads ORDER BY created_at")
    assert [s["status"] for s in sessions] == ["consumed"] * 3
    assert all(s["size"] == s["total_bytes"] > 0 for s in sessions)


def test_ingest_refuses_what_it_must(client, storage):
    rid = root_id(storage.resolve())
    ingest = f"/api/integrations/local/{rid}/ingest"
    client.post("/api/datasets", json={"slug": "target", "name": "target"})
    where = {"owner": "alice", "dataset": "target"}
    for key, status in (
        ("escape.zip", 404),
        ("escape", 404),
        ("../outside/private.zip", 400),
        ("notes.txt", 400),
        ("incoming/base/.secret", 400),
        ("missing.zip", 404),
    ):
        got = client.post(ingest, json={**where, "key": key})
        assert got.status_code == status, (key, got.text)
    assert client.post(ingest, json=where).status_code == 400
    unknown_root = f"/api/integrations/local/{'f' * 24}/ingest"
    assert (
        client.post(unknown_root, json={**where, "key": "inside.zip"}).status_code
        == 404
    )
    db = client.app.state.services.db
    assert db.query("SELECT * FROM uploads") == []
    assert client.get("/api/datasets/alice/target").json()["dataset"]["imageCount"] == 0


def test_a_local_ingest_takes_every_ingest_option(client, storage):
    """A dry run from a local folder stores nothing, and class mapping applies,
    as they do for an uploaded archive; unknown fields are refused."""
    rid = root_id(storage.resolve())
    ingest = f"/api/integrations/local/{rid}/ingest"
    client.post("/api/datasets", json={"slug": "opts", "name": "opts"})
    target = {"owner": "alice", "dataset": "opts", "key": "incoming/base"}
    dry = client.post(ingest, json={**target, "dryRun": True})
    assert dry.status_code == 201, dry.text
    assert _wait_ready(client, "opts")["imageCount"] == 0
    mapped = client.post(ingest, json={**target, "classMapping": {"a": "apple"}})
    assert mapped.status_code == 201, mapped.text
    assert _wait_ready(client, "opts")["classNames"][0] == "apple"
    wrong = client.post(ingest, json={**target, "dryrun": True})
    assert wrong.status_code == 400 and "dryrun" in wrong.json()["error"]
