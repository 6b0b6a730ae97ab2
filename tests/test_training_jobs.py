"""Training jobs that never get lost: checked arguments, a queue sized to the
devices, cancel within an epoch, the watchdog, and resume after a run ends early.

Real ultralytics trains (imgsz 32 on the BASE dataset's four 64x64 images) in
real child processes of the real queue; GPU placement is tested through its pure
functions with made-up device lists."""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
import yaml
from conftest import Api, base_files, make_app, write_zip
from contract import problems
from starlette.testclient import TestClient

from appliance import gpus, trainargs
from appliance.jobs.watchdog import verdict
from appliance.ratelimit import parse_limits

ONE = "/api/models/{owner}/{project}/{model}"
#: Tests poll often; rate limits are tested elsewhere.
UNLIMITED = {"ip_rate_limit": 0, "rate_limits": {name: 0 for name in parse_limits("")}}
TRAINING = f"{ONE}/training"


def ok(method: str, template: str, body: dict, status: int = 200) -> dict:
    assert problems(method, template, status, body) == []
    return body


@contextmanager
def _lab(home, tmp_path, **settings):
    """The app on CPU with one user, the BASE dataset ingested and a project."""
    app, key = make_app(home, device="cpu", **UNLIMITED, **settings)
    with TestClient(app) as client:
        api = Api(client, key)
        api("POST", "/api/datasets", 201, json={"dataset": "base", "name": "Base"})
        data = write_zip(tmp_path / "base.zip", base_files()).read_bytes()
        assert api.ingest("base", "base.zip", data)["status"] == "ready"
        api("POST", "/api/projects", 201, json={"project": "p", "name": "P"})
        yield SimpleNamespace(app=app, api=api, client=client, db=app.state.services.db)


@pytest.fixture
def lab(home, tmp_path):
    with _lab(home, tmp_path) as made:
        yield made


def _model(lab, slug: str) -> dict:
    return lab.api("POST", "/api/models", 201, json={"project": "p", "model": slug})


def _start(lab, slug: str, epochs: int = 1, status: int = 200, **body) -> dict:
    model = _model(lab, slug)
    train_args = {
        "model": "yolo26n.yaml",
        "data": "ul://alice/datasets/base",
        "epochs": epochs,
        "imgsz": 32,
        "batch": 4,
        **body.pop("trainArgs", {}),
    }
    started = lab.api(
        "POST",
        "/api/training/start",
        status,
        json={"modelId": model["id"], "trainArgs": train_args, **body},
    )
    ok("POST", "/api/training/start", started, status)
    if status != 200:
        assert lab.api("GET", f"/api/models/alice/p/{slug}/training")["job"] is None
        return started  # the error
    return model


def _training(lab, slug: str) -> dict:
    body = lab.api("GET", f"/api/models/alice/p/{slug}/training")
    return ok("GET", TRAINING, body)["job"]


def _wait(fetch, done, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if done(value):
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}: {value}")


def _job(lab, slug: str) -> dict:
    model = lab.db.model_by_slug(lab.db.project_by_slug(_alice(lab), "p")["id"], slug)
    return lab.db.latest_job(model["id"], "train")


def _alice(lab) -> str:
    return lab.db.query_one("SELECT id FROM users WHERE username = 'alice'")["id"]


# -- pure functions ------------------------------------------------------------


def test_devices_are_named_as_the_platform_names_gpus():
    smi = "0, NVIDIA GeForce RTX 4090, 24564\n1, NVIDIA GeForce RTX 4090, 24564\n2, NVIDIA H100 80GB HBM3, 81559\nbad line\n"
    rows = gpus.parse_nvidia_smi(smi)
    assert rows[0] == ("0", "NVIDIA GeForce RTX 4090", 24.0)
    devices = gpus.devices_from(rows, "auto")
    assert [d.gpu_type for d in devices] == ["rtx-4090", "rtx-4090-2", "h100-80gb-hbm3"]
    assert [d.index for d in gpus.devices_from(rows, "1,2")] == ["1", "2"]
    assert gpus.devices_from(rows, "cpu") == [gpus.CPU]
    assert gpus.devices_from([], "auto") == [gpus.CPU]
    assert gpus.pick(devices, "h100-80gb-hbm3").index == "2"
    assert gpus.pick(devices, "2").gpu_type == "h100-80gb-hbm3"
    assert gpus.pick(devices, "a100-80gb-sxm") is None
    assert [gpus.load_level(*x) for x in [(0, 0), (1, 0), (1, 2), (0, 3)]] == [
        "High",
        "Medium",
        "Low",
        "High",
    ]


def test_watchdog_verdicts():
    assert verdict(1, "running", 3, 8) is None
    assert verdict(3, "running", 3, 8) == "stall"
    assert verdict(5, "stalled", 3, 8) is None
    assert verdict(1, "stalled", 3, 8) == "resume"
    assert verdict(8, "stalled", 3, 8) == "fail"
    assert verdict(9, "starting", 3, 8) == "fail"


def test_argument_types_follow_ultralytics():
    sets = trainargs.type_sets()
    assert "lr0" in sets["CFG_FRACTION_KEYS"] and "epochs" in sets["CFG_INT_KEYS"]
    for args, needle in [
        ({"epochs": 1.5}, "epochs"),
        ({"cos_lr": "yes"}, "cos_lr"),
        ({"lr0": 0.5}, "lr0"),
        ({"hsv_h": float("nan")}, "hsv_h"),
        ({"optimizer": "Lion"}, "optimizer"),
        ({"imgsz": 8192}, "imgsz"),
        ({"epoch": 3}, "epoch"),
    ]:
        with pytest.raises(trainargs.Invalid) as caught:
            trainargs.check_arguments(args)
        assert needle in caught.value.message, args
    trainargs.check_arguments(
        {"epochs": 3, "lr0": 0.01, "cos_lr": True, "batch": 0.7, "optimizer": "SGD"}
    )


# -- through the API -----------------------------------------------------------


def test_bad_starts_are_400s_that_name_the_argument(lab):
    for extra, needle in [
        ({"trainArgs": {"lr0": 2}}, "lr0"),
        ({"trainArgs": {"mosaic": "lots"}}, "mosaic"),
        ({"trainArgs": {"warmup": 3}}, "warmup"),
        ({"trainArgs": {"epochs": "3"}}, "epochs"),
        ({"gpuType": "h100-sxm"}, "cpu"),  # the local devices are listed
    ]:
        error = _start(lab, f"bad-{len(needle)}-{needle[:3]}", status=400, **extra)
        assert needle in error["error"], (extra, error)
    response = lab.client.post(
        "/api/training/start",
        headers=lab.api.auth,
        json={
            "modelId": _model(lab, "named")["id"],
            "trainArgs": {"model": "yolo26n.yaml", "data": "x", "epochs": 1, "lr0": 9},
        },
    )
    assert response.status_code == 400 and "lr0" in response.json()["error"]
    ok("POST", "/api/training/start", response.json(), 400)


def test_one_job_per_device_cancel_within_an_epoch_and_early_weights(lab):
    _start(lab, "first", epochs=3, gpuType="cpu")
    _wait(
        lambda: _training(lab, "first"), lambda j: j["status"] != "pending", 30, "claim"
    )
    second = _start(lab, "second", epochs=1)
    waiting = _training(lab, "second")
    assert waiting["status"] == "pending"
    listed = lab.api("GET", "/api/jobs?status=queued")["jobs"]
    assert [j["queuePosition"] for j in listed if j["subjectId"] == second["id"]] == [1]
    busy = ok(
        "GET",
        "/api/training/gpu-availability",
        lab.api("GET", "/api/training/gpu-availability"),
    )
    assert busy == {"cpu": "Low"}

    seen = _wait(
        lambda: _training(lab, "first"),
        lambda j: j["progress"]["currentEpoch"] >= 1,
        90,
        "epoch 1",
    )["progress"]["currentEpoch"]
    cancelled = lab.api("DELETE", "/api/models/alice/p/first/training")
    ok("DELETE", TRAINING, cancelled)
    job = _wait(
        lambda: _training(lab, "first"),
        lambda j: j["status"] not in ("running", "starting"),
        60,
        "cancel",
    )
    assert job["status"] == "cancelled"
    # It stops within the epoch under way when the cancel came.
    assert seen <= job["progress"]["currentEpoch"] <= min(seen + 1, 2)
    assert job["compute"] == {
        "gpuType": "cpu",
        "gpuDisplayName": "CPU",
        "gpuMemoryGb": 0.0,
    }

    # The early run's best weights: files, download, export.
    detail = lab.api("GET", "/api/models/alice/p/first")["model"]
    assert detail["status"] == "cancelled" and detail["hasWeights"] is True
    assert detail["metadata"]["datasetVersion"] == 1
    assert lab.api("GET", "/api/models/alice/p/first/download")["size"] > 0
    url = lab.api("GET", "/api/models/alice/p/first/files")["files"][0]["downloadUrl"]
    assert lab.client.get(url).status_code == 200
    # A cancelled run can be resumed too, from the copy of last.pt kept at the
    # cancel (ultralytics strips the optimizer from last.pt when a run stops).
    resumed = lab.api("POST", "/api/models/alice/p/first/training/resume")
    assert resumed["checkpoint"] == "resume.pt"
    assert _training(lab, "first")["status"] in ("pending", "starting", "running")
    lab.api("DELETE", "/api/models/alice/p/first/training")
    _wait(
        lambda: _training(lab, "first"),
        lambda j: j["status"] == "cancelled",
        60,
        "resumed run cancelled",
    )
    listed = lab.api("GET", "/api/models/completed")["models"]
    assert [(m["model"], m["status"]) for m in listed] == [("first", "cancelled")]

    # The device freed: the waiting job ran, on the same dataset version.
    done = _wait(
        lambda: _training(lab, "second"),
        lambda j: j["status"] in ("completed", "failed"),
        90,
        "second run",
    )
    assert done["status"] == "completed", done
    row = _job(lab, "second")
    assert row["args"]["datasetVersion"] == 1 and row["device"] == "cpu"
    assert row["result"]["system"]["ramTotalGb"] > 0
    assert "cpuPercent" in row["result"]["system"]
    assert lab.api("GET", "/api/training/gpu-availability") == {"cpu": "High"}
    log = (lab.app.state.services.settings.runs / row["id"] / "train.log").read_text()
    assert "1 epochs completed" in log
    followed = lab.api("GET", f"/api/jobs/{row['id']}")["job"]
    assert "1 epochs completed" in followed["logTail"]
    assert followed["result"]["system"] == row["result"]["system"]
    # ... and exports (accepted last: the export itself is tested elsewhere)
    lab.api(
        "POST", "/api/models/alice/p/first/exports", 201, json={"format": "torchscript"}
    )


def test_a_frozen_trainer_stalls_then_fails_and_can_resume(home, tmp_path):
    with _lab(home, tmp_path, stall_seconds=4, fail_seconds=9) as lab:
        _frozen(lab)


def _frozen(lab) -> None:
    model = _start(lab, "frozen", epochs=3)
    _wait(
        lambda: _training(lab, "frozen"),
        lambda j: j["progress"]["currentEpoch"] >= 1,
        90,
        "epoch 1",
    )
    queue = lab.app.state.services.queue
    job_id = _job(lab, "frozen")["id"]
    proc = queue.children._procs[job_id]
    os.killpg(proc.pid, signal.SIGSTOP)  # hung: alive, silent

    stalled = _wait(
        lambda: _training(lab, "frozen"),
        lambda j: j["error"] is not None,
        30,
        "stalled",
    )
    assert stalled["status"] == "running" and stalled["error"]["code"] == "stalled"
    listed = lab.api("GET", "/api/jobs?status=stalled")["jobs"]
    assert [j["id"] for j in listed] == [job_id]
    assert listed[0]["message"].startswith("stalled")

    failed = _wait(
        lambda: _training(lab, "frozen"),
        lambda j: j["status"] == "failed",
        30,
        "failed",
    )
    assert failed["error"]["code"] == "stalled"
    _wait(lambda: proc.poll(), lambda code: code is not None, 15, "trainer killed")
    assert proc.returncode == -signal.SIGKILL
    # The epochs it finished are kept as the model's weights.
    _wait(
        lambda: lab.api("GET", "/api/models/alice/p/frozen")["model"],
        lambda m: m["hasWeights"],
        15,
        "weights kept",
    )
    resumed = lab.api("POST", "/api/models/alice/p/frozen/training/resume")
    assert resumed["status"] == "starting" and resumed["resumedFrom"] == job_id
    assert resumed["checkpoint"] == "last.pt"
    again = lab.client.post(
        f"/api/models/{model['id']}/training/resume", headers=lab.api.auth
    )
    assert again.status_code == 409  # already under way
    lab.api("DELETE", "/api/models/alice/p/frozen/training")
    _wait(
        lambda: _training(lab, "frozen"),
        lambda j: j["status"] == "cancelled",
        60,
        "resumed run cancelled",
    )


def test_a_quiet_streamed_run_fails_and_a_quiet_local_one_stalls(home):
    app, key = make_app(home, run_queue=False, stall_seconds=60, fail_seconds=120)
    services = app.state.services
    db, queue = services.db, services.queue
    with TestClient(app) as client:
        api = Api(client, key)
        api("POST", "/api/projects", 201, json={"project": "p", "name": "P"})
        models = [
            api("POST", "/api/models", 201, json={"project": "p", "model": slug})
            for slug in ("remote", "local")
        ]
    user = db.query_one("SELECT id FROM users")["id"]
    remote = db.create_job(
        "train", models[0]["id"], user, {"remote": True}, status="running"
    )
    local = db.create_job(
        "train", models[1]["id"], user, {"trainArgs": {}}, status="running"
    )
    ago = (datetime.now(UTC) - timedelta(seconds=90)).isoformat()
    db.update_job(remote["id"], heartbeat_at="2000-01-01T00:00:00.000Z")
    db.update_job(local["id"], heartbeat_at=ago.replace("+00:00", "Z"))
    queue.watchdog.check()
    ended = db.job(remote["id"])
    assert ended["status"] == "failed" and ended["error"]["code"] == "stalled"
    assert db.model(models[0]["id"])["training_error"]["code"] == "stalled"
    assert db.job(local["id"])["status"] == "stalled"
    queue.beat(local["id"])
    queue.watchdog.check()
    assert db.job(local["id"])["status"] == "running"


def test_a_run_interrupted_by_a_restart_resumes(home, tmp_path):
    from appliance.app import create_app

    app, key = make_app(home, device="cpu", **UNLIMITED)
    settings = app.state.services.settings
    with TestClient(app) as client:
        lab = SimpleNamespace(
            app=app, api=Api(client, key), client=client, db=app.state.services.db
        )
        lab.api("POST", "/api/datasets", 201, json={"dataset": "base", "name": "Base"})
        data = write_zip(tmp_path / "base.zip", base_files()).read_bytes()
        lab.api.ingest("base", "base.zip", data)
        lab.api("POST", "/api/projects", 201, json={"project": "p", "name": "P"})
        model = _start(lab, "restarted", epochs=3)
        _wait(
            lambda: _training(lab, "restarted"),
            lambda j: j["progress"]["currentEpoch"] >= 1,
            90,
            "epoch 1",
        )
    # The appliance stopped mid-run; a new one starts on the same data home.
    app = create_app(settings)
    with TestClient(app) as client:
        lab = SimpleNamespace(
            app=app, api=Api(client, key), client=client, db=app.state.services.db
        )
        job = _training(lab, "restarted")
        assert job["status"] == "failed" and job["error"]["code"] == "interrupted"
        before = {e["epoch"]: e["metrics"] for e in lab.db.epochs(model["id"])}
        assert before
        resumed = lab.api("POST", f"/api/models/{model['id']}/training/resume")
        done = _wait(
            lambda: _training(lab, "restarted"),
            lambda j: j["status"] in ("completed", "failed"),
            120,
            "resumed run",
        )
        assert done["status"] == "completed", done
        epochs = {e["epoch"]: e["metrics"] for e in lab.db.epochs(model["id"])}
        assert sorted(epochs) == [0, 1, 2] and done["progress"]["currentEpoch"] == 3
        assert all(epochs[e] == m for e, m in before.items())  # kept, not redone
        log = settings.runs / resumed["jobId"] / "train.log"
        assert "resuming" in log.read_text().lower()
        again = lab.client.post(
            "/api/models/alice/p/restarted/training/resume", headers=lab.api.auth
        )
        assert again.status_code == 409  # nothing left to resume
        assert lab.db.job(resumed["jobId"])["args"]["resume"]["from"] == job["id"]


def test_watchdog_thresholds_are_settings(tmp_path):
    from appliance.settings import SettingsError, load_settings

    env = {"APPLIANCE_STALL_SECONDS": "30", "APPLIANCE_FAIL_SECONDS": "90"}
    settings = load_settings(env, home=str(tmp_path))
    assert (settings.stall_seconds, settings.fail_seconds) == (30, 90)
    assert load_settings({}, home=str(tmp_path)).fail_seconds == 1800
    for stall, fail in (("90", "30"), ("0", "5"), ("x", "5")):
        env = {"APPLIANCE_STALL_SECONDS": stall, "APPLIANCE_FAIL_SECONDS": fail}
        with pytest.raises(SettingsError):
            load_settings(env, home=str(tmp_path))


def test_training_starts_from_a_model_of_the_appliance(lab):
    """trainArgs.model may be ul://owner/project/model: the new run starts from
    that model's weights (fine-tuning, and `ul cloud train model=local.pt`,
    which uploads the .pt as a model first)."""
    _start(lab, "base", epochs=1)
    _wait(
        lambda: _training(lab, "base"),
        lambda j: j["status"] in ("completed", "failed"),
        120,
        "the base run",
    )
    assert _training(lab, "base")["status"] == "completed"
    _model(lab, "bare")
    refused = lab.api(
        "POST",
        "/api/training/start",
        400,
        json={
            "modelId": _model(lab, "tuned-bad")["id"],
            "trainArgs": {
                "model": "ul://alice/p/bare",
                "data": "ul://alice/datasets/base",
                "epochs": 1,
            },
        },
    )
    assert "no trained weights" in refused["error"]
    _start(lab, "tuned", epochs=1, trainArgs={"model": "ul://alice/p/base"})
    job = _wait(
        lambda: _training(lab, "tuned"),
        lambda j: j["status"] in ("completed", "failed"),
        120,
        "the fine-tuning run",
    )
    assert job["status"] == "completed", job
    stored = _job(lab, "tuned")
    assert stored["args"]["baseWeights"].endswith("/best.pt")
    runs = lab.app.state.services.settings.runs
    base = lab.db.model(_job(lab, "base")["subject_id"])
    ran_with = yaml.safe_load((runs / stored["id"] / "train" / "args.yaml").read_text())
    assert ran_with["model"].endswith(f"models/{base['id']}/best.pt")
    assert "from scratch" not in (runs / stored["id"] / "train.log").read_text()
