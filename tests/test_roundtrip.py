"""Export then re-ingest, for every task: the NDJSON a dataset exports, ingested
into a new dataset, gives the same dataset (images, splits, labels, class names,
keypoint shape and image metadata). Versions keep their own content."""

from __future__ import annotations

import pytest
from conftest import Api, jpeg_bytes, make_app, write_zip
from starlette.testclient import TestClient

COLORS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
ROWS = {
    "detect": ["0 0.5 0.5 0.25 0.25", "1 0.3 0.4 0.2 0.1\n0 0.7 0.7 0.2 0.2"],
    "segment": ["0 0.1 0.1 0.5 0.1 0.5 0.6 0.1 0.6", "1 0.2 0.2 0.8 0.3 0.4 0.9"],
    "pose": [
        "0 0.5 0.5 0.4 0.4 0.4 0.4 2 0.6 0.6 1",
        "0 0.3 0.3 0.2 0.2 0.25 0.3 2 0.35 0.3 0",
    ],
    "obb": [
        "0 0.1 0.1 0.6 0.1 0.6 0.4 0.1 0.4",
        "1 0.5 0.2 0.9 0.5 0.6 0.9 0.2 0.6",
    ],
}


def _yolo_files(task: str) -> dict[str, bytes]:
    extra = "kpt_shape: [2, 3]\nflip_idx: [1, 0]\n" if task == "pose" else ""
    files = {
        "data.yaml": (
            "train: images/train\nval: images/val\nnames: {0: a, 1: b}\n" + extra
        ).encode()
    }
    for n, stem in enumerate("abcd"):
        split = "train" if n < 2 else "val"
        files[f"images/{split}/{stem}.jpg"] = jpeg_bytes(color=COLORS[n])
        files[f"labels/{split}/{stem}.txt"] = (ROWS[task][n % 2] + "\n").encode()
    return files


def _classify_files() -> dict[str, bytes]:
    files = {}
    for n, stem in enumerate("abcd"):
        split = "train" if n < 2 else "val"
        label = "cat" if n % 2 == 0 else "dog"
        files[f"{split}/{label}/{stem}.jpg"] = jpeg_bytes(color=COLORS[n])
    return files


def _content(api: Api, slug: str) -> dict:
    dataset = api("GET", f"/api/datasets/alice/{slug}")["dataset"]
    return {
        "task": dataset["task"],
        "classNames": dataset["classNames"],
        "kptShape": dataset.get("kptShape"),
        "images": [
            (
                i["hash"],
                i["split"],
                i["labels"],
                api("GET", f"/api/images/{i['id']}")["metadata"],
            )
            for i in api.images(slug)
        ],
    }


@pytest.fixture
def api(home):
    app, key = make_app(home)
    with TestClient(app) as client:
        yield Api(client, key)


@pytest.mark.parametrize("task", ["detect", "segment", "pose", "obb", "classify"])
def test_export_then_reingest_gives_the_same_dataset(api, tmp_path, task):
    files = _classify_files() if task == "classify" else _yolo_files(task)
    archive = write_zip(tmp_path / "src.zip", files).read_bytes()
    api(
        "POST", "/api/datasets", 201, json={"dataset": "src", "name": "S", "task": task}
    )
    source = api.ingest("src", "src.zip", archive)
    assert source["imageCount"] == 4 and source["status"] == "ready", source
    first = api.images("src")[0]
    api("PATCH", f"/api/images/{first['id']}", json={"metadata": {"camera": "left"}})
    before = _content(api, "src")
    assert all(labels for _, _, labels, _ in before["images"]), before
    assert {"camera": "left"} in [metadata for *_, metadata in before["images"]]
    if task == "pose":
        assert before["kptShape"] == [2, 3]

    exported = api.ndjson("src")
    api(
        "POST", "/api/datasets", 201, json={"dataset": "dst", "name": "D", "task": task}
    )
    copy = api.ingest("dst", "src.ndjson", exported)
    assert copy["imageCount"] == 4, copy
    assert _content(api, "dst") == before


def test_a_version_keeps_its_content_after_edits(api, tmp_path):
    archive = write_zip(tmp_path / "src.zip", _yolo_files("detect")).read_bytes()
    api("POST", "/api/datasets", 201, json={"dataset": "src", "name": "S"})
    api.ingest("src", "src.zip", archive)
    v1 = api("POST", "/api/datasets/alice/src/export", json={"description": "first"})
    again = api("POST", "/api/datasets/alice/src/export", json={})
    assert again["version"] == v1["version"] == 1
    snapshot = api.ndjson("src", 1)

    image = api.images("src")[0]
    api("DELETE", f"/api/images/{image['id']}")
    assert api("POST", "/api/datasets/alice/src/export", json={})["version"] == 2
    assert api.ndjson("src", 1).count(b"\n") == snapshot.count(b"\n") == 5
    assert api.ndjson("src", 2).count(b"\n") == 4

    api("POST", "/api/datasets", 201, json={"dataset": "old", "name": "O"})
    api.ingest("old", "v1.ndjson", snapshot)
    assert len(api.images("old")) == 4


def test_trial_18_an_empty_classify_label_is_unlabeled_everywhere(api, tmp_path):
    archive = write_zip(tmp_path / "src.zip", _classify_files()).read_bytes()
    api(
        "POST",
        "/api/datasets",
        201,
        json={"dataset": "src", "name": "S", "task": "classify"},
    )
    api.ingest("src", "src.zip", archive)
    first = api.images("src")[0]
    api("PATCH", f"/api/images/{first['id']}", json={"labels": []})
    dataset = api("GET", "/api/datasets/alice/src")["dataset"]
    labeled = dataset["splits"]["labeled"]
    assert labeled == 3
    with_label = api("GET", "/api/datasets/alice/src/images?hasLabel=true&limit=100")
    assert first["id"] not in [i["id"] for i in with_label["images"]]
    api(
        "POST",
        "/api/datasets",
        201,
        json={"dataset": "dst", "name": "D", "task": "classify"},
    )
    copy = api.ingest("dst", "src.ndjson", api.ndjson("src"))
    assert copy["imageCount"] == 4 and copy["splits"]["labeled"] == labeled
