"""Ingest through the real app: NDJSON (uploaded directly or inside an archive),
COCO, videos, dry runs on both route families, the Ready rule, hostile archives,
a crash and its retry, and the upload transport (cases E26, E27, S1, S4, S10)."""

from __future__ import annotations

import io
import json
import tarfile
import time

import numpy as np
import pytest
from conftest import base_files, dataset_upload_body, jpeg_bytes, make_app, write_zip
from contract import problems
from starlette.testclient import TestClient


class Api:
    def __init__(self, client: TestClient, key: str) -> None:
        self.client = client
        self.auth = {"Authorization": f"Bearer {key}"}

    def __call__(self, method, path, status=200, template=None, **kwargs) -> dict:
        response = self.client.request(method, path, headers=self.auth, **kwargs)
        assert response.status_code == status, response.text
        if template:
            assert problems(method, template, status, response.json()) == []
        return response.json()

    def upload(self, filename: str, data: bytes) -> str:
        body = dataset_upload_body(filename, len(data), "application/octet-stream")
        session = self("POST", "/api/upload/signed-url", json=body)
        assert self.client.put(session["uploadUrl"], content=data).status_code == 200
        return session["sessionId"]

    def ingest(self, slug, filename, data, status=201, **options) -> dict:
        body = {"sessionId": self.upload(filename, data), **options}
        return self(
            "POST",
            f"/api/datasets/alice/{slug}/ingest",
            status,
            "/api/datasets/{owner}/{dataset}/ingest",
            json=body,
        )

    def job(self, job_id: str) -> dict:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = self("GET", f"/api/jobs/{job_id}")["job"]
            if job["status"] not in ("queued", "running"):
                return job
            time.sleep(0.05)
        raise AssertionError("job did not finish")

    def dataset(self, slug: str) -> dict:
        return self(
            "GET", f"/api/datasets/alice/{slug}", 200, "/api/datasets/{owner}/{dataset}"
        )["dataset"]

    def create(self, slug: str, task: str = "detect") -> dict:
        return self(
            "POST",
            "/api/datasets",
            201,
            json={"dataset": slug, "name": slug, "task": task},
        )

    def images(self, slug: str, query: str = "") -> dict:
        return self(
            "GET",
            f"/api/datasets/alice/{slug}/images?limit=100&includeLabels=true{query}",
            200,
            "/api/datasets/{owner}/{dataset}/images",
        )


@pytest.fixture
def api(home):
    app, key = make_app(home)
    with TestClient(app) as client:
        yield Api(client, key)


def _zip(files) -> bytes:
    buffer = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_ndjson_upload_round_trips_and_remote_urls_stay_offline(api):
    api.create("src")
    api.job(api.ingest("src", "a.zip", _zip(base_files()))["jobId"])
    url = api("GET", "/api/datasets/alice/src/export")["downloadUrl"]
    exported = api.client.get(url).content.decode()
    extra = {
        "type": "image",
        "file": "far.jpg",
        "url": "https://example.com/far.jpg",
        "split": "train",
        "annotations": {"boxes": [[0, 0.5, 0.5, 0.2, 0.2]]},
    }
    data = (exported.rstrip("\n") + "\n" + json.dumps(extra) + "\n").encode()
    api.create("copy")
    job = api.job(api.ingest("copy", "copy.ndjson", data)["jobId"])
    assert job["status"] == "completed", job
    copied = api.dataset("copy")
    assert copied["imageCount"] == 4 and copied["classNames"] == ["a", "b"]
    assert copied["lastIngestSummary"]["skippedCounts"] == {"remote_url_offline": 1}
    before = sorted(
        (i["hash"], i["split"], i["labels"]) for i in api.images("src")["images"]
    )
    after = sorted(
        (i["hash"], i["split"], i["labels"]) for i in api.images("copy")["images"]
    )
    assert before == after


def test_ndjson_inside_an_archive_reads_images_by_file(api):
    header = {
        "type": "dataset",
        "task": "pose",
        "class_names": {"0": "person"},
        "kpt_shape": [2, 3],
        "flip_idx": [1, 0],
    }
    lines = [json.dumps(header)]
    files = {}
    for n, split in enumerate(["train", "train", "val"]):
        files[f"set/img{n}.jpg"] = jpeg_bytes(color=(n * 90, 20, 20))
        lines.append(
            json.dumps(
                {
                    "type": "image",
                    "file": f"img{n}.jpg",
                    "split": split,
                    "annotations": {
                        "pose": [[0, 0.5, 0.5, 0.4, 0.4, 0.4, 0.4, 2, 0.6, 0.6, 1]],
                        "boxes": [[0, 0.1, 0.1, 0.1, 0.1]],
                    },
                    "metadata": {"n": n},
                }
            )
        )
    files["set/data.ndjson"] = ("\n".join(lines) + "\n").encode()
    api.create("people")
    api.job(
        api.ingest(
            "people",
            "p.zip",
            _zip(files),
            imageMetadata={"img0.jpg": {"camera": "left"}},
        )["jobId"]
    )
    dataset = api.dataset("people")
    assert (
        dataset["task"] == "pose"
        and dataset["kptShape"] == [2, 3]
        and dataset["flipIdx"] == [1, 0]
    )
    listed = {i["name"]: i for i in api.images("people")["images"]}
    assert listed["img1.jpg"]["labels"][0]["keypoints"] == [0.4, 0.4, 2, 0.6, 0.6, 1]
    rows = api.client.app.state.services.db.all_images(dataset["id"])
    assert {r["name"]: r["metadata"] for r in rows}["img0.jpg"] == {
        "n": 0,
        "camera": "left",
    }


def test_coco_boxes_polygons_and_rle(api):
    coco = {
        "images": [
            {"id": 1, "file_name": "a.jpg", "width": 999, "height": 999},
            {"id": 2, "file_name": "b.jpg", "width": 64, "height": 64},
        ],
        "categories": [{"id": 7, "name": "cat"}, {"id": 9, "name": "dog"}],
        "annotations": [
            {
                "id": 1,
                "image_id": 1,
                "category_id": 9,
                "bbox": [16, 16, 32, 16],
                "segmentation": [[16, 16, 48, 16, 48, 32, 16, 32]],
            },
            {
                "id": 2,
                "image_id": 2,
                "category_id": 7,
                "bbox": [0, 0, 32, 32],
                "segmentation": {"counts": "abc", "size": [64, 64]},
                "iscrowd": 1,
            },
            {
                "id": 3,
                "image_id": 2,
                "category_id": 7,
                "bbox": [0, 0, 32, 32],
                "segmentation": [[0, 0, 32, 0, 32, 32]],
            },
        ],
    }
    files = {
        "train/_annotations.coco.json": json.dumps(coco).encode(),
        "train/a.jpg": jpeg_bytes(color=(200, 0, 0)),
        "train/b.jpg": jpeg_bytes(color=(0, 0, 200)),
    }
    api.create("seg", "segment")
    job = api.job(api.ingest("seg", "c.zip", _zip(files))["jobId"])
    dataset = api.dataset("seg")
    assert dataset["classNames"] == ["cat", "dog"]
    assert dataset["lastIngestSummary"]["skippedCounts"] == {"rle_annotation": 1}
    listed = {i["name"]: i["labels"] for i in api.images("seg")["images"]}
    # Normalised by the real 64x64 image, not the 999 the JSON claims.
    assert listed["a.jpg"] == [
        {
            "classId": 1,
            "bbox": [0.5, 0.375, 0.5, 0.25],
            "segments": [0.25, 0.25, 0.75, 0.25, 0.75, 0.5, 0.25, 0.5],
        }
    ]
    assert len(listed["b.jpg"]) == 1
    assert any(f["reason"] == "rle_annotation" for f in job["files"])


def _video(path, seconds: int, fps: int = 5) -> bytes:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (64, 48))
    for i in range(seconds * fps):
        writer.write(np.full((48, 64, 3), (i * 7) % 255, dtype=np.uint8))
    writer.release()
    return path.read_bytes()


def test_s4_videos_become_webp_frames_and_avi_is_refused(api, tmp_path):
    files = {
        "clips/walk.mp4": _video(tmp_path / "walk.mp4", 5),
        "clips/old.avi": b"RIFF....AVI ",
    }
    api.create("vid")
    job = api.job(api.ingest("vid", "v.zip", _zip(files))["jobId"])
    names = sorted(i["name"] for i in api.images("vid")["images"])
    assert names == [f"walk_frame_00{n}.webp" for n in range(1, 6)]
    verdicts = {f["path"]: f["reason"] for f in job["files"]}
    assert verdicts["clips/old.avi"] == "unsupported_video"


def test_s4_long_videos_give_at_most_100_frames():
    from appliance.ingest.video import MAX_FRAMES, _times

    assert len(_times(5.0)) == 5 and len(_times(200.0)) == MAX_FRAMES


@pytest.mark.parametrize("family", ["slug", "id"])
def test_dry_run_on_both_route_families_stores_nothing(api, family):
    created = api.create("dry")
    data = _zip(base_files())
    if family == "slug":
        job_id = api.ingest("dry", "a.zip", data, dryRun=True)["jobId"]
    else:
        body = {
            "sessionId": api.upload("a.zip", data),
            "datasetId": created["id"],
            "dryRun": True,
        }
        job_id = api("POST", "/api/datasets/ingest", 201, json=body)["jobId"]
    job = api.job(job_id)
    assert job["status"] == "completed" and job["result"]["added"] == 4
    assert len(job["files"]) == 9 and {f["verdict"] for f in job["files"]} == {
        "accepted"
    }
    dataset = api.dataset("dry")
    assert dataset["imageCount"] == 0 and "lastIngestSummary" not in dataset
    assert not (api.client.app.state.services.blobs.root / "images").exists()


def test_has_error_lists_images_whose_labels_were_refused(api):
    files = base_files()
    files["ds/labels/train/a.txt"] = b"7 0.5 0.5 0.2 0.2\n"
    api.create("err")
    api.job(api.ingest("err", "a.zip", _zip(files))["jobId"])
    errors = api.images("err", "&hasError=true")
    assert errors["total"] == 1 and errors["images"][0]["name"] == "a.jpg"
    assert errors["images"][0]["error"].startswith("class_out_of_range")
    assert api.images("err", "&hasError=false")["total"] == 3
    thumb = errors["images"][0]["thumbnailUrl"]
    assert "/files/thumbnails/" in thumb and api.client.get(thumb).status_code == 200


def test_s10_training_refuses_a_dataset_that_is_not_ready(api):
    files = base_files()
    for name in files:
        if name.endswith(".txt"):
            files[name] = b""
    api.create("empty")
    api.job(api.ingest("empty", "a.zip", _zip(files))["jobId"])
    api("POST", "/api/projects", 201, json={"project": "p", "name": "P"})
    model = api("POST", "/api/models", 201, json={"project": "p", "model": "m"})
    body = {
        "modelId": model["id"],
        "trainArgs": {
            "model": "yolo26n.yaml",
            "data": "ul://alice/datasets/empty",
            "epochs": 1,
        },
    }
    refused = api("POST", "/api/training/start", 400, json=body)
    assert "no labeled image" in refused["error"]


def test_s1_encrypted_zip_is_refused_at_once(api, tmp_path):
    data = bytearray(_zip({"ds/data.yaml": b"names: [a]"}))
    for sig, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        data[data.find(sig) + offset] |= 0x1
    api.create("enc")
    refused = api.ingest("enc", "e.zip", bytes(data), status=400)
    assert refused["error"].startswith("encrypted_archive")


def _tar(members) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for info, data in members:
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def test_hostile_tar_writes_nothing_outside_and_skips_links(api, home):
    members = []
    for name, data in base_files().items():
        info = tarfile.TarInfo(name)
        info.size = len(data)
        members.append((info, data))
    for name, kind in (
        ("ds/images/train/s.jpg", tarfile.SYMTYPE),
        ("ds/images/train/h.jpg", tarfile.LNKTYPE),
    ):
        link = tarfile.TarInfo(name)
        link.type, link.linkname = kind, "../../../../etc/passwd"
        members.append((link, None))
    evil = tarfile.TarInfo("../../evil.jpg")
    evil.size = 3
    members.append((evil, b"abc"))
    api.create("hostile")
    job = api.job(api.ingest("hostile", "h.tgz", _tar(members))["jobId"])
    reasons = sorted(f["reason"] for f in job["files"] if f["verdict"] == "rejected")
    assert reasons == ["link", "link", "unsafe_path"]
    assert api.dataset("hostile")["imageCount"] == 4
    assert not (home.parent / "evil.jpg").exists() and not (home / "evil.jpg").exists()


def test_tar_bomb_is_refused_before_it_is_expanded(api):
    info = tarfile.TarInfo("ds/images/train/big.jpg")
    info.size = 300 * 1024 * 1024
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.addfile(info, io.BytesIO(b"\0" * info.size))
    api.create("bomb")
    started = time.monotonic()
    job = api.job(api.ingest("bomb", "b.tgz", buffer.getvalue())["jobId"])
    assert job["status"] == "failed" and "compression_ratio" in job["error"]["message"]
    assert time.monotonic() - started < 20
    assert api.dataset("bomb")["imageCount"] == 0


def test_a_crash_mid_ingest_changes_nothing_and_the_retry_works(api, monkeypatch):
    from appliance.ingest import job as job_module

    api.create("crash")
    session = api.upload("a.zip", _zip(base_files()))
    real = job_module._Run.image
    calls = []

    def crash_on_third(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(self, *args)

    monkeypatch.setattr(job_module._Run, "image", crash_on_third)
    first = api(
        "POST", "/api/datasets/alice/crash/ingest", 201, json={"sessionId": session}
    )
    assert api.job(first["jobId"])["status"] == "failed"
    dataset = api.dataset("crash")
    assert dataset["imageCount"] == 0 and dataset["status"] == "failed"
    monkeypatch.setattr(job_module._Run, "image", real)
    again = api(
        "POST", "/api/datasets/alice/crash/ingest", 201, json={"sessionId": session}
    )
    assert api.job(again["jobId"])["status"] == "completed"
    assert api.dataset("crash")["imageCount"] == 4


def test_e26_a_dropped_put_can_be_sent_again(api):
    data = _zip(base_files())
    body = dataset_upload_body("a.zip", len(data), "application/zip")
    session = api("POST", "/api/upload/signed-url", json=body)

    def dropped():
        yield data[: len(data) // 2]
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        api.client.put(session["uploadUrl"], content=dropped())
    incomplete = api(
        "POST", "/api/upload/complete", 400, json={"sessionId": session["sessionId"]}
    )
    assert "nothing has been uploaded" in incomplete["error"]
    assert api.client.put(session["uploadUrl"], content=data).status_code == 200
    api("POST", "/api/upload/complete", json={"sessionId": session["sessionId"]})


def test_e27_more_bytes_than_declared_is_a_413_with_the_limit(api):
    data = _zip(base_files())
    body = dataset_upload_body("a.zip", 100, "application/zip")
    session = api("POST", "/api/upload/signed-url", json=body)
    response = api.client.put(session["uploadUrl"], content=data)
    assert response.status_code == 413 and "100" in response.json()["error"]
    huge = dataset_upload_body("a.zip", 10**15, "application/zip")
    refused = api("POST", "/api/upload/signed-url", 400, json=huge)
    assert "limit" in refused["error"]


ROWS = {
    "detect": "0 0.5 0.5 0.25 0.25",
    "segment": "0 0.1 0.1 0.5 0.1 0.5 0.6 0.1 0.6",
    "pose": "0 0.5 0.5 0.4 0.4 0.4 0.4 2 0.6 0.6 1",
    "obb": "1 0.5 0.2 0.9 0.5 0.6 0.9 0.2 0.6",
}


@pytest.mark.parametrize("task", ["detect", "segment", "pose", "obb", "classify"])
def test_ndjson_rows_of_every_task_come_back_identical(tmp_path, task):
    """Our own signed URLs resolve from the blob store; each task's NDJSON rows
    (appliance.labels.to_row) give back the labels they came from."""
    from appliance.blobs import BlobStore
    from appliance.ingest import IngestOptions, run_ingest
    from appliance.labels import NDJSON_KEYS, to_row
    from appliance.signing import Signer
    from appliance.store import Database

    db = Database(tmp_path / "a.db")
    blobs = BlobStore(tmp_path / "blobs")
    signer = Signer(b"k" * 32, "http://127.0.0.1:8000", 600)
    user = db.create_user("alice")
    ids = [
        db.create_dataset(
            owner_id=user["id"], slug=s, name=s, task=task, visibility="private"
        )["id"]
        for s in ("src", "dst")
    ]
    if task == "classify":
        files = {
            f"{split}/{c}/{split}{c}.jpg": jpeg_bytes(color=(ord(c) * 2, n * 99, 9))
            for n, split in enumerate(["train", "val"])
            for c in "ab"
        }
    else:
        files = base_files()
        files["ds/data.yaml"] += b"kpt_shape: [2, 3]\n" if task == "pose" else b""
        for name in files:
            if name.endswith(".txt"):
                files[name] = ROWS[task].encode() + b"\n"

    def run(dataset_id, path, filename):
        job = db.create_job("ingest", dataset_id, None)
        options = IngestOptions(filename=filename)
        return run_ingest(
            db, blobs, dataset_id, job["id"], path, options, lambda p, m: None, signer
        )

    run(ids[0], write_zip(tmp_path / "a.zip", files), "a.zip")
    source = db.dataset(ids[0])
    header = {
        "type": "dataset",
        "task": task,
        "class_names": {str(i): n for i, n in enumerate(source["class_names"])},
    }
    lines = [json.dumps(header)]
    for image in db.all_images(ids[0]):
        rows = [to_row(task, label) for label in image["labels"] or []]
        url = signer.url(
            f"/files/images/{image['hash'][:2]}/{image['hash']}.{image['ext']}"
        )
        annotations = {NDJSON_KEYS[task]: rows[0] if task == "classify" else rows}
        lines.append(
            json.dumps(
                {
                    "type": "image",
                    "file": f"{image['hash']}.{image['ext']}",
                    "url": url,
                    "split": image["split"],
                    "annotations": annotations,
                }
            )
        )
    path = tmp_path / "x.ndjson"
    path.write_text("\n".join(lines) + "\n")
    summary = run(ids[1], path, "x.ndjson")
    assert summary["errors"] == 0, summary

    def content(dataset_id):
        return sorted(
            (i["hash"], i["split"], json.dumps(i["labels"]))
            for i in db.all_images(dataset_id)
        )

    assert content(ids[1]) == content(ids[0]) and len(content(ids[0])) == 4
    copy = db.dataset(ids[1])
    assert copy["class_names"] == source["class_names"]
    if task == "pose":
        assert copy["metadata"]["kptShape"] == [2, 3]


def test_e26_a_ranged_upload_resumes_where_it_stopped(api):
    data = _zip(base_files())
    total, half = len(data), len(data) // 2
    body = dataset_upload_body("a.zip", total, "application/zip")
    session = api("POST", "/api/upload/signed-url", json=body)
    url = session["uploadUrl"]

    def put(chunk: bytes, start: int):
        end = start + len(chunk) - 1
        headers = {"Content-Range": f"bytes {start}-{end}/{total}"}
        return api.client.put(url, content=chunk, headers=headers)

    assert put(data[:half], 0).json()["received"] == half
    # The connection drops; the client asks how much arrived, then resumes.
    status = api.client.put(url, headers={"Content-Range": f"bytes */{total}"})
    assert status.json()["received"] == half
    assert put(data[half:], 0).status_code == 409  # not from the start again
    assert put(data[half:], half).json()["received"] == total
    api("POST", "/api/upload/complete", json={"sessionId": session["sessionId"]})
    api.create("resumed")
    body = {"sessionId": session["sessionId"]}
    job_id = api("POST", "/api/datasets/alice/resumed/ingest", 201, json=body)["jobId"]
    assert api.job(job_id)["status"] == "completed"
    assert api.dataset("resumed")["imageCount"] == 4


def test_ndjson_urls_of_this_appliance_need_a_valid_signature(tmp_path):
    from appliance.blobs import BlobStore
    from appliance.ingest.ndjson_in import _local_blob, _Refused
    from appliance.signing import Signer

    blobs = BlobStore(tmp_path)
    signer = Signer(b"k" * 32, "http://127.0.0.1:8000", 600)
    path = "/files/images/ab/" + "ab" * 16 + ".jpg"
    assert _local_blob(signer.url(path), blobs, signer) == blobs.image_path(
        "ab" * 16, "jpg"
    )
    forged = signer.url(path).replace("signature=", "signature=0")
    for url, reason in [
        (forged, "invalid_signature"),
        ("http://127.0.0.1:9999" + path, "remote_url_offline"),
        ("https://example.com" + path, "remote_url_offline"),
        (signer.url("/files/models/x/best.pt"), "not_an_image_url"),
    ]:
        with pytest.raises(_Refused) as refused:
            _local_blob(url, blobs, signer)
        assert refused.value.reason == reason


def test_trial_22_a_thumbnail_url_of_this_appliance_reads_its_image(tmp_path):
    from appliance.blobs import BlobStore
    from appliance.ingest.ndjson_in import _local_blob, _Refused
    from appliance.serialize import thumbnail_segments
    from appliance.signing import Signer

    blobs = BlobStore(tmp_path)
    signer = Signer(b"k" * 32, "http://127.0.0.1:8000", 600)
    data = jpeg_bytes()
    digest, _ = blobs.put_image(data, "png")
    thumb = "/files/" + "/".join(thumbnail_segments(digest))
    assert _local_blob(signer.url(thumb), blobs, signer) == blobs.image_path(
        digest, "png"
    )
    gone = "/files/" + "/".join(thumbnail_segments("cd" * 16))
    with pytest.raises(_Refused) as refused:
        _local_blob(signer.url(gone), blobs, signer)
    assert refused.value.reason == "missing_image"
    assert "thumbnail of this appliance" in refused.value.message
    with pytest.raises(_Refused) as refused:
        _local_blob(signer.url("/files/models/x/best.pt"), blobs, signer)
    assert "not this appliance" not in refused.value.message
