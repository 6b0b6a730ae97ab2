"""Child-process entry for jobs that need ultralytics: `python -m appliance.worker
train|export SPEC.json`.

A crash, an out-of-memory kill or a cancel here never touches the API process,
and the GPU is freed when the process ends. Progress goes back to the parent as
JSON lines on the file descriptor named by APPLIANCE_EVENT_FD; ultralytics' own
console output goes to stdout, which the parent keeps as the job log.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from . import vision
from .trainargs import local_model_name

logger = logging.getLogger(__name__)


class Events:
    def __init__(self, beat_seconds: float = 2.0) -> None:
        fd = os.environ.get("APPLIANCE_EVENT_FD")
        self._out = os.fdopen(int(fd), "w", buffering=1) if fd else sys.stderr
        self._lock = threading.Lock()
        self.beat_seconds = beat_seconds
        self._last_beat = 0.0

    def send(self, event: str, **data: Any) -> None:
        line = json.dumps({"event": event, **data}, default=_plain) + "\n"
        with self._lock:
            self._out.write(line)
            self._out.flush()
            self._last_beat = time.monotonic()

    def beat(self, *_: Any) -> None:
        """A sign of life for the parent's watchdog, at most every beat_seconds
        (also a callback: ultralytics passes the trainer or validator)."""
        if time.monotonic() - self._last_beat >= self.beat_seconds:
            self.send("beat", system=system_figures())


def _beat_while(events: Events, until: threading.Event) -> None:
    """Beat from a thread while ultralytics sets up (imports, dataset scans),
    where no callback runs; training's own callbacks beat after that."""
    while not until.wait(events.beat_seconds / 2):
        try:
            events.beat()
        except Exception:  # a beat lost is no reason to stop beating
            logger.exception("could not send a heartbeat")


_cpu_times: list[int] = []


def system_figures() -> dict[str, float]:
    """CPU %, RAM and (on a GPU) the trainer's GPU memory, from psutil when it
    is installed, else from /proc."""
    out: dict[str, float] = {}
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        memory = psutil.virtual_memory()
        out["cpuPercent"] = float(psutil.cpu_percent(None))
        out["ramUsedGb"] = round((memory.total - memory.available) / 1024**3, 2)
        out["ramTotalGb"] = round(memory.total / 1024**3, 2)
    else:
        out.update(_proc_figures())
    # Only once torch is fully imported (the setup thread may run mid-import),
    # and only when it already uses CUDA: asking would otherwise start it.
    cuda = getattr(sys.modules.get("torch"), "cuda", None)
    if cuda is not None and cuda.is_initialized():
        out["gpuMemoryGb"] = round(cuda.memory_reserved() / 1024**3, 2)
    return out


def _proc_figures() -> dict[str, float]:
    out: dict[str, float] = {}
    try:
        fields = dict(
            line.split(":", 1)
            for line in Path("/proc/meminfo").read_text().splitlines()
        )
        total = int(fields["MemTotal"].split()[0]) * 1024
        available = int(fields["MemAvailable"].split()[0]) * 1024
        out["ramUsedGb"] = round((total - available) / 1024**3, 2)
        out["ramTotalGb"] = round(total / 1024**3, 2)
        times = [
            int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]
        ]
    except (OSError, KeyError, ValueError):
        return out
    if _cpu_times:
        busy = [now - then for now, then in zip(times, _cpu_times, strict=False)]
        idle = busy[3] + (busy[4] if len(busy) > 4 else 0)
        total_delta = sum(busy)
        if total_delta > 0:
            out["cpuPercent"] = round(100.0 * (total_delta - idle) / total_delta, 1)
    _cpu_times[:] = times
    return out


def _plain(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _floats(mapping: dict) -> dict[str, float]:
    out = {}
    for key, value in mapping.items():
        try:
            out[str(key)] = round(float(value), 6)
        except (TypeError, ValueError):
            continue
    return out


def _resolve_model(spec: dict, events: Events) -> str:
    """A local .pt, a weight imported into the data home, or a model YAML.

    With no pretrained weight to hand, `yolo26n.pt` falls back to `yolo26n.yaml`."""
    model = local_model_name(spec["model"])
    if model.endswith(".pt"):
        candidates = [Path(model), Path(spec["home"]) / "weights" / Path(model).name]
        for path in candidates:
            if path.is_file():
                return str(path)
        fallback = Path(model).stem + ".yaml"
        message = (
            f"{model} is not on this appliance; training {fallback} from scratch "
            f"(to start from the weights, run: appliance weights import {model})"
        )
        logger.warning("%s", message)  # into the job's log, train.log
        events.send("warning", message=message)
        return fallback
    return model


def train(spec: dict, events: Events) -> None:
    home = Path(spec["home"])
    set_up = threading.Event()
    threading.Thread(target=_beat_while, args=(events, set_up), daemon=True).start()
    vision.import_ultralytics(home)
    from ultralytics import YOLO

    vision.use_all_cores()
    device = vision.pick_device(spec.get("device", "auto"))
    if device != "cpu":
        vision.avoid_amp_download(home)
    cancel_file = Path(spec["cancel_file"])
    resume = spec.get("resume")
    source = resume or _resolve_model(spec, events)
    logger.info(
        "%s %s on device %s", "resuming" if resume else "training from", source, device
    )
    model = YOLO(source)
    epochs = int(spec["args"].get("epochs", 100))

    def on_batch_end(trainer: Any) -> None:
        events.beat()
        if cancel_file.exists():
            trainer.stop = True

    under_way: dict[str, int] = {}

    def on_epoch_start(trainer: Any) -> None:
        under_way["epoch"] = trainer.epoch
        events.beat()

    def on_fit_epoch_end(trainer: Any) -> None:
        if trainer.epoch != under_way.get("epoch"):
            # ultralytics' final validation of best.pt, called as the epoch after
            # the last one run (even when a cancel ended the run early); "done"
            # reports it
            return
        metrics = {
            **trainer.label_loss_items(trainer.tloss, prefix="train"),
            **(trainer.metrics or {}),
            **(trainer.lr or {}),
        }
        events.send(
            "epoch",
            epoch=trainer.epoch,
            epochs=trainer.epochs,
            metrics=_floats(metrics),
            fitness=None if trainer.fitness is None else float(trainer.fitness),
            best_fitness=None
            if trainer.best_fitness is None
            else float(trainer.best_fitness),
            system=system_figures(),
        )
        if cancel_file.exists():
            trainer.stop = True
            _keep_resumable(trainer)

    def on_train_start(trainer: Any) -> None:
        set_up.set()
        events.send(
            "started",
            device=str(trainer.device),
            epochs=trainer.epochs,
            start_epoch=trainer.start_epoch,
            save_dir=str(trainer.save_dir),
        )

    model.add_callback("on_train_start", on_train_start)
    model.add_callback("on_train_batch_end", on_batch_end)
    model.add_callback("on_train_epoch_start", on_epoch_start)
    for name in (
        "on_train_batch_start",
        "on_val_start",
        "on_val_batch_end",
        "on_model_save",
        "on_train_end",
    ):
        model.add_callback(name, events.beat)
    model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
    if resume:
        # The checkpoint holds the run's own arguments; only these may change.
        args = {"resume": True, "data": spec["data"], "device": device, "workers": 0}
    else:
        args = {
            "epochs": epochs,
            "workers": 0,
            "plots": False,
            **spec["args"],
            "data": spec["data"],
            "project": spec["project"],
            "name": "train",
            "exist_ok": True,
            "device": device,
            "verbose": True,
        }
    try:
        model.train(**args)
    finally:
        set_up.set()
    trainer = model.trainer
    weights_dir = Path(trainer.save_dir) / "weights"
    best = weights_dir / "best.pt"
    if not best.exists():
        best = weights_dir / "last.pt"
    final = _floats(getattr(trainer, "metrics", None) or {})
    names = trainer.data.get("names", {}) if trainer.data else {}
    events.send(
        "done",
        weights=str(best) if best.exists() else None,
        metrics=final,
        best_fitness=None
        if trainer.best_fitness is None
        else float(trainer.best_fitness),
        best_epoch=_best_epoch(trainer),
        cancelled=cancel_file.exists(),
        task=model.task,
        class_names=[names[i] for i in sorted(names)]
        if isinstance(names, dict)
        else list(names),
    )


def _keep_resumable(trainer: Any) -> None:
    """ultralytics strips the optimizer from last.pt when a run stops; keep a
    copy that still has it, so a cancelled run can be resumed."""
    last = Path(trainer.save_dir) / "weights" / "last.pt"
    if last.is_file():
        shutil.copyfile(last, last.with_name("resume.pt"))


def _best_epoch(trainer: Any) -> int | None:
    csv = Path(trainer.save_dir) / "results.csv"
    if not csv.exists():
        return None
    lines = csv.read_text().strip().splitlines()
    if len(lines) < 2:
        return None
    header = [h.strip() for h in lines[0].split(",")]
    keys = ("metrics/mAP50-95(B)", "metrics/mAP50(B)")
    column = next((header.index(k) for k in keys if k in header), None)
    if column is None:
        return None
    scores = [float(line.split(",")[column]) for line in lines[1:]]
    return scores.index(max(scores))


def export(spec: dict, events: Events) -> None:
    home = Path(spec["home"])
    vision.import_ultralytics(home)
    from ultralytics import YOLO

    vision.use_all_cores()
    model = YOLO(spec["weights"])
    events.send("started", format=spec["format"])
    output = model.export(
        format=spec["format"], device="cpu", verbose=False, **spec.get("args", {})
    )
    events.send("done", output=str(output))


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the appliance that started it dies
    (even by SIGKILL), so no orphan keeps training on a GPU the next appliance
    will hand to another job; if the parent is already gone, stop now."""
    parent = os.environ.get("APPLIANCE_PARENT_PID")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the restart reaps it instead
        return
    if parent and os.getppid() != int(parent):
        raise SystemExit("the appliance that started this worker is gone")


_PR_SET_PDEATHSIG = 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    _die_with_parent()
    command, spec_path = argv
    spec = json.loads(Path(spec_path).read_text())
    events = Events(float(spec.get("beat_seconds", 2.0)))
    try:
        {"train": train, "export": export}[command](spec, events)
    except (
        BaseException
    ) as exc:  # report every failure to the parent, then exit non-zero
        logger.error("%s failed: %s", command, exc)
        traceback.print_exc()
        events.send("error", message=f"{exc.__class__.__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
