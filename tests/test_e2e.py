"""End to end: `appliance serve` in a subprocess on a free loopback port, driven
with the stock SDK through ingest, training, prediction and ONNX export.

The pytest process first moves into a network namespace of its own with only
loopback up (when the kernel allows it), and every Python process it starts
carries a guard that refuses and logs any connection off this machine. The
appliance must do the whole job without either of them noticing anything."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from contract import problems
from ultralytics_platform import Platform
from ultralytics_platform._exceptions import APIError

from appliance.demo import check_onnx, free_port, wait_ready
from appliance.server import ensure_owner
from appliance.settings import load_settings
from appliance.store import Database

pytestmark = pytest.mark.e2e

TESTS = Path(__file__).resolve().parent
CLONE_NEWNET = 0x40000000
IMGSZ = 64


def _enter_private_network() -> bool:
    """Move this process into a new network namespace with only `lo` up."""
    if os.geteuid() != 0 or not shutil.which("ip"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return False
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    return True


@pytest.fixture(scope="module")
def isolated() -> bool:
    return _enter_private_network()


def _child_env(guard_log: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST", "GITHUB", "CI"))
    }
    env["PYTHONPATH"] = os.pathsep.join(
        [str(TESTS / "netguard"), env.get("PYTHONPATH", "")]
    ).rstrip(os.pathsep)
    env["APPLIANCE_NETGUARD_LOG"] = str(guard_log)
    # The tests poll twice a second; the operator's knobs lift the per-minute limits.
    env["APPLIANCE_IP_RATE_LIMIT"] = "0"
    env["APPLIANCE_RATE_LIMITS"] = "default=0"
    return env


class Server:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.guard_log = home / "netguard.log"
        settings = load_settings(environ={}, home=str(home))
        owner, key = ensure_owner(settings, "tester")
        self.owner = owner["username"]
        self.key = key
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(self.home / "server.log", "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "appliance",
                "serve",
                "--home",
                str(self.home),
                "--port",
                str(port),
            ],
            env=_child_env(self.guard_log),
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_ready(self.url, self.key, self.proc)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        self.log.close()
        return code

    def client(self) -> Platform:
        return Platform(base_url=self.url, api_key=self.key, timeout=120)

    def log_text(self) -> str:
        return (self.home / "server.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def server(isolated, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("e2e") / "home")
    srv.start()
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop()


def _poll(fetch, done, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if done(value):
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} did not finish within {timeout:.0f} s")


def _ingested_sample(srv: Server, slug: str) -> dict:
    from make_sample import build_sample

    sdk = srv.client()
    sdk.datasets.create(dataset=slug, name="Sample")
    archive = build_sample(srv.home.parent / f"{slug}.zip").read_bytes()
    session = sdk.upload.signed_url(
        body={
            "assetType": "datasets",
            "assetId": slug,
            "filename": "sample.zip",
            "contentType": "application/zip",
            "totalBytes": len(archive),
        }
    )
    put = httpx.put(
        session["uploadUrl"], content=archive, headers=session.get("headers") or {}
    )
    assert put.status_code == 200
    sdk.upload.complete(session_id=session["sessionId"])
    assert (
        sdk.datasets.ingest(srv.owner, slug, body={"sessionId": session["sessionId"]})[
            "status"
        ]
        == "queued"
    )
    return _poll(
        lambda: sdk.datasets.retrieve(srv.owner, slug)["dataset"],
        lambda d: d["status"] != "processing",
        120,
        "ingest",
    )


def _training(sdk: Platform, owner: str, model: str) -> dict | None:
    return sdk.models.training(owner, "e2e", model)["job"]


def test_ingest_train_predict_export(server):
    sdk = server.client()
    owner = server.owner
    assert sdk.account.summary()["username"] == owner

    dataset = _ingested_sample(server, "sample")
    assert dataset["status"] == "ready"
    assert dataset["imageCount"] == 12
    assert dataset["splits"] == {"train": 10, "val": 2, "test": 0, "labeled": 12}
    assert dataset["classNames"] == ["person", "bus"]
    assert dataset["annotationCount"] == 40
    images = sdk.datasets.images(
        owner, "sample", split="val", include_labels="true", sort="name-asc"
    )["images"]
    assert [i["name"] for i in images] == ["bus_full.jpg", "zidane_full.jpg"]
    assert (images[0]["width"], images[0]["height"]) == (810, 1080)
    assert [lab["classId"] for lab in images[0]["labels"]] == [0, 0, 0, 0, 1]
    assert all(
        len(lab["bbox"]) == 4 and all(0 <= v <= 1 for v in lab["bbox"])
        for lab in images[0]["labels"]
    )

    exported = sdk.datasets.export(owner, "sample")
    assert (
        problems("GET", "/api/datasets/{owner}/{dataset}/export", 200, exported) == []
    )
    ndjson_path = server.home.parent / "sample.ndjson"
    ndjson_path.write_bytes(httpx.get(exported["downloadUrl"]).content)
    import asyncio

    from ultralytics.data.converter import convert_ndjson_to_yolo

    converted = asyncio.run(
        convert_ndjson_to_yolo(ndjson_path, output_path=server.home.parent / "conv")
    )
    root = Path(converted).parent
    assert len(list((root / "images" / "train").iterdir())) == 10
    assert len(list((root / "images" / "val").iterdir())) == 2
    label_rows = sum(
        len(p.read_text().splitlines()) for p in root.glob("labels/*/*.txt")
    )
    assert label_rows == 40
    assert "person" in Path(converted).read_text()

    sdk.projects.create(project="e2e", name="E2E")
    model = sdk.models.create(body={"owner": owner, "project": "e2e", "model": "tiny"})
    started = sdk.training.start(
        model_id=model["id"],
        train_args={
            "model": "yolo26n.yaml",
            "data": f"ul://{owner}/datasets/sample",
            "epochs": 1,
            "imgsz": IMGSZ,
            "batch": 4,
        },
    )
    assert started["status"] == "starting" and started["modelId"] == model["id"]
    job = _poll(
        lambda: _training(sdk, owner, "tiny"),
        lambda j: j and j["status"] in ("completed", "failed", "cancelled"),
        300,
        "training",
    )
    assert job["status"] == "completed", job["error"]
    template = "/api/models/{owner}/{project}/{model}"
    assert problems("GET", f"{template}/training", 200, {"job": job}) == []
    assert (
        problems("GET", template, 200, sdk.models.retrieve(owner, "e2e", "tiny")) == []
    )
    assert job["progress"]["currentEpoch"] == 1 and job["progress"]["totalEpochs"] == 1
    assert job["progress"]["percentage"] == 100
    assert {"train/box_loss", "metrics/mAP50(B)", "metrics/mAP50-95(B)"} <= set(
        job["epochMetrics"]
    )
    detail = sdk.models.retrieve(owner, "e2e", "tiny")["model"]
    assert detail["status"] == "completed" and detail["hasWeights"] is True
    assert detail["classNames"] == ["person", "bus"] and detail["task"] == "detect"
    assert (
        len(detail["trainResults"]) == 1
        and "train/cls_loss" in detail["trainResults"][0]["metrics"]
    )

    with pytest.raises(APIError) as again:
        sdk.training.start(
            model_id=model["id"],
            train_args={
                "model": "yolo26n.yaml",
                "data": f"ul://{owner}/datasets/sample",
                "epochs": 1,
            },
        )
    assert again.value.status_code == 409  # its weights are never overwritten

    files = sdk.models.files(owner, "e2e", "tiny")["files"]
    assert [f["name"] for f in files] == ["best.pt"]
    weights = httpx.get(files[0]["downloadUrl"])  # signed: no Authorization header
    assert (
        weights.status_code == 200
        and len(weights.content) == files[0]["size"] > 1_000_000
    )
    assert (
        httpx.get(
            files[0]["downloadUrl"].replace("signature=", "signature=0")
        ).status_code
        == 401
    )
    (server.home / "weights").mkdir(exist_ok=True)
    (server.home / "weights" / "prior.pt").write_bytes(
        weights.content
    )  # as if off a USB stick

    from ultralytics import ASSETS

    with open(ASSETS / "bus.jpg", "rb") as handle:
        predicted = sdk.models.predict(
            owner,
            "e2e",
            "tiny",
            body={
                "file": ("bus.jpg", handle, "image/jpeg"),
                "conf": 0.001,
                "imgsz": IMGSZ,
            },
        )
    assert (
        problems(
            "POST", "/api/models/{owner}/{project}/{model}/predict", 200, predicted
        )
        == []
    )
    image = predicted["images"][0]
    assert (
        predicted["metadata"]["imageCount"] == 1
        and predicted["metadata"]["task"] == "detect"
    )
    assert image["shape"] == [1080, 810]
    assert set(image["speed"]) == {"preprocess", "inference", "postprocess"}
    assert image["results"], (
        "an untrained model still yields low-confidence boxes at conf 0.001"
    )
    for result in image["results"]:
        box = result["box"]
        assert result["name"] in ("person", "bus") and result["class"] in (0, 1)
        assert 0 <= box["x1"] < box["x2"] <= 810 and 0 <= box["y1"] < box["y2"] <= 1080
        assert 0.001 <= result["confidence"] <= 1

    export = sdk.exports.create(
        owner, "e2e", "tiny", format="onnx", args={"imgsz": IMGSZ}
    )
    assert export["status"] == "queued"
    row = _poll(
        lambda: sdk.exports.retrieve(owner, "e2e", "tiny", export["id"])["export"],
        lambda e: e["status"] in ("completed", "failed", "cancelled"),
        180,
        "export",
    )
    assert row["status"] == "completed", row.get("error")
    template = "/api/models/{owner}/{project}/{model}/exports/{exportId}"
    assert problems("GET", template, 200, {"export": row}) == []
    assert row["file"]["downloadFilename"].endswith(".onnx")
    onnx_path = server.home.parent / row["file"]["downloadFilename"]
    onnx_path.write_bytes(httpx.get(row["file"]["downloadUrl"]).content)
    assert onnx_path.stat().st_size == row["file"]["size"]
    shapes = check_onnx(onnx_path, IMGSZ)
    assert shapes and shapes[0][0] == 1
    from ultralytics import YOLO

    onnx_results = YOLO(str(onnx_path), task="detect").predict(
        str(ASSETS / "bus.jpg"), imgsz=IMGSZ, conf=0.001, verbose=False
    )
    assert onnx_results[0].orig_shape == (1080, 810)


def test_training_from_a_local_pt(server):
    sdk = server.client()
    owner = server.owner
    model = sdk.models.create(
        body={"owner": owner, "project": "e2e", "model": "from-pt"}
    )
    sdk.training.start(
        model_id=model["id"],
        train_args={
            "model": "prior.pt",
            "data": f"ul://{owner}/datasets/sample",
            "epochs": 1,
            "imgsz": IMGSZ,
        },
    )
    job = _poll(
        lambda: _training(sdk, owner, "from-pt"),
        lambda j: j and j["status"] in ("completed", "failed"),
        300,
        "training",
    )
    assert job["status"] == "completed", job["error"]
    log = (server.home / "runs" / job["id"] / "train.log").read_text()
    assert f"training from {server.home / 'weights' / 'prior.pt'}" in log
    assert "from scratch" not in log


def test_cancel_stops_training_and_keeps_weights(server):
    sdk = server.client()
    owner = server.owner
    _long_training(sdk, owner, "cancelled")
    assert (
        sdk.models.delete_training(owner, "e2e", "cancelled")["status"] == "cancelled"
    )
    job = _poll(
        lambda: _training(sdk, owner, "cancelled"),
        lambda j: j["status"] != "running",
        60,
        "cancel",
    )
    assert job["status"] == "cancelled"
    assert job["progress"]["currentEpoch"] < 300
    detail = sdk.models.retrieve(owner, "e2e", "cancelled")["model"]
    assert detail["status"] == "cancelled" and detail["hasWeights"] is True
    assert _children_of(server) == []


def _long_training(sdk: Platform, owner: str, name: str) -> dict:
    """Start a 300-epoch run and return its model once the first epoch is done."""
    model = sdk.models.create(body={"owner": owner, "project": "e2e", "model": name})
    train_args = {
        "model": "yolo26n.yaml",
        "data": f"ul://{owner}/datasets/sample",
        "epochs": 300,
        "imgsz": IMGSZ,
    }
    sdk.training.start(model_id=model["id"], train_args=train_args)
    _poll(
        lambda: _training(sdk, owner, name),
        lambda j: j and j["progress"]["currentEpoch"] >= 1,
        180,
        "first epoch",
    )
    return model


def _children_of(srv: Server) -> list:
    return [
        p
        for p in psutil.Process(srv.proc.pid).children(recursive=True)
        if "appliance.worker" in " ".join(p.cmdline())
    ]


def test_a_killed_trainer_interrupts_the_job_not_the_api(server):
    sdk = server.client()
    owner = server.owner
    _long_training(sdk, owner, "killed")
    trainer = _trainer_process(server)
    trainer.kill()  # as the out-of-memory killer would
    job = _poll(
        lambda: _training(sdk, owner, "killed"),
        lambda j: j["status"] == "failed",
        60,
        "failure",
    )
    assert "killed by SIGKILL" in job["error"]["message"]
    assert job["error"]["code"] == "interrupted"  # resumable, not a failed run
    assert sdk.account.summary()["username"] == owner  # the API is still up


def test_sigterm_interrupts_running_training_and_frees_the_trainer(server):
    sdk = server.client()
    owner = server.owner
    model = _long_training(sdk, owner, "interrupted")
    trainer = _trainer_process(server)
    assert server.stop(signal.SIGTERM) == 0
    assert not trainer.is_running() or trainer.status() == psutil.STATUS_ZOMBIE

    db = Database(server.home / "appliance.db")
    job = db.latest_job(model["id"], "train")
    assert job["status"] == "interrupted"
    row = db.model(model["id"])
    assert row["status"] == "failed" and row["training_error"]["code"] == "interrupted"
    assert row["weights_size"], "the epochs it finished are kept"

    server.start()
    sdk = server.client()  # a new port
    job = sdk.models.training(owner, "e2e", "interrupted")["job"]
    assert job["status"] == "failed" and job["error"]["code"] == "interrupted"
    assert (
        sdk.models.retrieve(owner, "e2e", "interrupted")["model"]["hasWeights"] is True
    )


def test_a_killed_appliance_takes_its_trainer_with_it(server):
    """SIGKILL gives the appliance no chance to stop its children: the trainer
    must not live on, training on a device the restarted appliance hands out."""
    sdk = server.client()
    _long_training(sdk, server.owner, "orphan")
    trainer = _trainer_process(server)
    assert server.stop(signal.SIGKILL) == -signal.SIGKILL
    try:
        trainer.wait(30)
    except psutil.TimeoutExpired:
        trainer.kill()
        pytest.fail("the trainer outlived the appliance by 30 s")
    server.start()
    job = server.client().models.training(server.owner, "e2e", "orphan")["job"]
    assert job["status"] == "failed" and job["error"]["code"] == "interrupted"


def test_nothing_reached_for_the_network(server, isolated):
    attempts = server.guard_log.read_text() if server.guard_log.exists() else ""
    assert attempts == "", f"outbound attempts:\n{attempts[:3000]}"
    assert "Downloading" not in server.log_text()
    if not isolated:
        pytest.skip("ran with the socket guard only: no network namespace here")


def _trainer_process(srv: Server) -> psutil.Process:
    children = psutil.Process(srv.proc.pid).children(recursive=True)
    trainers = [p for p in children if "appliance.worker" in " ".join(p.cmdline())]
    assert len(trainers) == 1, [p.cmdline() for p in children]
    return trainers[0]


def test_the_guard_itself_refuses_and_records(tmp_path):
    """The guard used above must be able to fail: a lookup off this machine is
    refused before anything is sent, and written down."""
    log = tmp_path / "guard.log"
    code = "import socket\ntry:\n    socket.getaddrinfo('example.invalid', 80)\nexcept OSError as e:\n    print('refused', e.errno)\n"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=_child_env(log),
        capture_output=True,
        text=True,
    )
    assert out.stdout.startswith("refused")
    assert "example.invalid" in log.read_text()
