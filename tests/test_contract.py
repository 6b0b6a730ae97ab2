"""Responses checked against the Platform's OpenAPI contract, operation by operation,
through the stock SDK and the real app (real SQLite file, real Huey consumer)."""

from __future__ import annotations

import time

import pytest
from conftest import base_files, make_app, write_zip
from contract import problems
from starlette.testclient import TestClient


@pytest.fixture
def calls(home, tmp_path):
    app, key = make_app(home)
    auth = {"Authorization": f"Bearer {key}"}
    archive = write_zip(tmp_path / "a.zip", base_files()).read_bytes()
    with TestClient(app) as client:

        def call(method: str, path: str, template: str, **kwargs) -> dict:
            response = client.request(method, path, headers=auth, **kwargs)
            assert response.status_code < 300, response.text
            assert (
                problems(method, template, response.status_code, response.json()) == []
            )
            return response.json()

        yield call, client, archive


def test_responses_match_the_contract(calls):
    call, client, archive = calls
    call("GET", "/api/account/summary", "/api/account/summary")
    call("GET", "/api/api-keys", "/api/api-keys")
    call("POST", "/api/datasets", "/api/datasets", json={"dataset": "d", "name": "D"})
    session = call(
        "POST",
        "/api/upload/signed-url",
        "/api/upload/signed-url",
        json={
            "assetType": "datasets",
            "assetId": "d",
            "filename": "a.zip",
            "contentType": "application/zip",
            "totalBytes": len(archive),
        },
    )
    assert client.put(session["uploadUrl"], content=archive).status_code == 200
    call(
        "POST",
        "/api/upload/complete",
        "/api/upload/complete",
        json={"sessionId": session["sessionId"]},
    )
    call(
        "POST",
        "/api/datasets/alice/d/ingest",
        "/api/datasets/{owner}/{dataset}/ingest",
        json={"sessionId": session["sessionId"]},
    )
    for _ in range(100):
        dataset = call(
            "GET", "/api/datasets/alice/d", "/api/datasets/{owner}/{dataset}"
        )["dataset"]
        if dataset["status"] != "processing":
            break
        time.sleep(0.1)
    assert dataset["imageCount"] == 4
    call("GET", "/api/datasets/alice", "/api/datasets/{owner}")
    call(
        "GET",
        "/api/datasets/alice/d/images?includeLabels=true&includeImageUrls=true",
        "/api/datasets/{owner}/{dataset}/images",
    )
    call("POST", "/api/projects", "/api/projects", json={"project": "p", "name": "P"})
    call("GET", "/api/projects/alice/p", "/api/projects/{owner}/{project}")
    call("GET", "/api/projects/alice", "/api/projects/{owner}")
    call("POST", "/api/models", "/api/models", json={"project": "p", "model": "m"})
    call("GET", "/api/models/alice/p/m", "/api/models/{owner}/{project}/{model}")
    call("GET", "/api/models/alice/p", "/api/models/{owner}/{project}")
    call(
        "GET",
        "/api/models/alice/p/m/training",
        "/api/models/{owner}/{project}/{model}/training",
    )
    call(
        "GET",
        "/api/models/alice/p/m/files",
        "/api/models/{owner}/{project}/{model}/files",
    )
    call(
        "GET",
        "/api/models/alice/p/m/exports",
        "/api/models/{owner}/{project}/{model}/exports",
    )
    call("GET", "/api/explore/search", "/api/explore/search")
    call("GET", "/api/users?username=alice", "/api/users")
    call("GET", "/api/training/gpu-availability", "/api/training/gpu-availability")


def test_error_bodies_match_the_contract(calls):
    _, client, _ = calls
    response = client.get("/api/datasets/alice/missing")
    assert response.status_code == 404
    assert (
        problems("GET", "/api/datasets/{owner}/{dataset}", 404, response.json()) == []
    )
