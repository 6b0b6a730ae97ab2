"""The training sync protocol in-process: the requests ultralytics' Platform
callbacks send (clients.md §4, §10d), against the real app on a real database."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import make_app
from contract import problems
from starlette.testclient import TestClient

from appliance.keys import create_key

METRICS = "/api/webhooks/training/metrics"
UPLOAD = "/api/webhooks/models/upload"
MODEL = "/api/models/{owner}/{project}/{model}"


@pytest.fixture
def world(home):
    app, key = make_app(home, run_queue=False)
    with TestClient(app) as client:
        yield client, {"Authorization": f"Bearer {key}"}, app


def _stock_args(**given) -> dict[str, str]:
    """Every trainer argument, stringified, as ultralytics sends them."""
    from appliance.trainargs import _package_dir

    args = yaml.safe_load((_package_dir() / "cfg" / "default.yaml").read_text())
    args.update(model="yolo26n.yaml", data="ul://alice/datasets/d", device="cpu")
    return {k: str(v) for k, v in {**args, **given}.items()}


def _started(client, auth, project="alice/proj", name="My Run", epochs=2):
    body = {
        "project": project,
        "name": name,
        "event": "training_started",
        "data": {
            "trainArgs": _stock_args(epochs=epochs, imgsz=32, project=project),
            "epochs": epochs,
            "device": "cpu",
            "environment": {"ultralyticsVersion": "8.4.190", "hostname": "lab"},
        },
    }
    return client.post(METRICS, json=body, headers=auth)


def _event(client, auth, model_id, event, data):
    body = {"modelId": model_id, "event": event, "data": data}
    return client.post(METRICS, json=body, headers=auth)


def _epoch(epoch, loss=1.0):
    return {
        "epoch": epoch,
        "metrics": {"train/box_loss": loss, "metrics/mAP50-95(B)": 0.1, "lr": 0.01},
        "fitness": 0.1,
        "best_fitness": 0.1,
    }


def test_a_run_makes_its_project_and_model_and_never_reuses_a_trained_one(world):
    client, auth, _ = world
    first = _started(client, auth)
    assert first.status_code == 200, first.text
    reply = first.json()
    assert reply["received"] is True and reply["runId"] == 1
    assert reply["modelSlug"] == "my-run"
    assert reply["modelUrl"] == "http://testserver/alice/proj/my-run"
    assert "cancelled" not in reply
    detail = client.get("/api/models/alice/proj/my-run", headers=auth).json()
    assert problems("GET", MODEL, 200, detail) == []
    assert detail["model"]["status"] == "running"
    train_args = detail["model"]["trainArgs"]
    assert (train_args["epochs"], train_args["imgsz"], train_args["task"]) == (
        2,
        32,
        "detect",
    )
    assert train_args["cache"] == "false" and train_args["lr0"] == 0.01
    training = client.get("/api/models/alice/proj/my-run/training", headers=auth)
    assert problems("GET", f"{MODEL}/training", 200, training.json()) == []
    assert training.json()["job"]["status"] == "running"

    again = _started(client, auth).json()
    assert again["modelSlug"] == "my-run-2" and again["modelId"] != reply["modelId"]

    client.post("/api/models", json={"project": "proj", "model": "fresh"}, headers=auth)
    taken = _started(client, auth, name="fresh").json()
    assert taken["modelSlug"] == "fresh"  # a model nothing trained yet is used


def test_epochs_console_checkpoint_and_completion(world, tmp_path):
    client, auth, app = world
    model_id = _started(client, auth).json()["modelId"]
    for epoch in (0, 1):
        got = _event(client, auth, model_id, "epoch_end", _epoch(epoch))
        assert got.status_code == 200 and got.json()["received"] is True
    final = {"epoch": 2, "metrics": {"metrics/mAP50-95(B)": 0.2}, "fitness": 0.2}
    assert _event(client, auth, model_id, "epoch_end", final).status_code == 200
    for chunk, text in (
        (12, "[t] line two"),
        (11, "[t] line one"),
        (12, "[t] line two"),
    ):
        data = {"chunkId": chunk, "content": text, "lineCount": 1, "progress": {}}
        assert _event(client, auth, model_id, "console_output", data).status_code == 200
    bar = {"7": "\x1b[34m1/2\x1b[0m  box 1.2: 100%|##########| 3/3"}
    data = {"chunkId": 13, "content": "", "lineCount": 0, "progress": bar}
    assert _event(client, auth, model_id, "console_output", data).status_code == 200
    job = app.state.services.db.latest_job(model_id, "train")
    assert job["message"] == "1/2  box 1.2: 100%|##########| 3/3"

    checkpoint = _checkpoint(tmp_path / "best.pt")
    ticket = client.post(
        UPLOAD,
        json={"filename": "best.pt", "modelId": model_id, "runId": 1},
        headers=auth,
    ).json()
    assert set(ticket) == {"uploadUrl", "gcsPath", "uploadPath", "modelId"}
    put = client.put(ticket["uploadUrl"], content=checkpoint.read_bytes())
    assert put.status_code == 200
    saved = {
        "modelPath": ticket["gcsPath"],
        "runId": 1,
        "uploadPath": ticket["uploadPath"],
    }
    assert (
        "warning"
        not in _event(client, auth, model_id, "checkpoint_saved", saved).json()
    )
    results = {
        "results": {
            "metrics": {"metrics/mAP50-95(B)": 0.2, "fitness": 0.2},
            "bestEpoch": 1,
            "bestFitness": 0.2,
            "modelPath": ticket["gcsPath"],
            "modelSize": checkpoint.stat().st_size,
        },
        "classNames": ["a", "b"],
        "plots": [],
        "runId": 1,
    }
    done = _event(client, auth, model_id, "training_complete", results).json()
    assert "warning" not in done and "cancelled" not in done

    model = client.get("/api/models/alice/proj/my-run", headers=auth).json()["model"]
    assert model["status"] == "completed" and model["hasWeights"] is True
    assert [e["epoch"] for e in model["trainResults"]] == [0, 1]
    assert model["metrics"]["mAP50-95"] == 0.2 and model["classNames"] == ["a", "b"]
    assert model["bestEpoch"] == 1
    files = client.get("/api/models/alice/proj/my-run/files", headers=auth).json()
    assert problems("GET", f"{MODEL}/files", 200, files) == []
    assert (
        client.get(files["files"][0]["downloadUrl"]).content == checkpoint.read_bytes()
    )
    job = client.get("/api/models/alice/proj/my-run/training", headers=auth).json()[
        "job"
    ]
    assert job["status"] == "completed" and job["progress"]["currentEpoch"] == 2
    log = app.state.services.settings.runs / job["id"] / "train.log"
    assert log.read_text().splitlines() == ["[t] line two", "[t] line one"]

    session = ticket["gcsPath"].split("/")[3]
    assert not app.state.services.blobs.path("uploads", session).exists()


def test_events_that_land_after_the_end(world):
    """epoch_end and console_output come from the client's thread pool: the last
    epoch may arrive after training_complete. It is kept; a repeat is not."""
    client, auth, _ = world
    model_id = _started(client, auth).json()["modelId"]
    _event(client, auth, model_id, "epoch_end", _epoch(0))
    _event(client, auth, model_id, "training_complete", {"results": {}})
    late = _event(client, auth, model_id, "epoch_end", _epoch(1)).json()
    assert late["received"] is True and "ignored" not in late
    again = _event(client, auth, model_id, "epoch_end", _epoch(0, loss=9.0))
    assert again.status_code == 200
    model = client.get("/api/models/alice/proj/my-run", headers=auth).json()["model"]
    assert [e["epoch"] for e in model["trainResults"]] == [0, 1]
    assert model["trainResults"][0]["metrics"]["train/box_loss"] == 1.0
    assert model["status"] == "completed"
    twice = _event(client, auth, model_id, "training_complete", {"results": {}})
    assert twice.json()["ignored"] == "stale_instance"
    failed = _event(client, auth, model_id, "training_failed", {"error": "x"})
    assert failed.json()["ignored"] == "stale_instance"
    model = client.get("/api/models/alice/proj/my-run", headers=auth).json()["model"]
    assert model["status"] == "completed"


def test_a_pickle_that_runs_code_never_becomes_the_weights(world, tmp_path):
    client, auth, _ = world
    model_id = _started(client, auth).json()["modelId"]
    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "best.pt", marker)
    ticket = client.post(
        UPLOAD, json={"filename": "best.pt", "modelId": model_id}, headers=auth
    ).json()
    assert client.put(ticket["uploadUrl"], content=evil.read_bytes()).status_code == 200
    results = {"results": {"modelPath": ticket["gcsPath"]}, "classNames": ["a"]}
    done = _event(client, auth, model_id, "training_complete", results).json()
    assert "not allowed" in done["warning"]
    assert not marker.exists()
    model = client.get("/api/models/alice/proj/my-run", headers=auth).json()["model"]
    assert model["status"] == "completed" and model["hasWeights"] is False


def test_a_cancel_is_answered_on_the_next_event_and_ends_the_run_cancelled(world):
    client, auth, _ = world
    model_id = _started(client, auth, epochs=50).json()["modelId"]
    assert (
        "cancelled" not in _event(client, auth, model_id, "epoch_end", _epoch(0)).json()
    )
    cancel = client.delete("/api/models/alice/proj/my-run/training", headers=auth)
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled"
    reply = _event(client, auth, model_id, "epoch_end", _epoch(1)).json()
    assert reply["cancelled"] is True
    done = _event(client, auth, model_id, "training_complete", {"results": {}})
    assert done.json()["cancelled"] is True
    model = client.get("/api/models/alice/proj/my-run", headers=auth).json()["model"]
    assert model["status"] == "cancelled"
    job = client.get("/api/models/alice/proj/my-run/training", headers=auth).json()
    assert job["job"]["status"] == "cancelled"


def test_a_restart_does_not_end_a_run_that_goes_on_elsewhere(world):
    client, auth, app = world
    model_id = _started(client, auth).json()["modelId"]
    queue = app.state.services.queue
    queue.recover()  # what a restart does with running jobs
    job = app.state.services.db.latest_job(model_id, "train")
    assert job["status"] == "interrupted"
    assert _event(client, auth, model_id, "epoch_end", _epoch(0)).status_code == 200
    assert app.state.services.db.job(job["id"])["status"] == "running"
    model = client.get("/api/models/alice/proj/my-run", headers=auth).json()["model"]
    assert model["status"] == "running" and "trainingError" not in model


def test_resume_continues_the_same_model(world):
    client, auth, _ = world
    first = _started(client, auth).json()
    _event(client, auth, first["modelId"], "epoch_end", _epoch(0))
    resumed = client.post(
        METRICS,
        json={"modelId": first["modelId"], "event": "training_started", "data": {}},
        headers=auth,
    ).json()
    assert resumed["modelId"] == first["modelId"] and resumed["runId"] == 2
    model = client.get("/api/models/alice/proj/my-run", headers=auth).json()["model"]
    assert [e["epoch"] for e in model["trainResults"]] == [0]
    assert model["trainArgs"]["epochs"] == 2 and model["environment"]["hostname"]
    gone = client.post(
        METRICS,
        json={"modelId": "A" * 20, "event": "training_started", "data": {}},
        headers=auth,
    )
    assert gone.status_code == 404  # the client then registers the run as new


def test_bad_requests_are_clear_4xx(world):
    client, auth, _ = world
    assert client.post(METRICS, json={"event": "training_started"}).status_code == 401
    bad = client.post(METRICS, json={"event": "nope", "data": {}}, headers=auth)
    assert bad.status_code == 400 and "event must be one of" in bad.json()["error"]
    odd = _started(client, auth, project="alice/Bad Slug")
    assert odd.status_code == 400
    other = _started(client, auth, project="bob/proj")
    assert other.status_code == 404
    client.post("/api/projects", json={"project": "p2", "name": "P2"}, headers=auth)
    client.post("/api/models", json={"project": "p2", "model": "m"}, headers=auth)
    model = client.get("/api/models/alice/p2/m", headers=auth).json()["model"]
    orphan = _event(client, auth, model["id"], "epoch_end", _epoch(0))
    assert orphan.status_code == 409
    model_id = _started(client, auth).json()["modelId"]
    for filename in ("../x.pt", "best.txt", ""):
        ticket = client.post(
            UPLOAD, json={"filename": filename, "modelId": model_id}, headers=auth
        )
        assert ticket.status_code == 400
    wrong = _event(client, auth, model_id, "checkpoint_saved", {"modelPath": "x/y"})
    assert "not a checkpoint of this model" in wrong.json()["warning"]


def test_a_stranger_cannot_stream_into_someone_elses_model(world):
    client, auth, app = world
    model_id = _started(client, auth).json()["modelId"]
    db = app.state.services.db
    stranger = {
        "Authorization": f"Bearer {create_key(db, db.create_user('eve')['id'])}"
    }
    assert _event(client, stranger, model_id, "epoch_end", _epoch(0)).status_code == 404
    assert _started(client, stranger, project="alice/proj").status_code == 404
    ticket = client.post(
        UPLOAD, json={"filename": "b.pt", "modelId": model_id}, headers=stranger
    )
    assert ticket.status_code == 404


def test_the_stream_is_not_throttled_like_the_rest_of_the_api(home):
    app, key = make_app(home, run_queue=False)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        model_id = _started(client, auth).json()["modelId"]
        for chunk in range(150):  # past the default 100 a minute, per key and address
            data = {"chunkId": chunk, "content": f"line {chunk}", "lineCount": 1}
            got = _event(client, auth, model_id, "console_output", data)
            assert got.status_code == 200, (chunk, got.text)
        assert got.headers["x-ratelimit-limit"] == "1200"
        codes = {
            client.get("/api/account/summary", headers=auth).status_code
            for _ in range(150)
        }
        assert codes == {200, 429}


def _checkpoint(path: Path) -> Path:
    from appliance import vision

    saved = dict(os.environ)
    try:
        vision.import_ultralytics(path.parent / "yolo-home")
        from ultralytics import YOLO

        model = YOLO("yolo26n.yaml")
        model.model.names = {0: "a", 1: "b", **{i: str(i) for i in range(2, 80)}}
        model.save(str(path))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return path


class _Boom:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"model": _Boom(marker)}, path)
    with zipfile.ZipFile(path) as archive:  # a well-formed torch zip checkpoint
        assert any(n.endswith("data.pkl") for n in archive.namelist())
    return path
