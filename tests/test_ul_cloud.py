"""The stock `ul` CLI against a live appliance: `ul cloud train ... watch` resolves
the project, creates the model, starts training on the appliance, follows it to the
end and downloads the weights, all through the appliance's API.

Same server, socket guard and network namespace as test_e2e; the client runs
outside pytest's environment, as a user's shell would."""

from __future__ import annotations

import subprocess
import sys
import time
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


def test_ul_cloud_train_uploads_a_local_dataset(server, tmp_path):
    """With `data=` a local data.yaml, the CLI zips the dataset, creates it on the
    appliance, uploads and ingests it, then starts training on it."""
    from conftest import base_files

    for name, data in base_files("local/").items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    yaml = tmp_path / "local" / "data.yaml"
    yaml.write_text(yaml.read_text().replace("path: .", f"path: {yaml.parent}"))
    owner = server.owner
    run = subprocess.run(
        [str(UL_BIN), "cloud", "train", "model=yolo26n.pt"]
        + [f"data={tmp_path / 'local' / 'data.yaml'}", f"project={owner}/cloud"]
        + ["name=run2", "epochs=1", "imgsz=32", "batch=4"],
        env=_client_env(server, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert f"Model: ul://{owner}/cloud/run2" in output

    sdk = server.client()
    [uri] = [
        line.split()[1] for line in output.splitlines() if line.startswith("Dataset:")
    ]
    slug = uri.rsplit("/", 1)[1]
    dataset = sdk.datasets.retrieve(owner, slug)["dataset"]
    assert dataset["imageCount"] == 4 and dataset["classNames"] == ["a", "b"]
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = sdk.models.training(owner, "cloud", "run2")["job"]
        if job and job["status"] not in ("queued", "starting", "running"):
            break
        time.sleep(1)
    assert job["status"] == "completed", job
    model = sdk.models.retrieve(owner, "cloud", "run2")["model"]
    assert model["datasetId"] == dataset["id"] and model["hasWeights"] is True


def test_ul_cloud_train_from_a_local_checkpoint(server, tmp_path):
    """`model=` a local .pt: the CLI uploads it as a model of the project, then
    trains from it (trainArgs.model is that model's ul:// URI)."""
    import httpx

    owner = server.owner
    sdk = server.client()
    [weights] = sdk.models.files(owner, "cloud", "run1")["files"]
    local = tmp_path / "mine.pt"
    local.write_bytes(httpx.get(weights["downloadUrl"], timeout=60).content)
    run = subprocess.run(
        [str(UL_BIN), "cloud", "train", f"model={local}"]
        + [f"data=ul://{owner}/datasets/sample", f"project={owner}/cloud"]
        + ["name=run3", "epochs=1", "imgsz=32", "batch=4", "workers=0", "watch"],
        env=_client_env(server, tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    job = sdk.models.training(owner, "cloud", "run3")["job"]
    assert job["status"] == "completed", job
    model = sdk.models.retrieve(owner, "cloud", "run3")["model"]
    assert model["hasWeights"] is True
    assert model["trainArgs"]["model"].startswith(f"ul://{owner}/cloud/")  # uploaded
