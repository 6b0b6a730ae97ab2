"""The stock `ul` CLI against a live appliance: `ul cloud train ... watch` resolves
the project, creates the model, starts training on the appliance, follows it to the
end and downloads the weights, all through the appliance's API.

Same server, socket guard and network namespace as test_e2e; the client runs
outside pytest's environment, as a user's shell would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from contract import problems
from test_e2e import Server, _ingested_sample, isolated  # noqa: F401
from test_yolo_stream import _client_env

pytestmark = pytest.mark.e2e

UL_BIN = Path(sys.executable).with_name("ul")


@pytest.fixture(scope="module")
def server(isolated, tmp_path_factory):  # noqa: F811
    srv = Server(tmp_path_factory.mktemp("ul-cloud") / "home")
    srv.start()
    _ingested_sample(srv, "sample")
    yield srv
    if srv.proc and srv.proc.poll() is None:
        srv.stop()


def test_ul_cloud_train_runs_on_the_appliance(server, tmp_path):
    owner = server.owner
    run = subprocess.run(
        [
            str(UL_BIN),
            "cloud",
            "train",
            "model=yolo26n.pt",
            f"data=ul://{owner}/datasets/sample",
            f"project={owner}/cloud",
            "name=run1",
            "epochs=1",
            "imgsz=32",
            "batch=4",
            "workers=0",
            "watch",
        ],
        env=_client_env(server, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert f"Model: ul://{owner}/cloud/run1" in output

    sdk = server.client()
    job = sdk.models.training(owner, "cloud", "run1")
    assert (
        problems("GET", "/api/models/{owner}/{project}/{model}/training", 200, job)
        == []
    )
    assert job["job"]["status"] == "completed"
    assert job["job"]["progress"]["totalEpochs"] == 1
    model = sdk.models.retrieve(owner, "cloud", "run1")["model"]
    assert model["hasWeights"] is True and model["trainArgs"]["imgsz"] == 32
    assert sdk.projects.retrieve(owner, "cloud")["project"]["visibility"] == "private"

    # `watch` downloaded the checkpoint as `ul cloud download` does.
    [best] = tmp_path.rglob("weights/best.pt")
    files = sdk.models.files(owner, "cloud", "run1")["files"]
    assert best.stat().st_size == files[0]["size"]
    assert any(tmp_path.rglob("args.yaml"))

    attempts = server.guard_log.read_text() if server.guard_log.exists() else ""
    assert attempts == "", f"outbound attempts:\n{attempts[:3000]}"
