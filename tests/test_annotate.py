"""Auto-annotation with a real (tiny) model: one image through the contract's and
the seed's predict routes, and many through the queued annotate job."""

from __future__ import annotations

import io
import shutil
import time

import pytest
from conftest import make_app, store_images, train_tiny_detector
from contract import problems
from PIL import Image, ImageDraw
from starlette.testclient import TestClient

from appliance.errors import Invalid, Unprocessable
from appliance.jobs import annotating
from appliance.jobs.annotating import open_image

PREDICT = "/api/images/{imageId}/predict"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return train_tiny_detector(tmp_path_factory.mktemp("tiny"))


def _square(colour, size=64) -> bytes:
    image = Image.new("RGB", (size, size), (30, 30, 30))
    ImageDraw.Draw(image).rectangle([16, 16, 48, 48], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG")
    return buffer.getvalue()


class World:
    """An app with alice's dataset of six squares (the first labelled) and her
    trained model `ul://alice/proj/tiny`."""

    def __init__(
        self, home, weights, class_names=("red", "green"), task="detect", queue=True
    ):
        self.app, key = make_app(home, run_queue=queue)
        self.headers = {"Authorization": f"Bearer {key}"}
        svc = self.app.state.services
        self.db = svc.db
        alice = self.db.user_by_name("alice")
        self.dataset = self.db.create_dataset(
            owner_id=alice["id"],
            slug="shapes",
            name="Shapes",
            task=task,
            visibility="private",
            class_names=list(class_names),
        )
        colours = [(220, 40, 40), (40, 220, 40)] * 3
        self.images = store_images(
            self.app,
            self.dataset["id"],
            [
                {
                    "name": f"s{i}.jpg",
                    "data": _square(c, 64 + i),
                    "labels": [{"classId": 0, "bbox": [0.5, 0.5, 0.5, 0.5]}]
                    if i == 0
                    else None,
                }
                for i, c in enumerate(colours)
            ],
        )
        project = self.db.create_project(
            owner_id=alice["id"], slug="proj", name="proj", visibility="private"
        )
        self.model = self.db.create_model(
            project_id=project["id"],
            slug="tiny",
            name="tiny",
            task="detect",
            status="completed",
            dataset_id=self.dataset["id"],
            train_args={"model": "yolo26n.yaml", "imgsz": 32},
        )
        target = svc.blobs.path("models", self.model["id"], "best.pt")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights, target)
        self.weights = target

    def labelled(self, index: int) -> dict:
        return self.db.image(self.images[index]["id"])


def _wait_job(client, headers, job_id, timeout=120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}", headers=headers).json()["job"]
        if job["status"] not in ("queued", "running"):
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not finish")


def test_contract_predict_maps_classes_and_saves_nothing(home, weights):
    world = World(home, weights)
    image = world.images[1]
    with TestClient(world.app) as client:
        response = client.post(
            f"/api/images/{image['id']}/predict",
            json={"modelId": "ul://alice/proj/tiny", "confidence": 0.5},
            headers=world.headers,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert problems("POST", PREDICT, 200, body) == []
        assert body["modelUsed"] == "ul://alice/proj/tiny"
        assert body["predictions"], "the tiny model always predicts boxes"
        # The model's class 0 is "green", the dataset's class 1; "red" is 1 -> 0.
        raw = world.app.state.services.predictor.annotate(
            world.weights,
            open_image(
                world.app.state.services.blobs.image_path(image["hash"], image["ext"])
            ),
            conf=0.5,
            iou=0.7,
            imgsz=32,
            device="cpu",
        )
        assert [p["classId"] for p in body["predictions"]] == [
            1 - p["classId"] for p in raw["labels"]
        ]
        for prediction in body["predictions"]:
            assert set(prediction) == {"classId", "bbox"}
            assert all(0 <= v <= 1 for v in prediction["bbox"])
    assert world.labelled(1)["labels"] is None


def test_contract_predict_refuses_clearly(home, weights):
    world = World(home, weights)
    image_id = world.images[1]["id"]
    url = f"/api/images/{image_id}/predict"
    with TestClient(world.app) as client:
        cases = [
            ({}, 400),
            ({"modelId": "nonsense"}, 400),
            ({"modelId": "ul://alice/proj/none"}, 404),
            ({"modelId": "ul://ultralytics/yolo26/yolo26n"}, 404),
            ({"modelId": "ul://alice/proj/tiny", "confidence": 0}, 400),
            ({"modelId": "ul://alice/proj/tiny", "iou": 0.99}, 400),
        ]
        for body, status in cases:
            response = client.post(url, json=body, headers=world.headers)
            assert response.status_code == status, (body, response.text)
            assert problems("POST", PREDICT, status, response.json()) == []
        missing = client.post(
            "/api/images/" + "0" * 24 + "/predict",
            json={"modelId": "ul://alice/proj/tiny"},
            headers=world.headers,
        )
        assert missing.status_code == 404
        bad_id = client.post(
            "/api/images/xyz/predict",
            json={"modelId": "ul://alice/proj/tiny"},
            headers=world.headers,
        )
        assert bad_id.status_code == 400
        anonymous = client.post(url, json={"modelId": "ul://alice/proj/tiny"})
        assert anonymous.status_code == 401


def test_class_and_task_mismatch(tmp_path, weights):
    other = World(tmp_path / "a", weights, class_names=("cat", "dog"))
    with TestClient(other.app) as client:
        response = client.post(
            f"/api/images/{other.images[1]['id']}/predict",
            json={"modelId": "ul://alice/proj/tiny"},
            headers=other.headers,
        )
        assert response.status_code == 422, response.text
        assert problems("POST", PREDICT, 422, response.json()) == []
    classify = World(tmp_path / "b", weights, task="classify")
    with TestClient(classify.app) as client:
        response = client.post(
            f"/api/images/{classify.images[1]['id']}/predict",
            json={"modelId": "ul://alice/proj/tiny"},
            headers=classify.headers,
        )
        assert response.status_code == 400
        assert "task" in response.json()["error"]


def test_seed_predict_saves_unlabeled_images_only(home, weights):
    world = World(home, weights)
    dataset_id = world.dataset["id"]
    with TestClient(world.app) as client:
        unlabeled = world.images[2]
        response = client.post(
            f"/api/datasets/{dataset_id}/predict",
            json={"imageHash": unlabeled["hash"], "confidence": 0.5},
            headers=world.headers,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["saved"] is True and body["imageId"] == unlabeled["id"]
        stored = client.get(
            f"/api/datasets/{dataset_id}/images/{unlabeled['hash']}/labels",
            headers=world.headers,
        ).json()
        assert stored["labels"] == body["predictions"]

        labelled = world.images[0]
        before = world.labelled(0)["labels"]
        again = client.post(
            f"/api/datasets/{dataset_id}/predict",
            json={"imageHash": labelled["hash"], "modelId": world.model["id"]},
            headers=world.headers,
        ).json()
        assert again["saved"] is False and world.labelled(0)["labels"] == before
        forced = client.post(
            f"/api/datasets/{dataset_id}/predict",
            json={"imageHash": labelled["hash"], "overwrite": True},
            headers=world.headers,
        ).json()
        assert forced["saved"] is True
        assert world.labelled(0)["labels"] == forced["predictions"]
        gone = client.post(
            f"/api/datasets/{dataset_id}/predict",
            json={"imageHash": "f" * 32},
            headers=world.headers,
        )
        assert gone.status_code == 404


def test_annotate_job_labels_unlabeled_images(home, weights):
    world = World(home, weights)
    with TestClient(world.app) as client:
        response = client.post(
            "/api/datasets/alice/shapes/annotate",
            json={"modelId": "ul://alice/proj/tiny", "confidence": 0.5},
            headers=world.headers,
        )
        assert response.status_code == 202, response.text
        job = _wait_job(client, world.headers, response.json()["jobId"])
        assert job["status"] == "completed", job
        result = job["result"]
        assert result["total"] == 5 and result["annotated"] == 5
        assert {r["imageId"] for r in result["images"]} == {
            i["id"] for i in world.images[1:]
        }
        assert result["labels"] == sum(r["labelCount"] for r in result["images"])
        listed = client.get("/api/jobs", headers=world.headers).json()["jobs"]
        assert job["id"] in {j["id"] for j in listed if j["kind"] == "annotate"}
        assert world.labelled(0)["labels"] == [
            {"classId": 0, "bbox": [0.5, 0.5, 0.5, 0.5]}
        ]
        for index in range(1, 6):
            assert world.labelled(index)["label_count"] > 0
        none_left = client.post(
            f"/api/datasets/{world.dataset['id']}/annotate",
            json={},
            headers=world.headers,
        )
        assert none_left.status_code == 202
        job = _wait_job(client, world.headers, none_left.json()["jobId"])
        assert job["result"]["total"] == 0


def test_annotate_job_adopts_model_classes_and_cancels(home, weights):
    world = World(home, weights, class_names=())
    with TestClient(world.app) as client:
        chosen = [world.images[3]["id"], world.images[4]["id"]]
        response = client.post(
            f"/api/datasets/{world.dataset['id']}/annotate",
            json={"imageIds": chosen, "confidence": 0.5},
            headers=world.headers,
        )
        job = _wait_job(client, world.headers, response.json()["jobId"])
        assert job["status"] == "completed" and job["result"]["annotated"] == 2
        assert world.db.dataset(world.dataset["id"])["class_names"] == [
            "green",
            "red",
        ]
        nothing = client.delete(
            f"/api/datasets/{world.dataset['id']}/annotate", headers=world.headers
        )
        assert nothing.json() == {"cancelled": None}
        bad = client.post(
            f"/api/datasets/{world.dataset['id']}/annotate",
            json={"imageIds": ["x"]},
            headers=world.headers,
        )
        assert bad.status_code == 400


def test_annotate_cancel_while_queued(home, weights):
    # With no consumer running the job stays queued, so the cancel is certain.
    world = World(home, weights, queue=False)
    with TestClient(world.app) as client:
        response = client.post(
            "/api/datasets/alice/shapes/annotate", json={}, headers=world.headers
        )
        job_id = response.json()["jobId"]
        busy = client.post(
            "/api/datasets/alice/shapes/annotate", json={}, headers=world.headers
        )
        assert busy.status_code == 409
        cancelled = client.delete(
            "/api/datasets/alice/shapes/annotate", headers=world.headers
        )
        assert cancelled.json() == {"cancelled": job_id}
        assert world.db.job(job_id)["status"] == "cancelled"


def _dataset(task, names=("a", "b"), kpt_shape=None):
    return {
        "id": "x",
        "task": task,
        "class_names": list(names),
        "metadata": {"kptShape": kpt_shape} if kpt_shape else {},
    }


def test_conversion_for_every_task():
    box = [0.5, 0.5, 0.2, 0.2]
    pose = annotating.plan(_dataset("pose", kpt_shape=[2, 2]), "pose", ["b", "z"])
    labels = annotating.convert(
        pose,
        [
            {"classId": 0, "bbox": box, "keypoints": [0.1, 0.2, 2.0, 0.3, 0.4, 0.0]},
            {"classId": 1, "bbox": box, "keypoints": [0.1, 0.2, 2.0, 0.3, 0.4, 2.0]},
        ],
    )
    assert labels == [{"classId": 1, "bbox": box, "keypoints": [0.1, 0.2, 0.3, 0.4]}]
    assert pose.dropped == 1

    segment = annotating.plan(_dataset("segment"), "segment", ["a"])
    polygon = [0.1, 0.1, 0.4, 0.1, 0.4, 0.5]
    assert annotating.convert(
        segment, [{"classId": 0, "bbox": box, "segments": polygon}]
    ) == [{"classId": 0, "bbox": box, "segments": polygon}]
    as_boxes = annotating.plan(_dataset("detect"), "segment", ["a"])
    assert annotating.convert(
        as_boxes, [{"classId": 0, "bbox": box, "segments": polygon}]
    ) == [{"classId": 0, "bbox": box}]

    obb = annotating.plan(_dataset("obb"), "obb", ["A"])  # names match in any case
    corners = [0.1, 0.1, 0.3, 0.1, 0.3, 0.3, 0.1, 0.3]
    assert annotating.convert(obb, [{"classId": 0, "obb": corners}]) == [
        {"classId": 0, "obb": corners}
    ]
    classify = annotating.plan(_dataset("classify"), "classify", ["b", "a"])
    assert annotating.convert(classify, [{"classId": 1}]) == [{"classId": 0}]

    with pytest.raises(Invalid):
        annotating.plan(_dataset("obb"), "detect", ["a"])
    with pytest.raises(Unprocessable):
        annotating.plan(_dataset("detect"), "detect", ["zebra"])
    fresh = annotating.plan(_dataset("detect", names=()), "detect", ["p", "q"])
    assert fresh.adopted and fresh.class_names == ["p", "q"]
