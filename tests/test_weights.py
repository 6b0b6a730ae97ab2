"""`appliance weights import`: official weights for an air-gapped lab, read without
unrestricted unpickling, registered once, and found by training and by ul://."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
from conftest import make_app
from contract import problems
from starlette.testclient import TestClient

from appliance import trainargs
from appliance.cli import main
from appliance.weights import Registry, family_of
from appliance.worker import _resolve_model

FILES = "/api/models/{owner}/{project}/{model}/files"
FALLBACK = (
    "yolo26n.pt is not on this appliance; training yolo26n.yaml from scratch "
    "(to start from the weights, run: appliance weights import yolo26n.pt)"
)


@pytest.fixture(scope="module")
def official(tmp_path_factory) -> Path:
    """yolo26n built from its YAML and saved as a checkpoint named yolo26n.pt, as
    the file off the USB stick would be."""
    folder = tmp_path_factory.mktemp("usb")
    return _saved(folder / "yolo26n.pt", folder)


def _saved(path: Path, folder: Path, names: dict | None = None) -> Path:
    from appliance import vision

    saved = dict(os.environ)
    try:
        vision.import_ultralytics(folder / "yolo-home")
        from ultralytics import YOLO

        model = YOLO("yolo26n.yaml")
        if names is not None:
            model.model.names = names
        model.save(str(path))
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return path


def _import(home: Path, *args: str) -> int:
    return main(["weights", "import", *args, "--home", str(home)])


def test_import_registers_once_and_links_into_the_weights_folder(
    home, official, capsys
):
    assert _import(home, str(official)) == 0
    said = capsys.readouterr().out
    assert "imported yolo26n.pt (detect, 80 classes" in said
    assert "ul://ultralytics/yolo26/yolo26n" in said
    linked = home / "weights" / "yolo26n.pt"
    registry = Registry(home)
    entry = registry.entries()["yolo26n.pt"]
    assert linked.read_bytes() == official.read_bytes()
    assert os.path.samefile(linked, registry.blob(entry))
    assert (entry["family"], entry["task"], entry["classCount"]) == (
        "yolo26",
        "detect",
        80,
    )
    stamp = entry["importedAt"]

    assert _import(home, str(official)) == 0  # idempotent
    assert "already imported: yolo26n.pt" in capsys.readouterr().out
    assert Registry(home).entries()["yolo26n.pt"]["importedAt"] == stamp
    assert sorted(p.name for p in (home / "weights").iterdir()) == [
        "registry.json",
        "yolo26n.pt",
    ]

    linked.unlink()  # an operator tidying the folder: importing again repairs it
    assert _import(home, str(official)) == 0
    assert linked.read_bytes() == official.read_bytes()


def test_other_bytes_under_a_taken_name_need_replace(home, official, tmp_path, capsys):
    assert _import(home, str(official)) == 0
    other = _saved(tmp_path / "other.pt", tmp_path, {i: f"c{i}" for i in range(80)})
    assert _import(home, str(other), "--name", "yolo26n.pt") == 1
    assert "--replace" in capsys.readouterr().err
    assert (home / "weights" / "yolo26n.pt").read_bytes() == official.read_bytes()
    assert _import(home, str(other), "--name", "yolo26n.pt", "--replace") == 0
    assert (home / "weights" / "yolo26n.pt").read_bytes() == other.read_bytes()


def test_files_that_are_not_checkpoints_are_refused(home, tmp_path, capsys):
    text = tmp_path / "yolo26n.pt"
    text.write_text("not a model")
    plain_zip = tmp_path / "zipped.pt"
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    for path, reason in (
        (text, "not a PyTorch zip checkpoint"),
        (plain_zip, "the zip holds no torch checkpoint"),
    ):
        assert _import(home, str(path)) == 1
        assert reason in capsys.readouterr().err
    assert Registry(home).entries() == {}
    assert not (home / "weights" / "yolo26n.pt").exists()
    assert _import(home, str(tmp_path / "missing.pt")) == 1
    assert _import(home, str(text), "--name", "../evil.pt") == 1


def test_a_checkpoint_that_would_run_code_is_refused_unrun(home, tmp_path, capsys):
    import torch

    marker = tmp_path / "ran"
    torch.save({"model": _Touch(marker)}, tmp_path / "yolo26n.pt")
    assert _import(home, str(tmp_path / "yolo26n.pt")) == 1
    assert "not allowed" in capsys.readouterr().err
    assert not marker.exists()
    assert Registry(home).entries() == {}


def test_numpy_values_and_paths_in_a_checkpoint_are_fine(home, official, tmp_path):
    import numpy as np
    import torch

    from appliance.weights import read_checkpoint

    data = torch.load(official, weights_only=False)  # our own file, made above
    data["train_metrics"] = {"fitness": np.float64(0.5), "curve": np.arange(3.0)}
    data["train_args"] = {"project": tmp_path, "epochs": 3}
    torch.save(data, tmp_path / "yolo26s.pt")
    checkpoint = read_checkpoint(tmp_path / "yolo26s.pt")
    assert checkpoint.task == "detect" and checkpoint.train_args["epochs"] == 3
    assert checkpoint.metrics["fitness"] == 0.5  # a numpy scalar, decoded, not run
    assert _import(home, str(tmp_path / "yolo26s.pt")) == 0


def test_class_names_that_disagree_with_the_head_are_refused(home, tmp_path, capsys):
    bad = _saved(tmp_path / "yolo26n.pt", tmp_path, {0: "a", 1: "b", 2: "c"})
    assert _import(home, str(bad)) == 1
    assert "names 3 classes but its detect head predicts 80" in capsys.readouterr().err


def test_ul_official_uri_resolves_to_the_imported_file(home, official):
    app, key = make_app(home, run_queue=False)
    auth = {"Authorization": f"Bearer {key}"}
    with TestClient(app) as client:
        missing = client.get(
            "/api/models/ultralytics/yolo26/yolo26n/files", headers=auth
        )
        assert missing.status_code == 404
        assert "appliance weights import yolo26n.pt" in missing.json()["error"]
        assert _import(home, str(official)) == 0
        got = client.get("/api/models/ultralytics/yolo26/yolo26n/files", headers=auth)
        assert got.status_code == 200 and problems("GET", FILES, 200, got.json()) == []
        [file] = got.json()["files"]
        assert file["name"] == "yolo26n.pt" and file["size"] == official.stat().st_size
        assert file["downloadUrl"].split("?")[0].endswith("/yolo26n.pt")
        assert client.get(file["downloadUrl"]).content == official.read_bytes()
        wrong_family = client.get(
            "/api/models/ultralytics/yolo11/yolo26n/files", headers=auth
        )
        assert wrong_family.status_code == 404
        bad_key = client.get(
            "/api/models/ultralytics/yolo26/yolo26n/files",
            headers={"Authorization": "Bearer ul_" + "0" * 40},
        )
        assert bad_key.status_code == 401


def test_training_finds_an_imported_weight_and_warns_without_one(home, official):
    spec = {"home": str(home), "model": "yolo26n.pt"}
    events = _Events()
    assert _resolve_model(spec, events) == "yolo26n.yaml"
    assert events.sent == [("warning", FALLBACK)]
    assert _import(home, str(official)) == 0
    for name in ("yolo26n.pt", "ul://ultralytics/yolo26/yolo26n"):
        events = _Events()
        resolved = _resolve_model({**spec, "model": name}, events)
        assert resolved == str(home / "weights" / "yolo26n.pt") and events.sent == []
        trainargs.check_model(name, home / "weights")
    assert family_of("yolo11s-seg") == "yolo11" and family_of("mine") is None


def test_a_missing_official_weight_is_a_warning_in_the_job_log(home):
    """A real training job (one epoch, imgsz 32) asked for yolo26n.pt on an
    appliance that has none: it trains from the YAML and says so in its log."""
    from conftest import base_files, write_zip
    from test_api import upload, wait_dataset
    from ultralytics_platform import Platform

    app, key = make_app(home)
    with TestClient(app) as client:
        sdk = Platform(
            base_url="http://testserver", api_key=key, http_client=client, max_retries=0
        )
        sdk.datasets.create(dataset="t", name="T")
        data = write_zip(home / "ds.zip", base_files()).read_bytes()
        sdk.datasets.ingest("alice", "t", body={"sessionId": upload(client, sdk, data)})
        wait_dataset(sdk, "t")
        sdk.projects.create(project="p", name="P")
        model = sdk.models.create(body={"project": "p", "model": "m"})
        args = {"model": "yolo26n.pt", "data": "ul://alice/datasets/t", "epochs": 1}
        sdk.training.start(model_id=model["id"], train_args={**args, "imgsz": 32})
        job = _finished(sdk)
    assert job["status"] == "completed", job["error"]
    log = (home / "runs" / job["id"] / "train.log").read_text()
    assert FALLBACK in log
    stored = app.state.services.db.job(job["id"])
    assert stored["result"]["warnings"] == [FALLBACK]


def _finished(sdk) -> dict:
    import time

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        job = sdk.models.training("alice", "p", "m")["job"]
        if job and job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.5)
    raise AssertionError("training did not finish")


class _Events:
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []

    def send(self, event: str, **data) -> None:
        self.sent.append((event, data["message"]))


class _Touch:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))
