"""Benchmark: one training run through the appliance against stock `yolo train`.

Both train yolo26n from its YAML on the same generated dataset (64 images of
64x64 pixels with one coloured box each, 52 in train and 12 in val) with the same
arguments (imgsz 64, batch 16, workers 0, no plots, seed 0) on the same device
(the first CUDA GPU when there is one, else the CPU), in one run:

* the appliance: the real app with its job queue, in this process, driven over
  HTTP through Starlette's TestClient. The dataset is uploaded and ingested
  first (timed apart); the training is timed from POST /api/training/start to
  the job's completion, which includes laying the dataset out, the trainer's
  child process, its start-up and storing the weights;
* directly: `yolo train` in a subprocess on the same images, laid out as a YOLO
  folder, timed from start to exit (its own start-up included).

It prints both wall times and their ratio (appliance / direct). A throwaway
`import ultralytics` in a subprocess runs first, so neither side pays for a cold
file cache.

    python scripts/bench_training.py            # 3 epochs
    python scripts/bench_training.py --quick    # 1 epoch, a smoke run
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from PIL import Image, ImageDraw
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance import vision  # noqa: E402
from appliance.app import create_app  # noqa: E402
from appliance.keys import create_key  # noqa: E402
from appliance.settings import load_settings  # noqa: E402

NAMES = ["red", "green", "blue"]
COLOURS = [(220, 40, 40), (40, 220, 40), (40, 40, 220)]
UNLIMITED = {
    k: 0 for k in ("default", "training", "upload", "predict", "export", "download")
}


def build_dataset(folder: Path, count: int, size: int) -> tuple[Path, Path]:
    """A YOLO folder with data.yaml, and the same files as a zip; returns both."""
    rng = random.Random(0)
    root = folder / "boxes"
    files: dict[str, bytes] = {}
    for index in range(count):
        split = "val" if index % 5 == 4 and index < 60 else "train"
        cls = rng.randrange(len(NAMES))
        w, h = rng.uniform(0.2, 0.6), rng.uniform(0.2, 0.6)
        cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
        image = Image.new("RGB", (size, size), (rng.randrange(80),) * 3)
        box = [(cx - w / 2) * size, (cy - h / 2) * size]
        box += [(cx + w / 2) * size, (cy + h / 2) * size]
        ImageDraw.Draw(image).rectangle(box, fill=COLOURS[cls])
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        files[f"images/{split}/{index:04d}.jpg"] = buffer.getvalue()
        label = f"{cls} {cx:.5f} {cy:.5f} {w:.5f} {h:.5f}\n"
        files[f"labels/{split}/{index:04d}.txt"] = label.encode()
    names = ", ".join(f"{i}: {n}" for i, n in enumerate(NAMES))
    files["data.yaml"] = (
        f"train: images/train\nval: images/val\nnames: {{{names}}}\n".encode()
    )
    archive = folder / "boxes.zip"
    with zipfile.ZipFile(archive, "w") as out:
        for name, data in files.items():
            out.writestr(f"boxes/{name}", data)
            target = root / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    yaml = root / "data.yaml"
    yaml.write_text(f"path: {root}\n" + files["data.yaml"].decode())
    return yaml, archive


def _device() -> str:
    import torch

    return "0" if torch.cuda.is_available() else "cpu"


def _env(home: Path) -> dict[str, str]:
    vision.prepare_offline(home)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(vision.offline_environment(home))
    return env


def warm_up(home: Path) -> None:
    subprocess.run(
        [sys.executable, "-c", "import ultralytics, torch"],
        env=_env(home),
        check=True,
    )


def through_appliance(
    home: Path, archive: Path, train_args: dict, device: str
) -> tuple[float, float, dict]:
    """(ingest seconds, training seconds, the finished job)."""
    settings = load_settings(environ={}, home=str(home), public_url="http://testserver")
    app = create_app(
        settings.with_overrides(rate_limits=UNLIMITED, ip_rate_limit=0, device=device)
    )
    db = app.state.services.db
    headers = {
        "Authorization": f"Bearer {create_key(db, db.create_user('bench')['id'])}"
    }
    with TestClient(app) as client:

        def call(method: str, path: str, **kwargs) -> dict:
            response = client.request(method, path, headers=headers, **kwargs)
            if response.status_code >= 300:
                raise RuntimeError(f"{method} {path}: {response.text}")
            return response.json()

        started = time.perf_counter()
        call("POST", "/api/datasets", json={"dataset": "boxes", "name": "Boxes"})
        data = archive.read_bytes()
        session = call(
            "POST",
            "/api/upload/signed-url",
            json={
                "assetType": "datasets",
                "assetId": "boxes",
                "filename": archive.name,
                "contentType": "application/zip",
                "totalBytes": len(data),
            },
        )
        client.put(session["uploadUrl"], content=data)
        call(
            "POST",
            "/api/datasets/bench/boxes/ingest",
            json={"sessionId": session["sessionId"]},
        )
        while (
            call("GET", "/api/datasets/bench/boxes")["dataset"]["status"]
            == "processing"
        ):
            time.sleep(0.1)
        ingest = time.perf_counter() - started

        call("POST", "/api/projects", json={"project": "bench", "name": "Bench"})
        model = call("POST", "/api/models", json={"project": "bench", "model": "run"})
        started = time.perf_counter()
        call(
            "POST",
            "/api/training/start",
            json={
                "modelId": model["id"],
                "trainArgs": {**train_args, "data": "ul://bench/datasets/boxes"},
            },
        )
        while True:
            job = call("GET", "/api/models/bench/bench/run/training")["job"]
            if job and job["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.1)
        return ingest, time.perf_counter() - started, job


def directly(
    home: Path, data_yaml: Path, train_args: dict, device: str
) -> tuple[float, int]:
    """(seconds, exit code) of stock `yolo train` on the same data."""
    yolo = Path(sys.executable).with_name("yolo")
    command = [str(yolo), "train", f"data={data_yaml}", f"device={device}"]
    command += [f"{key}={value}" for key, value in train_args.items()]
    command += [f"project={home / 'runs'}", "name=direct", "exist_ok=True"]
    started = time.perf_counter()
    run = subprocess.run(
        command, env=_env(home), cwd=home, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if run.returncode != 0:
        print(run.stdout[-2000:] + run.stderr[-2000:], file=sys.stderr)
    return elapsed, run.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64, help="images to generate")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--imgsz", type=int, default=64)
    parser.add_argument("--quick", action="store_true", help="1 epoch")
    parser.add_argument(
        "--keep", type=Path, help="work in this folder and keep it (logs, runs)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs = 1
    logging.basicConfig(level=logging.WARNING)
    train_args = {
        "model": "yolo26n.yaml",
        "epochs": args.epochs,
        "imgsz": args.imgsz,
        "batch": 16,
        "workers": 0,
        "plots": False,
        "seed": 0,
    }
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        data_yaml, archive = build_dataset(folder, args.images, args.size)
        device = _device()
        print(
            f"yolo26n.yaml, {args.images} images {args.size}x{args.size},"
            f" {args.epochs} epoch(s), imgsz {args.imgsz}, batch 16, device {device}"
        )
        warm_up(folder / "direct")
        seconds, code = directly(folder / "direct", data_yaml, train_args, device)
        if code != 0:
            print(f"yolo train failed with exit code {code}", file=sys.stderr)
            return 1
        ingest, through, job = through_appliance(
            folder / "appliance", archive, train_args, device
        )
        if job["status"] != "completed":
            print(f"the appliance's job ended {job['status']}: {job.get('error')}")
            return 1
    print(f"  appliance: ingest {ingest:6.1f} s (not in the ratio)")
    print(f"  appliance: training {through:6.1f} s (start request to completed job)")
    print(f"  yolo train directly {seconds:6.1f} s (process start to exit)")
    print(f"  ratio appliance / direct: {through / seconds:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
