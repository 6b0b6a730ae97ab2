"""The one place that imports ultralytics, torch and cv2.

Everything here keeps ultralytics offline: its settings and fonts live under the
data home, sync and telemetry are off, and nothing names an asset that would be
downloaded. Import this module freely; ultralytics itself is imported lazily,
after `offline_environment` is in force.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import threading
import time
from collections import OrderedDict
from importlib.util import find_spec
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

TASKS = ("detect", "segment", "pose", "obb", "classify")
#: Export formats that run here with the packages the appliance installs.
OFFLINE_EXPORT_FORMATS = frozenset({"onnx", "torchscript"})
_SETTINGS_OFF = {
    "sync": False,
    "api_key": "",
    "clearml": False,
    "comet": False,
    "dvc": False,
    "mlflow": False,
    "raytune": False,
    "tensorboard": False,
    "wandb": False,
    "vscode_msg": False,
    "openvino_msg": False,
}


def offline_environment(home: Path) -> dict[str, str]:
    """Variables that must be set before ultralytics is imported, in any process."""
    yolo_dir = home / "ultralytics"
    return {
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "0",
        "YOLO_CONFIG_DIR": str(yolo_dir),
        "MPLCONFIGDIR": str(home / "cache" / "matplotlib"),
        "PIP_NO_INDEX": "1",
        "HF_HUB_OFFLINE": "1",
        # Checkpoints are loaded with torch's weights_only unpickler and
        # ultralytics' allow-list of model classes: a user's .pt runs no code.
        "ULTRALYTICS_SAFE_LOAD": "1",
        "ULTRALYTICS_API_KEY": "",
        # Libraries that keep caches under ~ (ONNX Runtime, OpenVINO) keep them here.
        "HOME": str(home / "cache" / "home"),
        "XDG_CACHE_HOME": str(home / "cache"),
    }


def prepare_offline(home: Path) -> None:
    """Seed ultralytics' config dir: settings with sync off, and local fonts so the
    font probe never goes looking on the internet."""
    config = home / "ultralytics" / "Ultralytics"
    config.mkdir(parents=True, exist_ok=True)
    (home / "cache" / "matplotlib").mkdir(parents=True, exist_ok=True)
    (home / "cache" / "home").mkdir(parents=True, exist_ok=True)
    font = _bundled_font()
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = config / name
        if font and not target.exists():
            shutil.copyfile(font, target)
    settings_file = config / "settings.json"
    current: dict[str, Any] = {}
    if settings_file.exists():
        try:
            current = json.loads(settings_file.read_text())
        except ValueError:
            current = {}
    wanted = {
        **current,
        **_SETTINGS_OFF,
        "datasets_dir": str(home / "datasets"),
        "weights_dir": str(home / "weights"),
        "runs_dir": str(home / "runs"),
    }
    if wanted != current:
        settings_file.write_text(json.dumps(wanted, indent=2))


def apply_offline_environment(home: Path) -> None:
    """Make this process offline-safe before anything imports ultralytics."""
    prepare_offline(home)
    os.environ.update(offline_environment(home))
    os.environ.pop("ULTRALYTICS_API_KEY", None)


def _bundled_font() -> Path | None:
    spec = find_spec("matplotlib")
    if not spec or not spec.submodule_search_locations:
        return None
    font = (
        Path(next(iter(spec.submodule_search_locations)))
        / "mpl-data"
        / "fonts"
        / "ttf"
        / "DejaVuSans.ttf"
    )
    return font if font.exists() else None


def import_ultralytics(home: Path) -> Any:
    """Import ultralytics with the offline profile and settings applied."""
    apply_offline_environment(home)
    import ultralytics
    from ultralytics import settings

    settings.update(
        **_SETTINGS_OFF,
        datasets_dir=str(home / "datasets"),
        weights_dir=str(home / "weights"),
        runs_dir=str(home / "runs"),
    )
    return ultralytics


def use_all_cores() -> None:
    """ultralytics pins torch to cpu_count-1 threads (1 on a 2-core box)."""
    from ultralytics.utils import torch_utils

    torch_utils.NUM_THREADS = max(os.cpu_count() or 1, 1)


def avoid_amp_download(home: Path) -> None:
    """On a GPU, ultralytics checks AMP by loading yolo26n.pt, downloading it when it
    is missing: a stall of up to 30 s behind a firewall, then a warning. Unless the
    operator imported that weight, trust AMP on the local GPU without the check."""
    if (home / "weights" / "yolo26n.pt").exists():
        return
    from ultralytics.engine import trainer

    def _trust_amp(model: Any) -> bool:
        logger.info("AMP self-check skipped: yolo26n.pt is not on this appliance")
        return True

    trainer.check_amp = _trust_amp


@functools.cache
def default_device() -> str:
    """The device prediction uses when the operator chose 'auto'."""
    return pick_device("auto")


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested not in ("", "auto"):
        return requested
    return "0" if torch.cuda.is_available() else "cpu"


def device_summary() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return {
            "device": "cuda:0",
            "name": props.name,
            "memoryGb": round(props.total_memory / 1024**3, 1),
        }
    return {"device": "cpu", "name": "cpu", "memoryGb": 0}


def versions() -> dict[str, str]:
    import ultralytics

    return {"ultralytics": ultralytics.__version__}


# -- prediction ------------------------------------------------------------


class Predictor:
    """Keeps recently used models loaded; one lock per model, since an ultralytics
    predictor is not safe to share between threads."""

    def __init__(self, capacity: int = 4) -> None:
        self._models: OrderedDict[tuple[str, float], tuple[Any, threading.Lock]] = (
            OrderedDict()
        )
        self._lock = threading.Lock()
        self._capacity = capacity
        self._started = time.monotonic()

    def _get(self, path: Path) -> tuple[Any, threading.Lock]:
        key = (str(path), path.stat().st_mtime)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        from ultralytics import YOLO

        entry = (YOLO(str(path)), threading.Lock())
        with self._lock:
            self._models[key] = entry
            while len(self._models) > self._capacity:
                self._models.popitem(last=False)
        return entry

    def predict(
        self,
        weights: Path,
        image: Any,
        *,
        conf: float,
        iou: float,
        imgsz: int,
        normalize: bool,
        decimals: int,
        device: str,
    ) -> dict[str, Any]:
        called = time.monotonic()
        device = default_device() if device in ("", "auto") else device
        model, lock = self._get(weights)
        with lock:
            results = model.predict(
                image, conf=conf, iou=iou, imgsz=imgsz, device=device, verbose=False
            )
        images = [_result_json(r, normalize, decimals) for r in results]
        return {
            "images": images,
            "metadata": {
                "imageCount": len(images),
                "functionTimeAlive": round(time.monotonic() - self._started, 3),
                "functionTimeCall": round(time.monotonic() - called, 3),
                "model": weights.name,
                "task": model.task,
                "version": versions(),
            },
        }

    def annotate(
        self,
        weights: Path,
        image: Any,
        *,
        conf: float,
        iou: float,
        imgsz: int,
        device: str,
    ) -> dict[str, Any]:
        """Predictions for one image as label dicts of the contract's shape, with
        the model's own class ids; also the model's task and class names."""
        called = time.monotonic()
        device = default_device() if device in ("", "auto") else device
        model, lock = self._get(weights)
        with lock:
            results = model.predict(
                image, conf=conf, iou=iou, imgsz=imgsz, device=device, verbose=False
            )
        names = model.names
        return {
            "task": model.task,
            "names": [names[i] for i in sorted(names)],
            "labels": _result_labels(results[0]) if results else [],
            "seconds": round(time.monotonic() - called, 4),
        }

    def embed(
        self, weights: Path, images: list[Any], *, imgsz: int, device: str
    ) -> list[list[float]]:
        """The model's pooled features (the layer before its head) per image."""
        device = default_device() if device in ("", "auto") else device
        model, lock = self._get(weights)
        with lock:
            vectors = model.embed(images, imgsz=imgsz, device=device, verbose=False)
        return [v.detach().float().cpu().flatten().tolist() for v in vectors]

    def task_and_names(self, weights: Path) -> tuple[str, list[str]]:
        model, _ = self._get(weights)
        names = model.names
        return model.task, [names[i] for i in sorted(names)]


def _unit_list(values: Any) -> list[float]:
    return [round(min(max(float(v), 0.0), 1.0), 6) for v in values]


def _result_labels(result: Any) -> list[dict[str, Any]]:
    """One ultralytics result as contract labels (coordinates normalised 0..1)."""
    if result.probs is not None:
        return [{"classId": int(result.probs.top1)}]
    out: list[dict[str, Any]] = []
    if result.obb is not None:
        for cls, corners in zip(
            result.obb.cls.tolist(), result.obb.xyxyxyxyn.tolist(), strict=True
        ):
            flat = [v for point in corners for v in point]
            out.append({"classId": int(cls), "obb": _unit_list(flat)})
        return out
    if result.boxes is None:
        return out
    boxes = result.boxes
    for i, (cls, box) in enumerate(
        zip(boxes.cls.tolist(), boxes.xywhn.tolist(), strict=True)
    ):
        label: dict[str, Any] = {"classId": int(cls), "bbox": _unit_list(box)}
        if result.masks is not None and len(result.masks.xyn[i]) >= 3:
            label["segments"] = _unit_list(result.masks.xyn[i].reshape(-1))
        if result.keypoints is not None:
            points = result.keypoints.xyn[i].tolist()
            visible = (
                result.keypoints.conf[i].tolist()
                if result.keypoints.conf is not None
                else None
            )
            flat: list[float] = []
            for n, (x, y) in enumerate(points):
                flat += _unit_list((x, y))
                if visible is not None:
                    flat.append(2.0 if visible[n] >= 0.5 else 0.0)
            label["keypoints"] = flat
        out.append(label)
    return out


def _round(values: Any, decimals: int) -> list[float]:
    return [round(float(v), decimals) for v in values]


def _result_json(result: Any, normalize: bool, decimals: int) -> dict[str, Any]:
    height, width = result.orig_shape
    sx, sy = (1 / width, 1 / height) if normalize else (1.0, 1.0)
    names = result.names
    out: list[dict[str, Any]] = []
    if result.probs is not None:
        probs = result.probs
        for cls, score in zip(probs.top5, probs.top5conf.tolist(), strict=False):
            out.append(
                {
                    "class": int(cls),
                    "name": names[int(cls)],
                    "confidence": round(score, decimals),
                }
            )
    elif result.obb is not None:
        corners = result.obb.xyxyxyxy.tolist()
        for cls, score, pts in zip(
            result.obb.cls.tolist(), result.obb.conf.tolist(), corners, strict=True
        ):
            box = {}
            for i, (x, y) in enumerate(pts, start=1):
                box[f"x{i}"] = round(x * sx, decimals)
                box[f"y{i}"] = round(y * sy, decimals)
            out.append(
                {
                    "class": int(cls),
                    "name": names[int(cls)],
                    "confidence": round(score, decimals),
                    "box": box,
                }
            )
    elif result.boxes is not None:
        boxes = result.boxes
        for i, (cls, score, xyxy) in enumerate(
            zip(
                boxes.cls.tolist(),
                boxes.conf.tolist(),
                boxes.xyxy.tolist(),
                strict=True,
            )
        ):
            x1, y1, x2, y2 = xyxy
            item: dict[str, Any] = {
                "class": int(cls),
                "name": names[int(cls)],
                "confidence": round(score, decimals),
                "box": {
                    "x1": round(x1 * sx, decimals),
                    "y1": round(y1 * sy, decimals),
                    "x2": round(x2 * sx, decimals),
                    "y2": round(y2 * sy, decimals),
                },
            }
            if result.masks is not None:
                polygon = result.masks.xy[i]
                item["segments"] = {
                    "x": _round(polygon[:, 0] * sx, decimals),
                    "y": _round(polygon[:, 1] * sy, decimals),
                }
            if result.keypoints is not None:
                points = result.keypoints.xy[i].tolist()
                kp: dict[str, Any] = {
                    "x": [round(p[0] * sx, decimals) for p in points],
                    "y": [round(p[1] * sy, decimals) for p in points],
                }
                if result.keypoints.conf is not None:
                    kp["visible"] = _round(result.keypoints.conf[i].tolist(), decimals)
                item["keypoints"] = kp
            out.append(item)
    speed = result.speed or {}
    return {
        "shape": [height, width],
        "speed": {
            k: round(float(speed.get(k) or 0.0), 3)
            for k in ("preprocess", "inference", "postprocess")
        },
        "results": out,
    }
