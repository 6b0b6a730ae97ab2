"""Reading checkpoints without running them: real ultralytics checkpoints
built from YAML, mismatched heads, and pickles that try to run code."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import pytest
from conftest import tiny_checkpoint

from appliance.checkpoints import BadCheckpoint, UnsafeCheckpoint, read_checkpoint


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="module")
def detector(folder) -> Path:
    return tiny_checkpoint(folder / "det.pt", nc=2, names=["cat", "dog"])


class _Command:
    """Pickles as a call of `function(*args)`, as a hostile checkpoint would."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def _zip_pickle(path: Path, payload: object) -> Path:
    """A zip laid out as torch saves one, whose data.pkl is `payload`."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps(payload, protocol=2))
        archive.writestr("evil/version", "3\n")
        archive.writestr("evil/byteorder", "little")
    return path


def test_reads_a_real_detection_checkpoint(detector):
    checkpoint = read_checkpoint(detector)
    assert checkpoint.task == "detect"
    assert checkpoint.class_names == ["cat", "dog"]
    assert checkpoint.head_classes == 2
    assert checkpoint.train_args["epochs"] == 3
    assert checkpoint.train_args["imgsz"] == 32
    assert checkpoint.metrics["metrics/mAP50(B)"] == pytest.approx(0.3)
    assert checkpoint.date and checkpoint.version
    assert [epoch for epoch, _ in checkpoint.results] == [0, 1, 2]
    assert checkpoint.results[1][1] == {"metrics/mAP50(B)": pytest.approx(0.2)}


@pytest.mark.parametrize("task", ["segment", "pose", "obb", "classify"])
def test_reads_every_task(folder, task):
    path = tiny_checkpoint(folder / f"{task}.pt", nc=3, task=task)
    checkpoint = read_checkpoint(path)
    assert checkpoint.task == task
    assert checkpoint.class_names == ["class0", "class1", "class2"]
    assert checkpoint.head_classes == 3


def test_names_that_disagree_with_a_classify_head_are_refused(folder):
    path = tiny_checkpoint(folder / "c.pt", nc=4, names=["a", "b"], task="classify")
    with pytest.raises(BadCheckpoint, match="names 2 classes but its classify head"):
        read_checkpoint(path)


def test_names_that_disagree_with_the_head_are_refused(folder):
    path = tiny_checkpoint(folder / "bad.pt", nc=2, names=["a", "b", "c"])
    with pytest.raises(
        BadCheckpoint, match="names 3 classes but its detect head predicts 2"
    ):
        read_checkpoint(path)


def test_a_pickle_calling_os_system_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = _zip_pickle(
        tmp_path / "evil.pt", {"model": _Command(os.system, f"touch {marker}")}
    )
    with pytest.raises(UnsafeCheckpoint, match=r"calls (posix|os|nt)\.system"):
        read_checkpoint(evil)
    assert not marker.exists()
    # The control: an ordinary unpickler runs the same bytes' command.
    with zipfile.ZipFile(evil) as archive:
        pickle.loads(archive.read("evil/data.pkl"))
    assert marker.exists()


@pytest.mark.parametrize(
    "payload",
    [
        _Command(eval, "1+1"),
        _Command(getattr, _Command(__import__, "os"), "system"),
        _Command(__import__, "subprocess"),
        _Command(pickle.loads, b"x"),
    ],
    ids=["eval", "getattr", "import", "nested-pickle"],
)
def test_other_globals_are_refused(tmp_path, payload):
    with pytest.raises(UnsafeCheckpoint, match="not allowed"):
        read_checkpoint(_zip_pickle(tmp_path / "x.pt", {"model": payload}))


def test_a_fused_model_reads_and_getattr_stays_harmless(tmp_path, folder):
    """A fused layer pickles `getattr(layer, "forward_fuse")`; the reader
    answers that with a name, and refuses getattr on anything else."""
    import collections

    from conftest import fused_checkpoint

    checkpoint = read_checkpoint(fused_checkpoint(folder / "fused.pt"))
    assert checkpoint.task == "detect" and checkpoint.head_classes == 80
    for payload in (
        _Command(getattr, collections.OrderedDict, "__globals__"),
        _Command(getattr, _Command(collections.OrderedDict), "get"),
    ):
        with pytest.raises(UnsafeCheckpoint, match="getattr"):
            read_checkpoint(_zip_pickle(tmp_path / "g.pt", {"model": payload}))


def test_code_hidden_in_a_real_checkpoint_is_refused(tmp_path, detector):
    import torch

    marker = tmp_path / "pwned"
    checkpoint = torch.load(detector, weights_only=False)  # our own file
    checkpoint["train_args"]["callbacks"] = _Command(os.system, f"touch {marker}")
    torch.save(checkpoint, tmp_path / "hidden.pt")
    with pytest.raises(UnsafeCheckpoint):
        read_checkpoint(tmp_path / "hidden.pt")
    assert not marker.exists()


def test_files_that_are_not_checkpoints(tmp_path):
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"model": None}))
    with pytest.raises(BadCheckpoint, match="not a PyTorch zip checkpoint"):
        read_checkpoint(legacy)
    empty = tmp_path / "empty.pt"
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("readme.txt", "hi")
    with pytest.raises(BadCheckpoint, match="no torch checkpoint"):
        read_checkpoint(empty)
    with pytest.raises(BadCheckpoint, match="no ultralytics model"):
        read_checkpoint(_zip_pickle(tmp_path / "dict.pt", {"weights": [1, 2]}))
    with pytest.raises(BadCheckpoint, match="damaged"):
        broken = tmp_path / "broken.pt"
        with zipfile.ZipFile(broken, "w") as archive:
            archive.writestr("b/data.pkl", b"\x80\x02}q\x00(X")
        read_checkpoint(broken)


def test_shared_lists_cannot_blow_up_the_reader(tmp_path, detector):
    import torch

    checkpoint = torch.load(detector, weights_only=False)  # our own file
    wide = list(range(100))
    for _ in range(4):
        wide = [wide] * 100  # 100**5 values if walked naively
    checkpoint["train_args"]["bomb"] = wide
    torch.save(checkpoint, tmp_path / "bomb.pt")
    with pytest.raises(BadCheckpoint, match="too large"):
        read_checkpoint(tmp_path / "bomb.pt")


def test_a_pickle_cannot_change_the_reader(tmp_path, detector):
    """BUILD on what find_class returned touches only this read's objects."""
    from appliance import checkpoints

    # PROTO 2; GLOBAL builtins set; {"abc": 1}; BUILD; STOP
    payload = b"\x80\x02cbuiltins\nset\n}X\x03\x00\x00\x00abcK\x01sb."
    with zipfile.ZipFile(tmp_path / "b.pt", "w") as archive:
        archive.writestr("b/data.pkl", payload)
    with pytest.raises(BadCheckpoint):
        read_checkpoint(tmp_path / "b.pt")
    assert not hasattr(checkpoints._set, "abc")
    assert read_checkpoint(detector).class_names == ["cat", "dog"]


def test_checkpoints_of_a_real_training_run(tmp_path):
    """What `yolo train` itself writes (best.pt and last.pt, stripped at the
    end) and what `YOLO.save` writes after it, all from one epoch at imgsz 32."""
    from conftest import train_tiny_detector

    saved = train_tiny_detector(tmp_path)
    weights = sorted((tmp_path / "runs").rglob("*.pt"))
    assert [p.name for p in weights] == ["best.pt", "last.pt"]
    for path in (saved, *weights):
        checkpoint = read_checkpoint(path)
        assert checkpoint.task == "detect" and checkpoint.head_classes == 2
        assert checkpoint.class_names == ["green", "red"]
        assert checkpoint.train_args["imgsz"] == 32


def test_namespaces_and_paths_of_other_versions_are_read(tmp_path, detector):
    """Other ultralytics versions pickle argument namespaces and paths."""
    from types import SimpleNamespace

    import torch
    from ultralytics.utils import IterableSimpleNamespace

    checkpoint = torch.load(detector, weights_only=False)  # our own file
    checkpoint["train_args"]["save_dir"] = Path("/runs/detect/train")
    checkpoint["model"].args = IterableSimpleNamespace(imgsz=32)
    checkpoint["namespace"] = SimpleNamespace(a=1)
    torch.save(checkpoint, tmp_path / "other.pt")
    read = read_checkpoint(tmp_path / "other.pt")
    assert read.train_args["save_dir"] == "/runs/detect/train"
    assert read.class_names == ["cat", "dog"]


class _CallsParseModel:
    """A gadget found by a tester: ultralytics' own parse_model evaluates an
    `activation` string, so a pickle that calls it runs code when loaded for real."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        from ultralytics.nn.tasks import parse_model

        text = f"__import__('pathlib').Path({str(self.marker)!r}).touch() or None"
        return parse_model, ({"activation": text, "backbone": [], "head": []}, 3, False)


def _with(detector: Path, target: Path, gadget: object) -> Path:
    """Our own valid checkpoint with one more object in it, saved as torch does
    (not through ultralytics, whose re-save would run the gadget)."""
    import torch

    data = torch.load(detector, weights_only=False)  # our own file, made above
    data["extra"] = gadget
    torch.save(data, target)
    return target


def test_an_ultralytics_function_in_a_checkpoint_is_refused(detector, tmp_path):
    marker = tmp_path / "ran"
    path = _with(detector, tmp_path / "gadget.pt", _CallsParseModel(marker))
    with pytest.raises(UnsafeCheckpoint, match="parse_model"):
        read_checkpoint(path)
    layer = _with(detector, tmp_path / "call.pt", _Command(_conv_class(), 3, 16))
    with pytest.raises(UnsafeCheckpoint, match="with arguments"):
        read_checkpoint(layer)
    assert not marker.exists()


def test_a_full_load_of_such_a_file_runs_nothing_either(detector, tmp_path):
    """Defence in depth: ultralytics itself loads checkpoints in the appliance's
    processes with ULTRALYTICS_SAFE_LOAD, so even a file that got past the reader
    cannot run code when a model is loaded for predict, export or training."""
    import subprocess
    import sys

    from appliance.vision import offline_environment

    marker = tmp_path / "ran"
    path = _with(detector, tmp_path / "gadget.pt", _CallsParseModel(marker))
    code = (
        "from ultralytics.nn.tasks import torch_safe_load\n"
        f"try:\n    torch_safe_load({str(path)!r})\nexcept Exception as e:\n"
        "    print('refused', type(e).__name__)\n"
    )
    env = {**os.environ, **offline_environment(tmp_path / "home")}
    env = {k: v for k, v in env.items() if not k.startswith("PYTEST")}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "refused" in out.stdout, out.stdout + out.stderr
    assert not marker.exists()


def _conv_class():
    from ultralytics.nn.modules import Conv

    return Conv


@pytest.mark.parametrize(
    "extra",
    [
        {"best_fitness": float("inf"), "epoch": 10**300},
        {"train_results": {"epoch": [float("nan"), 1.0], "x": [1, 2]}},
        {"train_metrics": {"fitness": 10**400, "nan": float("nan")}},
        {"train_args": {"epochs": 10**5000, "name": "x" * 10_000}},
        {"date": "0001-01-01T00:00:00+05:00"},
    ],
    ids=["inf-fitness", "nan-epoch", "huge-metric", "huge-arg", "date-overflow"],
)
def test_absurd_values_are_dropped_not_crashes(tmp_path, extra):
    """Values no training writes are left out, so nothing stored can break a
    JSON reply or the database later."""
    checkpoint = read_checkpoint(tiny_checkpoint(tmp_path / "odd.pt", **extra))
    assert checkpoint.best_fitness is None or abs(checkpoint.best_fitness) < 1e300
    assert checkpoint.epoch is None or checkpoint.epoch <= 100_000
    assert all(abs(v) < 1e300 for v in checkpoint.metrics.values())
    assert checkpoint.date is None or checkpoint.date.startswith("2")
    assert (
        "epochs" not in checkpoint.train_args or checkpoint.train_args["epochs"] < 2**63
    )
    assert len(checkpoint.train_args.get("name") or "") <= 4096


def test_a_path_that_expands_without_end_is_refused(detector, tmp_path):
    """A pickled path repeats one string by reference: joined, it could grow far
    beyond the file's size. Paths longer than any file system allows are refused."""
    from pathlib import PosixPath

    parts = ["a" * 1000] * 10
    bomb = _with(detector, tmp_path / "path.pt", _Command(PosixPath, *parts))
    with pytest.raises(BadCheckpoint, match="path longer"):
        read_checkpoint(bomb)
