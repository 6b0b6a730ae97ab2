"""Shared fixtures. ultralytics is kept offline for the whole test session: the
variables below are set before anything can import it."""

from __future__ import annotations

import atexit
import io
import os
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

_SESSION_HOME = Path(tempfile.mkdtemp(prefix="appliance-tests-"))
atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)
os.environ.update(
    {
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "0",
        "YOLO_CONFIG_DIR": str(_SESSION_HOME / "ultralytics"),
        "MPLCONFIGDIR": str(_SESSION_HOME / "mpl"),
        "PIP_NO_INDEX": "1",
    }
)
os.environ.pop("ULTRALYTICS_API_KEY", None)
os.environ.pop("APPLIANCE_HOME", None)

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "data"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def jpeg_bytes(
    size=(64, 64), color=(200, 30, 30), mode="RGB", fmt="JPEG", **save
) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, size, color if mode == "RGB" else None).save(buffer, fmt, **save)
    return buffer.getvalue()


def base_files(prefix: str = "ds/") -> dict[str, bytes]:
    """The cases file's BASE: four 64x64 JPEGs, a and b in train, c and d in val,
    one box each, and a data.yaml with two classes."""
    files = {
        f"{prefix}data.yaml": b"path: .\ntrain: images/train\nval: images/val\nnames: {0: a, 1: b}\n",
    }
    colors = {
        "a": (200, 30, 30),
        "b": (30, 200, 30),
        "c": (30, 30, 200),
        "d": (200, 200, 30),
    }
    for split, stems in {"train": "ab", "val": "cd"}.items():
        for stem in stems:
            files[f"{prefix}images/{split}/{stem}.jpg"] = jpeg_bytes(color=colors[stem])
            files[f"{prefix}labels/{split}/{stem}.txt"] = b"0 0.5 0.5 0.25 0.25\n"
    return files


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


@pytest.fixture
def base_zip(tmp_path: Path) -> Path:
    return write_zip(tmp_path / "base.zip", base_files())


def make_app(
    home: Path, username: str = "alice", *, run_queue: bool = True, **overrides
):
    """The real app on a data home (signed URLs on the test client's host) with one
    user; returns the app and that user's API key."""
    from appliance.app import create_app
    from appliance.keys import create_key
    from appliance.settings import load_settings

    settings = load_settings(environ={}, home=str(home), public_url="http://testserver")
    app = create_app(settings.with_overrides(**overrides), run_queue=run_queue)
    user = app.state.services.db.create_user(username)
    return app, create_key(app.state.services.db, user["id"])


def dataset_upload_body(
    filename: str = "ds.zip", total: int = 1, content_type: str = "application/zip"
) -> dict:
    """A POST /api/upload/signed-url body for a dataset archive."""
    return {
        "assetType": "datasets",
        "assetId": "x",
        "filename": filename,
        "contentType": content_type,
        "totalBytes": total,
    }


def train_tiny_detector(folder: Path, names=("green", "red")) -> Path:
    """A real yolo26n detector trained for one epoch at imgsz 32 on eight 64x64
    images of coloured squares, with its class-score biases raised so that it
    always predicts boxes (one epoch alone leaves every score near zero)."""
    from appliance import vision

    saved = dict(os.environ)
    try:
        vision.import_ultralytics(folder / "home")
        return _train_tiny(folder, names)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _train_tiny(folder: Path, names) -> Path:
    from PIL import Image, ImageDraw
    from ultralytics import YOLO

    root = folder / "squares"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(4):
            image = Image.new("RGB", (64, 64), (30, 30, 30))
            colour = (220, 40, 40) if i % 2 else (40, 220, 40)
            ImageDraw.Draw(image).rectangle([16, 16, 48, 48], fill=colour)
            image.save(root / "images" / split / f"{i}.jpg")
            (root / "labels" / split / f"{i}.txt").write_text(
                f"{i % 2} 0.5 0.5 0.5 0.5\n"
            )
    listing = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
    (root / "data.yaml").write_text(
        f"path: {root}\ntrain: images/train\nval: images/val\nnames: {{{listing}}}\n"
    )
    model = YOLO("yolo26n.yaml")
    model.train(
        data=str(root / "data.yaml"),
        epochs=1,
        imgsz=32,
        batch=4,
        workers=0,
        plots=False,
        val=False,
        device="cpu",
        project=str(folder / "runs"),
        name="tiny",
        exist_ok=True,
        verbose=False,
    )
    trained = YOLO(str(Path(model.trainer.save_dir) / "weights" / "last.pt"))
    head = trained.model.model[-1]
    for branch in ("cv3", "one2one_cv3"):
        for layers in getattr(head, branch, []):
            layers[-1].bias.data.fill_(4.0)
    weights = folder / "tiny.pt"
    trained.save(str(weights))
    return weights


def store_images(app, dataset_id: str, images: list[dict]) -> list[dict]:
    """Store real image bytes and their rows (name, data, split, labels) directly,
    as an ingest would; returns the rows in name order."""
    from PIL import Image

    services = app.state.services
    rows = []
    for item in images:
        digest, _ = services.blobs.put_image(item["data"], item.get("ext", "jpg"))
        with Image.open(io.BytesIO(item["data"])) as image:
            width, height = image.size
        labels = item.get("labels")
        rows.append(
            {
                "hash": digest,
                "ext": item.get("ext", "jpg"),
                "name": item["name"],
                "width": width,
                "height": height,
                "bytes": len(item["data"]),
                "split": item.get("split", "train"),
                "labels": labels,
                "label_count": len(labels or []),
            }
        )
    services.db.replace_images(dataset_id, rows, [], "setup")
    return services.db.all_images(dataset_id)


def add_images(db, dataset_id: str, specs: list[dict], blobs=None) -> list[dict]:
    """Images straight into a dataset (no ingest): each spec gives at least a
    name; labels, split, width and height default. With `blobs`, a real small
    JPEG is stored for each, so its signed URL serves bytes."""
    rows = []
    for n, spec in enumerate(specs):
        data = jpeg_bytes(
            size=(8, 8), color=(n * 40 % 256, n * 90 % 256, n * 150 % 256)
        )
        digest = blobs.put_image(data, "jpg")[0] if blobs else f"{n:032x}"
        labels = spec.get("labels")
        rows.append(
            {
                "hash": spec.get("hash", digest),
                "ext": "jpg",
                "name": spec["name"],
                "width": spec.get("width", 64),
                "height": spec.get("height", 48),
                "bytes": spec.get("bytes", len(data)),
                "split": spec.get("split", "train"),
                "labels": labels,
                "label_count": len(labels or []),
            }
        )
    db.replace_images(dataset_id, rows, [], "test")
    return db.query(
        "SELECT * FROM images WHERE dataset_id = ? ORDER BY name", [dataset_id]
    )


class Api:
    """A signed-in caller of the in-process app: JSON calls that assert their
    status, dataset ingest that waits for the job, image listing and NDJSON."""

    def __init__(self, client, key: str) -> None:
        self.client = client
        self.auth = {"Authorization": f"Bearer {key}"}

    def __call__(self, method: str, path: str, status: int = 200, **kwargs) -> dict:
        response = self.client.request(method, path, headers=self.auth, **kwargs)
        assert response.status_code == status, response.text
        return response.json()

    def ingest(self, slug: str, filename: str, data: bytes, **options) -> dict:
        session = self(
            "POST",
            "/api/upload/signed-url",
            json=dataset_upload_body(filename, len(data), "application/octet-stream"),
        )
        assert self.client.put(session["uploadUrl"], content=data).status_code == 200
        self(
            "POST",
            f"/api/datasets/alice/{slug}/ingest",
            201,
            json={"sessionId": session["sessionId"], **options},
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            dataset = self("GET", f"/api/datasets/alice/{slug}")["dataset"]
            if dataset["status"] != "processing":
                return dataset
            time.sleep(0.05)
        raise AssertionError("ingest did not finish")

    def images(self, slug: str) -> list[dict]:
        listed = self(
            "GET",
            f"/api/datasets/alice/{slug}/images?limit=1000&includeLabels=true"
            "&includeThumbnails=false",
        )
        return sorted(listed["images"], key=lambda i: i["hash"])

    def ndjson(self, slug: str, version: int | None = None) -> bytes:
        query = f"?v={version}" if version else ""
        url = self("GET", f"/api/datasets/alice/{slug}/export{query}")["downloadUrl"]
        response = self.client.get(url)
        assert response.status_code == 200
        return response.content


def tiny_checkpoint(
    path: Path, *, nc: int = 2, names=None, task: str = "detect", **extra
) -> Path:
    """A real ultralytics checkpoint of an untrained model built from its YAML
    (yolo26n, yolo26n-seg, -pose, -obb or -cls for the task) with `nc` classes, saved as the
    trainer saves one (EMA weights in half precision, train args and metrics)
    and stripped as at the end of training. `names` may disagree with `nc`;
    `extra` adds top-level keys."""
    from appliance import vision

    saved = dict(os.environ)
    try:
        vision.import_ultralytics(path.parent / "ul-home")
        return _tiny_checkpoint(path, nc, names, task, extra)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _tiny_checkpoint(path: Path, nc: int, names, task: str, extra: dict) -> Path:
    from copy import deepcopy
    from datetime import datetime

    import torch
    from ultralytics import __version__
    from ultralytics.cfg import get_cfg
    from ultralytics.nn import tasks
    from ultralytics.utils.torch_utils import strip_optimizer

    kind, suffix = {
        "detect": (tasks.DetectionModel, ""),
        "segment": (tasks.SegmentationModel, "-seg"),
        "pose": (tasks.PoseModel, "-pose"),
        "obb": (tasks.OBBModel, "-obb"),
        "classify": (tasks.ClassificationModel, "-cls"),
    }[task]
    model = kind(f"yolo26n{suffix}.yaml", nc=nc, verbose=False)
    names = names if names is not None else [f"class{i}" for i in range(nc)]
    model.names = dict(enumerate(names))
    args = get_cfg(
        overrides={
            "model": "yolo26n.yaml",
            "data": str(path.parent / "data.yaml"),
            "epochs": 3,
            "imgsz": 32,
            "task": task,
            "device": "cpu",
        }
    )
    checkpoint = {
        "epoch": 2,
        "best_fitness": 0.25,
        "model": None,
        "ema": deepcopy(model).half(),
        "updates": 3,
        "optimizer": None,
        "scaler": None,
        "train_args": vars(args),
        "train_metrics": {
            "metrics/precision(B)": 0.5,
            "metrics/recall(B)": 0.4,
            "metrics/mAP50(B)": 0.3,
            "metrics/mAP50-95(B)": 0.2,
            "fitness": 0.25,
        },
        "train_results": {"epoch": [1, 2, 3], "metrics/mAP50(B)": [0.1, 0.2, 0.3]},
        "date": datetime.now().isoformat(),
        "version": __version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
        **extra,
    }
    torch.save(checkpoint, path)
    strip_optimizer(path)
    return path


def fused_checkpoint(path: Path) -> Path:
    """yolo26n built from its YAML, fused (convolutions and batch norms
    folded) and saved with `YOLO.save`, as a model used for inference is."""
    from appliance import vision

    saved = dict(os.environ)
    try:
        vision.import_ultralytics(path.parent / "ul-home")
        from ultralytics import YOLO

        model = YOLO("yolo26n.yaml")
        model.fuse()
        model.save(str(path))
        return path
    finally:
        os.environ.clear()
        os.environ.update(saved)
