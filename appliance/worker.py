"""Child-process entry for jobs that need ultralytics: `python -m appliance.worker
train|export SPEC.json`.

A crash, an out-of-memory kill or a cancel here never touches the API process,
and the GPU is freed when the process ends. Progress goes back to the parent as
JSON lines on the file descriptor named by APPLIANCE_EVENT_FD; ultralytics' own
console output goes to stdout, which the parent keeps as the job log.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from . import vision
from .trainargs import local_model_name

logger = logging.getLogger(__name__)


class Events:
    def __init__(self) -> None:
        fd = os.environ.get("APPLIANCE_EVENT_FD")
        self._out = os.fdopen(int(fd), "w", buffering=1) if fd else sys.stderr

    def send(self, event: str, **data: Any) -> None:
        self._out.write(json.dumps({"event": event, **data}, default=_plain) + "\n")
        self._out.flush()


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
    vision.import_ultralytics(home)
    from ultralytics import YOLO

    vision.use_all_cores()
    device = vision.pick_device(spec.get("device", "auto"))
    if device != "cpu":
        vision.avoid_amp_download(home)
    cancel_file = Path(spec["cancel_file"])
    source = _resolve_model(spec, events)
    logger.info("training from %s on device %s", source, device)
    model = YOLO(source)
    epochs = int(spec["args"].get("epochs", 100))

    def on_batch_end(trainer: Any) -> None:
        if cancel_file.exists():
            trainer.stop = True

    def on_fit_epoch_end(trainer: Any) -> None:
        if trainer.epoch >= trainer.epochs:
            return  # ultralytics' final validation of best.pt; reported in "done"
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
        )
        if cancel_file.exists():
            trainer.stop = True

    def on_train_start(trainer: Any) -> None:
        events.send("started", device=str(trainer.device), epochs=trainer.epochs)

    model.add_callback("on_train_start", on_train_start)
    model.add_callback("on_train_batch_end", on_batch_end)
    model.add_callback("on_fit_epoch_end", on_fit_epoch_end)
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
    model.train(**args)
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


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    command, spec_path = argv
    spec = json.loads(Path(spec_path).read_text())
    events = Events()
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
