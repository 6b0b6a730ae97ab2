"""Dataset exports and versions: NDJSON for all five tasks, proven with
ultralytics' own converter against a live server, and versions that are
numbered, immutable, reused when nothing changed, downloadable, describable,
restorable and comparable (cases S8, S9)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import jpeg_bytes, make_app
from contract import problems
from starlette.testclient import TestClient
from ultralytics_platform import Platform

from appliance import ndjson
from appliance.demo import free_port
from appliance.labels import NDJSON_KEYS, to_row
from appliance.ratelimit import category

SLUG = "/api/datasets/{owner}/{dataset}"
NAMES = ["a", "b"]
KPT_SHAPE = [3, 3]
FLIP_IDX = [0, 2, 1]

#: One label list per image for each task: three train images, one val image.
LABELS = {
    "detect": [
        [{"classId": 0, "bbox": [0.5, 0.5, 0.25, 0.25]}],
        [
            {"classId": 1, "bbox": [0.3, 0.3, 0.2, 0.2]},
            {"classId": 0, "bbox": [0.7, 0.6, 0.2, 0.3]},
        ],
        [],
        [{"classId": 1, "bbox": [0.5, 0.4, 0.5, 0.5]}],
    ],
    "segment": [
        [
            {
                "classId": 0,
                "bbox": [0.3, 0.35, 0.4, 0.5],
                "segments": [0.1, 0.1, 0.5, 0.1, 0.3, 0.6],
            }
        ],
        [
            {
                "classId": 1,
                "bbox": [0.5, 0.5, 0.4, 0.4],
                "segments": [0.3, 0.3, 0.7, 0.3, 0.7, 0.7, 0.3, 0.7],
            }
        ],
        [
            {
                "classId": 0,
                "bbox": [0.5, 0.5, 0.2, 0.2],
                "segments": [0.4, 0.4, 0.6, 0.4, 0.5, 0.6],
            }
        ],
        [
            {
                "classId": 1,
                "bbox": [0.5, 0.5, 0.4, 0.4],
                "segments": [0.3, 0.3, 0.7, 0.3, 0.5, 0.7],
            }
        ],
    ],
    "pose": [
        [
            {
                "classId": 0,
                "bbox": [0.5, 0.5, 0.4, 0.4],
                "keypoints": [0.4, 0.4, 2, 0.6, 0.4, 2, 0.5, 0.6, 1],
            }
        ],
        [
            {
                "classId": 1,
                "bbox": [0.4, 0.4, 0.3, 0.3],
                "keypoints": [0.3, 0.3, 2, 0.5, 0.3, 0, 0.4, 0.5, 2],
            }
        ],
        [
            {
                "classId": 0,
                "bbox": [0.6, 0.6, 0.2, 0.2],
                "keypoints": [0.55, 0.55, 2, 0.65, 0.55, 2, 0.6, 0.65, 2],
            }
        ],
        [
            {
                "classId": 1,
                "bbox": [0.5, 0.5, 0.5, 0.5],
                "keypoints": [0.4, 0.4, 2, 0.6, 0.4, 2, 0.5, 0.7, 2],
            }
        ],
    ],
    "obb": [
        [{"classId": 0, "obb": [0.1, 0.1, 0.6, 0.1, 0.6, 0.4, 0.1, 0.4]}],
        [{"classId": 1, "obb": [0.5, 0.2, 0.8, 0.5, 0.5, 0.8, 0.2, 0.5]}],
        [{"classId": 1, "obb": [0.2, 0.2, 0.4, 0.2, 0.4, 0.4, 0.2, 0.4]}],
        [{"classId": 0, "obb": [0.3, 0.3, 0.7, 0.3, 0.7, 0.6, 0.3, 0.6]}],
    ],
    "classify": [
        [{"classId": 0}],
        [{"classId": 1}],
        [{"classId": 1}],
        [{"classId": 0}],
    ],
}
SPLITS = ["train", "train", "train", "val"]


def add_dataset(app, task: str, slug: str | None = None, metadata=None, labels=None):
    """A dataset made through the real store and blob store, as ingest would."""
    svc = app.state.services
    owner = svc.db.user_by_name("alice")
    if metadata is None and task == "pose":
        metadata = {"kptShape": KPT_SHAPE, "flipIdx": FLIP_IDX}
    dataset = svc.db.create_dataset(
        owner_id=owner["id"],
        slug=slug or task,
        name=f"{task} set",
        task=task,
        visibility="private",
        class_names=NAMES,
        metadata=metadata or {},
    )
    rows = []
    for n, (split, image_labels) in enumerate(zip(SPLITS, labels or LABELS[task])):
        data = jpeg_bytes(size=(32, 32), color=(40 * n, 120, 200 - 40 * n))
        digest, _ = svc.blobs.put_image(data, "jpg")
        rows.append(
            {
                "hash": digest,
                "ext": "jpg",
                "name": f"img{n}.jpg",
                "width": 32,
                "height": 32,
                "bytes": len(data),
                "split": split,
                "labels": image_labels,
                "label_count": len(image_labels),
            }
        )
    svc.db.replace_images(dataset["id"], rows, [], "setup")
    return svc.db.dataset(dataset["id"])


def _ok(response, method: str, template: str, status: int = 200) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert problems(method, template, status, body) == []
    return body


def _error(response, method: str, template: str, status: int) -> None:
    assert response.status_code == status, response.text
    assert problems(method, template, status, response.json()) == []


# -- NDJSON through ultralytics' own converter -----------------------------------


class _LiveServer:
    """The real app under uvicorn on a loopback port, in a thread."""

    def __init__(self, home: Path) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app, self.key = make_app(home, run_queue=False, public_url=self.url)
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    def get(self, path: str, **params) -> httpx.Response:
        return httpx.get(
            self.url + path,
            params=params,
            headers={"Authorization": f"Bearer {self.key}"},
        )


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    home = tmp_path_factory.mktemp("live") / "home"
    home.mkdir()
    with _LiveServer(home) as server:
        for task in LABELS:
            add_dataset(server.app, task)
        yield server


def _convert(live, task: str, out: Path, **params) -> tuple[Path, list[dict]]:
    response = live.get(f"/api/datasets/alice/{task}/export", **params)
    assert response.status_code == 200, response.text
    url = response.json()["downloadUrl"]
    assert url.startswith(live.url + "/files/ndjson/")
    text = httpx.get(url).text
    name = Path(url.split("?")[0]).name
    local = out / name
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(text)
    from ultralytics.data.converter import convert_ndjson_to_yolo

    converted = asyncio.run(convert_ndjson_to_yolo(local, output_path=out / "yolo"))
    return Path(converted), [json.loads(line) for line in text.splitlines()]


def _expected_rows(task: str) -> dict[str, set[str]]:
    """Label-file lines per image, by split and image number."""
    return {
        f"{SPLITS[n]}/{n}": {
            " ".join(map(str, row)) for lab in labels if (row := to_row(task, lab))
        }
        for n, labels in enumerate(LABELS[task])
    }


@pytest.mark.parametrize("task", ["detect", "segment", "pose", "obb"])
def test_export_converts_into_a_yolo_dataset_ultralytics_accepts(live, tmp_path, task):
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset

    data_yaml, lines = _convert(live, task, tmp_path)
    header = lines[0]
    assert header["task"] == task and header["class_names"] == {"0": "a", "1": "b"}
    assert {key for line in lines[1:] for key in line["annotations"]} == {
        NDJSON_KEYS[task]
    }
    if task == "pose":
        assert (header["kpt_shape"], header["flip_idx"]) == (KPT_SHAPE, FLIP_IDX)
    root = data_yaml.parent
    data = yaml.safe_load(data_yaml.read_text())
    assert data["names"] == {0: "a", 1: "b"} and data["task"] == task
    if task == "pose":
        assert data["kpt_shape"] == KPT_SHAPE and data["flip_idx"] == FLIP_IDX

    # Every image's label file holds exactly its rows, verbatim (the image's
    # line number in the NDJSON is its index in the file name).
    written = {}
    for n in range(len(SPLITS)):
        [label_file] = root.glob(f"labels/{SPLITS[n]}/*_{n + 1}.txt")
        written[f"{SPLITS[n]}/{n}"] = set(label_file.read_text().splitlines())
    assert written == _expected_rows(task)

    checked = check_det_dataset(str(data_yaml))
    assert checked["nc"] == 2
    dataset = YOLODataset(
        img_path=str(root / "images" / "train"),
        imgsz=32,
        augment=False,
        data=checked,
        task=task,
    )
    counts = sorted(len(label["cls"]) for label in dataset.labels)
    assert counts == sorted(len(labels) for labels in LABELS[task][:3])
    if task == "pose":
        shapes = {
            label["keypoints"].shape[1:]
            for label in dataset.labels
            if len(label["cls"])
        }
        assert shapes == {tuple(KPT_SHAPE)}


def test_classify_export_converts_into_class_folders(live, tmp_path):
    from ultralytics.data.utils import check_cls_dataset

    root, lines = _convert(live, "classify", tmp_path)
    assert [line["annotations"] for line in lines[1:]] == [
        {"classification": [lab[0]["classId"]]} for lab in LABELS["classify"]
    ]
    assert sorted(p.name for p in (root / "train").iterdir()) == ["000000", "000001"]
    assert len(list((root / "train" / "000000").iterdir())) == 1
    assert len(list((root / "train" / "000001").iterdir())) == 2
    assert len(list((root / "val" / "000000").iterdir())) == 1
    names = yaml.safe_load((root / ".ndjson.yaml").read_text())
    assert "a" in json.dumps(names) and "b" in json.dumps(names)
    assert check_cls_dataset(str(root))["nc"] == 2


def test_a_saved_version_converts_with_its_own_content(live, tmp_path):
    """v1 keeps the labels it was saved with after the dataset changes, and its
    download carries fresh image signatures."""
    svc = live.app.state.services
    dataset = add_dataset(live.app, "detect", slug="versioned")
    key = {"Authorization": f"Bearer {live.key}"}
    created = httpx.post(
        f"{live.url}/api/datasets/alice/versioned/export", headers=key, json={}
    )
    assert created.status_code == 200 and created.json()["version"] == 1
    image = svc.db.all_images(dataset["id"])[0]
    svc.db.set_image_labels(image["id"], [{"classId": 1, "bbox": [0.1, 0.1, 0.1, 0.1]}])

    response = live.get("/api/datasets/alice/versioned/export", v=1)
    assert response.json()["version"] == 1
    text = httpx.get(response.json()["downloadUrl"]).text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["version"] == 1
    assert [r["annotations"]["boxes"] for r in lines[1:]] == [
        [to_row("detect", lab) for lab in labels] for labels in LABELS["detect"]
    ]
    expires = int(lines[1]["url"].split("expires=")[1].split("&")[0])
    assert expires >= time.time() + svc.settings.signed_url_ttl - 60
    assert (
        httpx.get(lines[1]["url"]).content
        == svc.blobs.image_path(
            lines[1]["url"].split("/")[-1].split(".")[0], "jpg"
        ).read_bytes()
    )


# -- versions over the API ---------------------------------------------------------


@pytest.fixture
def client(home):
    app, key = make_app(home, run_queue=False)
    with TestClient(app) as test_client:
        test_client.headers["Authorization"] = f"Bearer {key}"
        yield test_client


def _lines(client, url: str) -> list[dict]:
    response = client.get(url)
    assert response.status_code == 200
    return [json.loads(line) for line in response.text.splitlines()]


def test_versions_are_immutable_reused_and_restorable(client):
    """S8: v1, again unchanged (still v1), edit, v2, restore v1: contents equal v1."""
    app = client.app
    db = app.state.services.db
    dataset = add_dataset(app, "detect")
    base = "/api/datasets/alice/detect"

    first = _ok(
        client.post(f"{base}/export", json={"description": "first"}),
        "POST",
        f"{SLUG}/export",
    )
    assert (first["version"], first["reused"]) == (1, False)
    again = _ok(client.post(f"{base}/export"), "POST", f"{SLUG}/export")
    assert (again["version"], again["reused"]) == (1, True)

    image = db.all_images(dataset["id"])[1]
    db.set_image_labels(image["id"], [{"classId": 0, "bbox": [0.2, 0.2, 0.1, 0.1]}])
    db.update_dataset(dataset["id"], class_names=["a", "b", "c"])
    second = _ok(
        client.post(f"{base}/export", json={"description": "fixed"}),
        "POST",
        f"{SLUG}/export",
    )
    assert (second["version"], second["reused"]) == (2, False)

    detail = _ok(client.get(base), "GET", SLUG)["dataset"]
    versions = {v["version"]: v for v in detail["versions"]}
    assert sorted(versions) == [1, 2]
    assert versions[1]["description"] == "first"
    assert versions[1]["annotationCount"] == 4 and versions[2]["annotationCount"] == 3
    assert versions[1]["classCount"] == 2 and versions[2]["classCount"] == 3
    assert versions[1]["splits"] == {"train": 3, "val": 1, "test": 0, "labeled": 4}
    assert versions[1]["contentHash"] != versions[2]["contentHash"]

    restored = _ok(
        client.post(f"{base}/restore", json={"version": 1}), "POST", f"{SLUG}/restore"
    )
    assert restored == {"version": 1, "imageCount": 4}
    after = db.dataset(dataset["id"])
    assert after["status"] == "ready" and after["class_names"] == NAMES
    images = db.all_images(dataset["id"])
    assert ndjson.content_digest(after, images) == versions[1]["contentHash"]
    assert [i["labels"] for i in images] == LABELS["detect"]
    assert {i["id"] for i in images} >= {image["id"]}

    # The restored dataset is v1 again: saving it reuses v1.
    third = _ok(client.post(f"{base}/export"), "POST", f"{SLUG}/export")
    assert (third["version"], third["reused"]) == (1, True)

    # v2 still downloads with its own content.
    v2 = _ok(client.get(f"{base}/export", params={"v": 2}), "GET", f"{SLUG}/export")
    lines = _lines(client, v2["downloadUrl"])
    assert lines[0]["class_names"] == {"0": "a", "1": "b", "2": "c"}
    assert sum(len(r["annotations"]["boxes"]) for r in lines[1:]) == 3


def test_current_export_says_honestly_whether_it_is_cached(client):
    dataset = add_dataset(client.app, "detect")
    path = f"/api/datasets/{dataset['id']}/export"
    first = _ok(client.get(path), "GET", f"{SLUG}/export")
    assert first["cached"] is False
    assert _ok(client.get(path), "GET", f"{SLUG}/export")["cached"] is True
    db = client.app.state.services.db
    image = db.all_images(dataset["id"])[0]
    db.set_image_labels(image["id"], [])
    assert _ok(client.get(path), "GET", f"{SLUG}/export")["cached"] is False
    lines = _lines(client, client.get(path).json()["downloadUrl"])
    assert lines[0]["type"] == "dataset" and len(lines) == 5
    assert [r["file"] for r in lines[1:]] == [f"img{n}.jpg" for n in range(4)]
    db.update_dataset(dataset["id"], description="now described")
    described = _ok(client.get(path), "GET", f"{SLUG}/export")
    assert described["cached"] is False
    assert _lines(client, described["downloadUrl"])[0]["description"] == "now described"


def test_seed_id_routes_create_describe_and_restore(client):
    dataset = add_dataset(client.app, "segment")
    base = f"/api/datasets/{dataset['id']}"
    created = client.post(f"{base}/export", json={"description": "one"})
    assert created.status_code == 200 and created.json()["version"] == 1
    patched = client.patch(
        f"{base}/export", json={"version": 1, "description": "renamed"}
    )
    assert _ok(patched, "PATCH", f"{SLUG}/export") == {"ok": True}
    detail = client.get(base).json()["dataset"]
    assert [(v["version"], v["description"]) for v in detail["versions"]] == [
        (1, "renamed")
    ]
    restored = client.post(f"{base}/restore", json={"version": 1})
    assert restored.json() == {"version": 1, "imageCount": 4}
    got = client.get(f"{base}/export", params={"v": 1}).json()
    assert set(got) == {"downloadUrl", "version"}
    assert _lines(client, got["downloadUrl"])[1]["annotations"]["segments"][0][0] == 0


def test_version_errors_are_clear(client):
    add_dataset(client.app, "detect")
    base = "/api/datasets/alice/detect"
    for v in ("0", "-1", "abc", "1.5"):
        _error(
            client.get(f"{base}/export", params={"v": v}), "GET", f"{SLUG}/export", 400
        )
    _error(client.get(f"{base}/export", params={"v": 7}), "GET", f"{SLUG}/export", 404)
    _error(
        client.post(f"{base}/export", json={"description": "x" * 201}),
        "POST",
        f"{SLUG}/export",
        400,
    )
    _error(
        client.patch(f"{base}/export", json={"version": 1, "description": "x"}),
        "PATCH",
        f"{SLUG}/export",
        404,
    )
    _error(
        client.patch(f"{base}/export", json={"version": 1}),
        "PATCH",
        f"{SLUG}/export",
        400,
    )
    _error(client.post(f"{base}/restore", json={}), "POST", f"{SLUG}/restore", 400)
    _error(
        client.post(f"{base}/restore", json={"version": True}),
        "POST",
        f"{SLUG}/restore",
        400,
    )
    _error(
        client.post(f"{base}/restore", json={"version": 3}),
        "POST",
        f"{SLUG}/restore",
        404,
    )


def test_a_processing_dataset_is_neither_versioned_nor_restored(client):
    dataset = add_dataset(client.app, "detect")
    base = "/api/datasets/alice/detect"
    client.post(f"{base}/export")
    db = client.app.state.services.db
    db.update_dataset(dataset["id"], status="processing")
    _error(client.post(f"{base}/export"), "POST", f"{SLUG}/export", 409)
    _error(
        client.post(f"{base}/restore", json={"version": 1}),
        "POST",
        f"{SLUG}/restore",
        409,
    )
    _error(client.get(f"{base}/export"), "GET", f"{SLUG}/export", 409)
    # A saved version is immutable: it downloads whatever the dataset is doing.
    assert client.get(f"{base}/export", params={"v": 1}).status_code == 200
    assert db.dataset(dataset["id"])["status"] == "processing"


def test_export_lines_carry_pose_shape_and_image_metadata(client):
    """Lossless for re-import: kpt_shape inferred when the metadata lacks it, an
    empty label list kept apart from "not labeled", and image metadata when the
    images table has that column."""
    app = client.app
    db = app.state.services.db
    if "metadata" not in db.db["images"].columns_dict:
        with db.atomic() as conn:
            conn.execute("ALTER TABLE images ADD COLUMN metadata TEXT")
    pose = add_dataset(app, "pose", slug="bare-pose", metadata={"note": "x"})
    image = db.all_images(pose["id"])[0]
    with db.atomic() as conn:
        conn["images"].update(image["id"], {"metadata": {"camera": "left"}})
    db.set_image_labels(db.all_images(pose["id"])[1]["id"], [])

    url = client.get("/api/datasets/alice/bare-pose/export").json()["downloadUrl"]
    lines = _lines(client, url)
    assert lines[0]["kpt_shape"] == KPT_SHAPE and "flip_idx" not in lines[0]
    by_file = {r["file"]: r for r in lines[1:]}
    assert by_file[image["name"]]["metadata"] == {"camera": "left"}
    assert by_file["img1.jpg"]["annotations"] == {"pose": []}

    created = client.post("/api/datasets/alice/bare-pose/export").json()
    saved = _lines(client, created["downloadUrl"])
    assert {r["file"]: r.get("metadata") for r in saved[1:]}[image["name"]] == {
        "camera": "left"
    }


def test_compare_in_the_sdk_shape(client):
    """The stock SDK's `datasets.compare(base=, head=)`: items added, removed,
    modified or moved, a summary and a preview on the first page; with `hash`,
    one image as each version stores it."""
    dataset = add_dataset(client.app, "detect")
    base = f"/api/datasets/{dataset['id']}"
    client.post(f"{base}/export")
    db = client.app.state.services.db
    images = db.all_images(dataset["id"])
    db.set_image_labels(images[0]["id"], [])
    db.delete_image(images[3]["id"])
    db.move_images(dataset["id"], [images[1]["id"]], "test", None)
    db.update_dataset(dataset["id"], class_names=["a", "bee"])
    client.post(f"{base}/export")

    sdk = Platform(
        base_url="http://testserver",
        api_key=client.headers["Authorization"].split()[1],
        http_client=client,
        max_retries=0,
    )
    body = sdk.datasets.compare("alice", "detect", base=1, head=2)
    assert problems_free(body)
    changes = {(i["name"], i["change"]) for i in body["items"]}
    assert changes == {
        (images[0]["name"], "modified"),
        (images[1]["name"], "moved"),
        (images[3]["name"], "removed"),
    }
    summary = body["summary"]
    assert (summary["added"], summary["removed"], summary["modified"]) == (0, 1, 1)
    assert summary["moved"] == 1 and summary["labelsRemoved"] == 2
    assert summary["header"]["classesRenamed"] == [{"from": "b", "to": "bee"}]
    assert summary["header"]["changed"] == ["classNames"]
    first = body["items"][0]
    assert body["preview"][1] is None and first["change"] == "removed"

    one = sdk.datasets.compare("alice", "detect", base=1, head=2, hash=first["hash"])
    assert one["versions"][0]["images"][0]["name"] == first["name"]
    assert one["versions"][1] is None
    now = client.get(f"{base}/versions/compare", params={"base": 2}).json()
    assert now["items"] == [] and now["summary"]["modified"] == 0
    assert client.get(f"{base}/versions/compare").status_code == 400
    missing = client.get(f"{base}/versions/compare", params={"base": 1, "head": 9})
    assert missing.status_code == 404
    bad = client.get(f"{base}/versions/compare", params={"base": 1, "cursor": "x"})
    assert bad.status_code == 400


def problems_free(body: dict) -> bool:
    """Every item carries the fields the SDK's type names."""
    keys = {"hash", "name", "ext", "change", "fields", "labelsAdded", "labelsRemoved"}
    return all(keys <= set(item) for item in body["items"])


def test_version_creation_and_download_count_as_exports():
    for path in (
        "/api/datasets/alice/ds/export",
        "/api/datasets/AbCdEfGhIjKlMnOpQrSt/export",
    ):
        assert category("POST", path) == "export"
        assert category("GET", path) == "export"
    assert category("PATCH", "/api/datasets/alice/ds/export") == "default"
    assert (
        category("POST", "/api/integrations/local/" + "a" * 24 + "/ingest") == "upload"
    )
