"""Stock ultralytics against a live appliance: `yolo train ... project=owner/proj`
run in a subprocess trains locally and streams into the appliance, a cancel
through the appliance stops it, and `YOLO("ul://...")` downloads weights.

The server and every client run with the socket guard of test_e2e (and in its
private network namespace when the kernel allows), and with the appliance's
default rate limits on. The clients' environment carries none of pytest's
variables: ultralytics turns its Platform sync off when it sees them."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from contract import problems
from test_e2e import Server, _child_env, _ingested_sample, isolated  # noqa: F401

from appliance import vision
from appliance.demo import free_port, wait_ready

pytestmark = pytest.mark.e2e

MODEL = "/api/models/{owner}/{project}/{model}"
YOLO_BIN = Path(sys.executable).with_name("yolo")


class LimitedServer(Server):
    """test_e2e's server, but with the rate limits an operator gets by default."""

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        env = _child_env(self.guard_log)
        env.pop("APPLIANCE_IP_RATE_LIMIT")
        env.pop("APPLIANCE_RATE_LIMITS")
        self.log = open(self.home / "server.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "appliance", "serve", "--home", str(self.home)]
            + ["--port", str(port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        wait_ready(self.url, self.key, self.proc)


@pytest.fixture(scope="module")
def server(isolated, tmp_path_factory):  # noqa: F811
    srv = LimitedServer(tmp_path_factory.mktemp("stream") / "home")
    srv.start()
    _ingested_sample(srv, "sample")
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop()


@pytest.fixture(scope="module")
def client_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("client")


def _client_env(srv: Server, home: Path) -> dict[str, str]:
    """A user's shell: ultralytics offline except for the appliance, its own
    settings and fonts, the key and the appliance's URL; no pytest variables."""
    vision.prepare_offline(home)
    env = _child_env(srv.guard_log)
    env.update(vision.offline_environment(home))
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(name, None)
    env.update(
        {
            "ULTRALYTICS_API_KEY": srv.key,
            "ULTRALYTICS_PLATFORM_URL": srv.url,
            "NO_PROXY": "127.0.0.1,localhost",
        }
    )
    assert not any(k.startswith("PYTEST") for k in env)
    return env


def _yolo_train(srv: Server, home: Path, name: str, epochs: int) -> list[str]:
    return [
        str(YOLO_BIN),
        "train",
        "model=yolo26n.yaml",
        f"data=ul://{srv.owner}/datasets/sample",
        f"project={srv.owner}/streamed",
        f"name={name}",
        f"epochs={epochs}",
        "imgsz=32",
        "batch=4",
        "workers=0",
        "plots=False",
        "device=cpu",
    ]


def _wait(fetch, done, timeout: float, what: str):
    """Polls every 1.5 s: within the default 100 requests a minute per address."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fetch()
        if done(value):
            return value
        time.sleep(1.5)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def test_yolo_train_streams_into_the_appliance(server, client_home):
    sdk = server.client()
    owner = server.owner
    run = subprocess.run(
        _yolo_train(server, client_home, "run", 2),
        env=_client_env(server, client_home),
        cwd=client_home,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "Streaming training metrics to Platform" in output
    assert f"View model at {server.url}/{owner}/streamed/run" in output
    assert "Failed to send" not in output and "will not be" not in output, output

    detail = sdk.models.retrieve(owner, "streamed", "run")
    assert problems("GET", MODEL, 200, detail) == []
    model = detail["model"]
    assert model["status"] == "completed" and model["hasWeights"] is True
    assert model["task"] == "detect" and model["classNames"] == ["person", "bus"]
    assert [e["epoch"] for e in model["trainResults"]] == [0, 1]
    assert {"train/box_loss", "metrics/mAP50-95(B)", "lr"} <= set(
        model["trainResults"][0]["metrics"]
    )
    assert model["trainArgs"]["epochs"] == 2 and model["trainArgs"]["imgsz"] == 32
    assert model["environment"]["ultralyticsVersion"]
    assert model["datasetId"]
    assert "mAP50-95" in model["metrics"]  # the final validation of best.pt

    job = sdk.models.training(owner, "streamed", "run")
    assert problems("GET", f"{MODEL}/training", 200, job) == []
    job = job["job"]
    assert job["status"] == "completed"
    assert job["progress"]["currentEpoch"] == 2 and job["progress"]["totalEpochs"] == 2

    log = (server.home / "runs" / job["id"] / "train.log").read_text()
    lines = log.splitlines()  # ultralytics' own console, as it printed it
    assert len(lines) >= 20 and all(re.match(r"^\[20\d\d-", line) for line in lines)
    assert "ultralytics.nn.modules.conv.Conv" in log and "Speed:" in log, log

    files = sdk.models.files(owner, "streamed", "run")
    assert problems("GET", f"{MODEL}/files", 200, files) == []
    weights = httpx.get(files["files"][0]["downloadUrl"])
    assert weights.status_code == 200 and len(weights.content) > 1_000_000
    [local] = client_home.rglob("streamed/run/weights/best.pt")
    assert weights.content == local.read_bytes()


def test_ul_uris_download_weights(server, client_home, tmp_path):
    owner = server.owner
    official = tmp_path / "yolo26n.pt"
    script = (
        "import sys\nfrom ultralytics import YOLO\n"
        "if sys.argv[1] == 'make':\n"
        "    YOLO('yolo26n.yaml').save(sys.argv[2])\n"
        "else:\n"
        "    for uri in sys.argv[2:]:\n"
        "        m = YOLO(uri)\n"
        "        print('LOADED', uri, m.task, len(m.names), m.ckpt_path)\n"
    )
    env = _client_env(server, client_home)
    subprocess.run(
        [sys.executable, "-c", script, "make", str(official)], env=env, check=True
    )
    imported = subprocess.run(
        [sys.executable, "-m", "appliance", "weights", "import", str(official)]
        + ["--home", str(server.home)],
        env=_child_env(server.guard_log),
        capture_output=True,
        text=True,
    )
    assert imported.returncode == 0, imported.stderr
    assert "ul://ultralytics/yolo26/yolo26n" in imported.stdout

    uris = [f"ul://{owner}/streamed/run", "ul://ultralytics/yolo26/yolo26n"]
    loaded = subprocess.run(
        [sys.executable, "-c", script, "load", *uris],
        env=env,
        cwd=client_home,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode == 0, (loaded.stdout + loaded.stderr)[-3000:]
    lines = [line.split() for line in loaded.stdout.splitlines() if "LOADED" in line]
    assert [(line[1], line[2], line[3]) for line in lines] == [
        (uris[0], "detect", "2"),
        (uris[1], "detect", "80"),
    ]
    assert Path(lines[1][4]).read_bytes() == official.read_bytes()
    trained = server.client().models.files(owner, "streamed", "run")["files"][0]
    assert Path(lines[0][4]).stat().st_size == trained["size"]

    missing = subprocess.run(
        [sys.executable, "-c", script, "load", "ul://ultralytics/yolo26/yolo26s"],
        env=env,
        cwd=client_home,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode != 0 and "FileNotFoundError" in missing.stderr


def test_a_cancel_through_the_appliance_stops_yolo_train(server, client_home):
    sdk = server.client()
    owner = server.owner
    proc = subprocess.Popen(
        _yolo_train(server, client_home, "long", 60),
        env=_client_env(server, client_home),
        cwd=client_home,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        _wait(
            lambda: _epochs_done(sdk, owner, "long"),
            lambda n: n >= 1 or proc.poll() is not None,
            300,
            "the first epoch",
        )
        cancelled = sdk.models.delete_training(owner, "streamed", "long")
        assert cancelled["status"] == "cancelled"
        output, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, output[-3000:]
    assert "Training cancelled from Platform" in output
    model = sdk.models.retrieve(owner, "streamed", "long")["model"]
    assert model["status"] == "cancelled" and model["hasWeights"] is True
    assert 1 <= len(model["trainResults"]) < 60
    job = sdk.models.training(owner, "streamed", "long")["job"]
    assert job["status"] == "cancelled"


def _epochs_done(sdk, owner: str, name: str) -> int:
    try:
        model = sdk.models.retrieve(owner, "streamed", name)["model"]
    except Exception:  # not made yet: the run is still starting
        return 0
    return len(model["trainResults"])


def test_nothing_left_the_machine(server):
    attempts = server.guard_log.read_text() if server.guard_log.exists() else ""
    assert attempts == "", f"outbound attempts:\n{attempts[:3000]}"
    assert "Traceback" not in server.log_text()
