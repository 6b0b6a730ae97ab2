"""Embeddings, the 2-D layout and clusters: the numpy parts on their own, then the
job and routes through the real app and queue."""

from __future__ import annotations

import io
import shutil
import time

import numpy as np
import pytest
from conftest import make_app, store_images, train_tiny_detector
from contract import problems
from PIL import Image, ImageDraw
from starlette.testclient import TestClient

from appliance import embeddings

STATUS = "/api/datasets/{owner}/{dataset}/embeddings"
LAYOUT = "/api/datasets/{owner}/{dataset}/images/clustering"


def _picture(kind: str, seed: int) -> bytes:
    """Two kinds of picture that differ in colour and shape, with noise."""
    rng = np.random.default_rng(seed)
    base = (20, 90, 200) if kind == "sky" else (200, 120, 30)
    pixels = np.clip(rng.normal(base, 25, (48 + seed % 7, 48, 3)), 0, 255)
    image = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    if kind == "sky":
        draw.ellipse([10, 10, 30, 30], fill=(250, 250, 250))
    else:
        for x in range(0, 48, 8):
            draw.line([x, 0, x, 47], fill=(40, 20, 10), width=2)
    buffer = io.BytesIO()
    image.save(buffer, "PNG" if seed % 2 else "JPEG")
    return buffer.getvalue()


def _kinds(n: int) -> list[str]:
    return ["sky" if i % 2 else "wood" for i in range(n)]


# -- the numpy parts -------------------------------------------------------------


def test_descriptor_is_deterministic_unit_length_and_refuses_junk():
    first = embeddings.describe(_picture("sky", 3))
    assert first.shape == (embeddings.DIMENSIONS,) and first.dtype == np.float32
    assert np.isclose(np.linalg.norm(first), 1.0, atol=1e-5)
    assert np.array_equal(first, embeddings.describe(_picture("sky", 3)))
    with pytest.raises(ValueError):
        embeddings.describe(b"not an image")


def test_layout_separates_two_kinds_and_repeats_exactly():
    kinds = _kinds(60)
    vectors = np.stack(
        [embeddings.describe(_picture(k, i)) for i, k in enumerate(kinds)]
    )
    first = embeddings.analyse(vectors)
    again = embeddings.analyse(vectors)
    assert np.array_equal(first.coords, again.coords)
    assert np.array_equal(first.clusters, again.clusters)
    assert first.coords.shape == (60, 2) and np.abs(first.coords).max() <= 1.0 + 1e-6
    sky = np.array([k == "sky" for k in kinds])
    # No cluster mixes the two kinds, and the kinds sit apart on the plane.
    for cluster in np.unique(first.clusters):
        members = sky[first.clusters == cluster]
        assert members.all() or not members.any()
    gap = np.linalg.norm(first.coords[sky].mean(0) - first.coords[~sky].mean(0))
    spread = max(first.coords[sky].std(), first.coords[~sky].std())
    assert gap > 2 * spread


def test_layout_of_thousands_uses_landmarks_in_seconds():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 40))
    points = embeddings.normalise_rows(
        np.vstack([centres[i % 5] + 0.2 * rng.normal(size=40) for i in range(3000)])
    )
    started = time.monotonic()
    result = embeddings.analyse(points)
    assert time.monotonic() - started < 30
    assert len(np.unique(result.clusters)) > 1
    group = np.arange(3000) % 5
    centroids = np.array([result.coords[group == g].mean(0) for g in range(5)])
    within = np.mean(
        [
            np.linalg.norm(result.coords[group == g] - centroids[g], axis=1).mean()
            for g in range(5)
        ]
    )
    between = np.linalg.norm(centroids[:, None] - centroids[None], axis=2)
    assert within < between[np.triu_indices(5, 1)].min()


# -- the job and the routes --------------------------------------------------------


class World:
    def __init__(self, home, count=24, queue=True):
        self.app, key = make_app(home, run_queue=queue)
        self.headers = {"Authorization": f"Bearer {key}"}
        self.db = self.app.state.services.db
        alice = self.db.user_by_name("alice")
        self.dataset = self.db.create_dataset(
            owner_id=alice["id"],
            slug="scenes",
            name="Scenes",
            task="detect",
            visibility="private",
            class_names=["thing"],
        )
        self.kinds = _kinds(count)
        items = [
            {
                "name": f"{i:03d}.{'png' if i % 2 else 'jpg'}",
                "ext": "png" if i % 2 else "jpg",
                "data": _picture(k, i),
                "split": "val" if i % 4 == 0 else "train",
                "labels": [{"classId": 0, "bbox": [0.5, 0.5, 0.2, 0.2]}]
                if i < 3
                else None,
            }
            for i, k in enumerate(self.kinds)
        ]
        self.images = store_images(self.app, self.dataset["id"], items)
        self.kind_of = {
            row["name"]: self.kinds[int(row["name"][:3])] for row in self.images
        }


def _wait(client, url, headers, timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(url, headers=headers).json()
        assert problems("GET", STATUS, 200, body) == []
        if body["activeJob"] is None:
            return body
        time.sleep(0.2)
    raise AssertionError("analysis did not finish")


def test_analysis_end_to_end_both_route_families(home):
    world = World(home)
    slug_url = "/api/datasets/alice/scenes/embeddings"
    id_url = f"/api/datasets/{world.dataset['id']}/embeddings"
    with TestClient(world.app) as client:
        before = client.get(slug_url, headers=world.headers).json()
        assert problems("GET", STATUS, 200, before) == []
        assert before["analyzedAt"] is None and before["embeddingsCount"] == 0
        assert before["latestImageAt"] is not None
        missing = client.get(
            "/api/datasets/alice/scenes/images/clustering", headers=world.headers
        )
        assert missing.status_code == 404

        started = client.post(id_url, headers=world.headers)
        assert started.status_code == 202, started.text
        assert problems("POST", STATUS, 202, started.json()) == []
        done = _wait(client, id_url, world.headers)
        assert done["embeddingsCount"] == 24 and done["analyzedAt"]
        job = client.get(
            f"/api/jobs/{started.json()['jobId']}", headers=world.headers
        ).json()["job"]
        assert job["status"] == "completed"
        assert job["result"]["feature"] == embeddings.FEATURE
        assert job["result"]["dimensions"] == embeddings.DIMENSIONS

        layout = client.get(
            f"/api/datasets/{world.dataset['id']}/images/clustering?clusters=true",
            headers=world.headers,
        ).json()
        assert layout["total"] == 24 and layout["hasMore"] is False
        assert layout["nextOffset"] is None and len(layout["images"]) == 24
        names = {row["id"]: row["name"] for row in world.images}
        by_cluster: dict[int, set[str]] = {}
        for entry in layout["images"]:
            by_cluster.setdefault(entry.pop("cluster"), set()).add(
                world.kind_of[names[entry["id"]]]
            )
        assert all(len(kinds) == 1 for kinds in by_cluster.values())
        assert problems("GET", LAYOUT, 200, layout) == []
        labelled = [e for e in layout["images"] if e["labeled"]]
        assert len(labelled) == 3 and all(e["classIds"] == [0] for e in labelled)
        assert {e["split"] for e in layout["images"]} == {"train", "val"}

        page = client.get(
            "/api/datasets/alice/scenes/images/clustering?limit=10&offset=10",
            headers=world.headers,
        ).json()
        assert problems("GET", LAYOUT, 200, page) == []
        assert [e["id"] for e in page["images"]] == [
            e["id"] for e in layout["images"][10:20]
        ]
        assert page["hasMore"] is True and page["nextOffset"] == 20
        for bad in ("limit=0", "limit=50001", "offset=-1"):
            response = client.get(
                f"/api/datasets/alice/scenes/images/clustering?{bad}",
                headers=world.headers,
            )
            assert response.status_code == 400

        # A second analysis of the same images gives the same layout.
        client.post(slug_url, headers=world.headers)
        _wait(client, slug_url, world.headers)
        repeat = client.get(
            "/api/datasets/alice/scenes/images/clustering", headers=world.headers
        ).json()
        assert repeat["images"] == layout["images"]

        # A deleted image leaves the layout.
        gone = world.images[5]
        client.delete(
            f"/api/datasets/{world.dataset['id']}/images/{gone['hash']}",
            headers=world.headers,
        )
        after = client.get(
            "/api/datasets/alice/scenes/images/clustering", headers=world.headers
        ).json()
        assert after["total"] == 23 and gone["id"] not in {
            e["id"] for e in after["images"]
        }

        cleared = client.delete(f"{slug_url}?clear=true", headers=world.headers)
        assert cleared.json() == {"cancelled": None}
        assert (
            client.get(slug_url, headers=world.headers).json()["embeddingsCount"] == 0
        )


def test_unreadable_images_are_counted_and_marked_missing(home):
    world = World(home, count=8)
    broken = world.images[2]
    path = world.app.state.services.blobs.image_path(broken["hash"], broken["ext"])
    path.write_bytes(b"garbage")
    with TestClient(world.app) as client:
        job_id = client.post(
            "/api/datasets/alice/scenes/embeddings", headers=world.headers
        ).json()["jobId"]
        status = _wait(client, "/api/datasets/alice/scenes/embeddings", world.headers)
        assert status["embeddingsCount"] == 7
        job = client.get(f"/api/jobs/{job_id}", headers=world.headers).json()["job"]
        assert job["result"]["failedDownloads"] == 1
        layout = client.get(
            "/api/datasets/alice/scenes/images/clustering", headers=world.headers
        ).json()
        flagged = {e["id"] for e in layout["images"] if e["missing"]}
        assert flagged == {broken["id"]}


def test_start_refusals_and_cancel_while_queued(home):
    world = World(home, count=4, queue=False)
    url = "/api/datasets/alice/scenes/embeddings"
    with TestClient(world.app) as client:
        job_id = client.post(url, headers=world.headers).json()["jobId"]
        status = client.get(url, headers=world.headers).json()
        assert problems("GET", STATUS, 200, status) == []
        assert status["activeJob"]["id"] == job_id
        assert status["activeJob"]["status"] == "queued"
        again = client.post(url, headers=world.headers)
        assert again.status_code == 409
        assert problems("POST", STATUS, 409, again.json()) == []
        cancelled = client.delete(url, headers=world.headers)
        assert problems("DELETE", STATUS, 200, cancelled.json()) == []
        assert cancelled.json() == {"cancelled": job_id}
        assert world.db.job(job_id)["status"] == "cancelled"
        assert client.get(url, headers=world.headers).json()["activeJob"] is None

        alice = world.db.user_by_name("alice")
        world.db.create_dataset(
            owner_id=alice["id"],
            slug="empty",
            name="E",
            task="detect",
            visibility="private",
        )
        empty = client.post(
            "/api/datasets/alice/empty/embeddings", headers=world.headers
        )
        assert empty.status_code == 409
        bad = client.post(url, json={"feature": "magic"}, headers=world.headers)
        assert bad.status_code == 400
        unknown = client.post(
            url, json={"modelId": "ul://alice/nope/nope"}, headers=world.headers
        )
        assert unknown.status_code == 404


def test_model_features_from_a_trained_model(home, tmp_path):
    weights = train_tiny_detector(tmp_path / "tiny")
    world = World(home, count=10)
    alice = world.db.user_by_name("alice")
    project = world.db.create_project(
        owner_id=alice["id"], slug="proj", name="proj", visibility="private"
    )
    model = world.db.create_model(
        project_id=project["id"],
        slug="tiny",
        name="tiny",
        task="detect",
        status="completed",
        dataset_id=world.dataset["id"],
        train_args={"imgsz": 32},
    )
    target = world.app.state.services.blobs.path("models", model["id"], "best.pt")
    target.parent.mkdir(parents=True)
    shutil.copyfile(weights, target)
    url = "/api/datasets/alice/scenes/embeddings"
    with TestClient(world.app) as client:
        # The dataset's own trained model is chosen without being named.
        job_id = client.post(url, headers=world.headers).json()["jobId"]
        _wait(client, url, world.headers)
        job = client.get(f"/api/jobs/{job_id}", headers=world.headers).json()["job"]
        assert job["status"] == "completed", job
        assert job["result"]["feature"] == "model:ul://alice/proj/tiny"
        assert job["result"]["dimensions"] not in (0, embeddings.DIMENSIONS)
        assert job["result"]["embedded"] == 10
        builtin = client.post(url, json={"feature": "builtin"}, headers=world.headers)
        job_id = builtin.json()["jobId"]
        _wait(client, url, world.headers)
        job = client.get(f"/api/jobs/{job_id}", headers=world.headers).json()["job"]
        assert job["result"]["dimensions"] == embeddings.DIMENSIONS
