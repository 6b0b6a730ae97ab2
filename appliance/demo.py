"""`appliance demo`: the whole job, through the REST API only, with the stock SDK.

Start (or reach) an appliance, create a dataset, upload and ingest the bundled
sample, train, predict on a real photo, export ONNX, check that it loads, and
print what each step took."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .settings import load_settings

logger = logging.getLogger(__name__)
DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(
    url: str, key: str, proc: subprocess.Popen | None = None, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the appliance exited with code {proc.returncode}")
        try:
            response = httpx.get(
                f"{url}/api/account/summary",
                headers={"Authorization": f"Bearer {key}"},
                timeout=2,
            )
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the appliance at {url} did not answer within {timeout:.0f} s")


@contextmanager
def local_appliance(home: Path) -> Iterator[tuple[str, str]]:
    """An appliance on a free loopback port under `home`, and a fresh API key."""
    from .keys import create_key
    from .server import ensure_owner, lock_home
    from .store import Database

    settings = load_settings(home=str(home))
    settings.home.mkdir(parents=True, exist_ok=True)
    lock_home(settings.home).close()  # fails clearly if an appliance already runs here
    owner, key = ensure_owner(settings)
    if key is not None:
        sys.stdout.write(
            f"Created owner account '{owner['username']}' in {settings.home}."
            f" API key (shown once, keep it safe):\n{key}\n"
        )
    else:
        db = Database(settings.db_path)
        key = create_key(db, owner["id"], "demo")
        db.close()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(settings.home / "demo-server.log", "ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "appliance",
            "serve",
            "--home",
            str(settings.home),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        wait_ready(url, key, proc)
        yield url, key
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class Steps:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.times: list[tuple[str, float, str]] = []

    @contextmanager
    def step(self, title: str) -> Iterator[list[str]]:
        self.console.print(f"[bold]→ {title}[/bold]")
        note: list[str] = []
        started = time.monotonic()
        yield note
        self.times.append((title, time.monotonic() - started, " ".join(note)))

    def poll(
        self,
        title: str,
        check: Callable[[], tuple[float, str, bool]],
        interval: float = 1.0,
    ) -> None:
        """Show a progress bar until check() says done; check returns (percent, text, done)."""
        columns = (
            TextColumn("  {task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>5.1f}%"),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self.console, transient=False) as bar:
            task = bar.add_task(title, total=100, info="")
            while True:
                percent, text, done = check()
                bar.update(task, completed=percent, info=text)
                if done:
                    return
                time.sleep(interval)


def _load_sample_builder():
    spec = importlib.util.spec_from_file_location(
        "make_sample", DATA_DIR / "make_sample.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_demo(args: argparse.Namespace) -> int:
    console = Console()
    settings = load_settings(home=args.home)
    if args.url:
        if not args.key:
            console.print("[red]--url needs --key[/red]")
            return 2
        return _demo(console, args.url.rstrip("/"), args.key, settings.home, args)
    with local_appliance(settings.home) as (url, key):
        console.print(f"appliance running at {url} (data home {settings.home})")
        return _demo(console, url, key, settings.home, args)


def _demo(
    console: Console, url: str, key: str, home: Path, args: argparse.Namespace
) -> int:
    from ultralytics_platform import Platform

    client = Platform(base_url=url, api_key=key, timeout=120)
    steps = Steps(console)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    owner = client.account.summary()["username"]
    slug = f"demo-{stamp}"

    with steps.step("create dataset") as note:
        client.datasets.create(dataset=slug, name=f"Demo sample {stamp}", task="detect")
        note.append(f"{owner}/{slug}")

    with steps.step("upload the sample archive") as note:
        archive = _load_sample_builder().build_sample(
            home / "cache" / "demo-sample.zip"
        )
        size = archive.stat().st_size
        session = client.upload.signed_url(
            body={
                "assetType": "datasets",
                "assetId": slug,
                "filename": archive.name,
                "contentType": "application/zip",
                "totalBytes": size,
            }
        )
        with open(archive, "rb") as handle:
            response = httpx.put(
                session["uploadUrl"],
                content=handle.read(),
                headers=session.get("headers") or {},
                timeout=300,
            )
        response.raise_for_status()
        client.upload.complete(session_id=session["sessionId"])
        note.append(f"{size / 1e6:.1f} MB")

    with steps.step("ingest") as note:
        client.datasets.ingest(owner, slug, body={"sessionId": session["sessionId"]})

        def ingest_state():
            dataset = client.datasets.retrieve(owner, slug)["dataset"]
            done = dataset["status"] != "processing"
            return (100.0 if done else 50.0), dataset["status"], done

        steps.poll("ingest", ingest_state, 0.5)
        dataset = client.datasets.retrieve(owner, slug)["dataset"]
        if dataset["status"] != "ready":
            console.print(f"[red]ingest failed: {dataset.get('processingError')}[/red]")
            return 1
        images = client.datasets.images(owner, slug, limit=100)["images"]
        note.append(
            f"{dataset['imageCount']} images, {dataset['annotationCount']} boxes, classes {dataset['classNames']}"
        )
        console.print(f"  {note[-1]}; {len(images)} listed")

    project = "demo"
    with steps.step("create project and model") as note:
        try:
            client.projects.create(project=project, name="Demo")
        except Exception as exc:  # already there from an earlier demo
            if getattr(exc, "status_code", None) != 409:
                raise
        created = client.models.create(
            body={
                "owner": owner,
                "project": project,
                "model": f"bus-{stamp}",
                "name": f"Demo model {stamp}",
            }
        )
        model = created["model"]
        note.append(f"{owner}/{project}/{model}")

    with steps.step(
        f"train yolo26n from its YAML, {args.epochs} epochs at imgsz {args.imgsz}"
    ) as note:
        client.training.start(
            model_id=created["id"],
            train_args={
                "model": "yolo26n.yaml",
                "data": f"ul://{owner}/datasets/{slug}",
                "epochs": args.epochs,
                "imgsz": args.imgsz,
                "seed": 0,
                # 12 images: small batches and no gradient accumulation give
                # enough optimizer steps to learn them from scratch.
                "batch": 4,
                "nbs": 4,
            },
        )

        def training_state():
            job = client.models.training(owner, project, model)["job"]
            if job is None:
                return 0.0, "queued", False
            info = f"epoch {job['progress']['currentEpoch']}/{job['progress']['totalEpochs']} {job['status']}"
            return (
                job["progress"]["percentage"],
                info,
                job["status"] in ("completed", "failed", "cancelled"),
            )

        steps.poll("training", training_state, 1.0)
        job = client.models.training(owner, project, model)["job"]
        if job["status"] != "completed":
            console.print(
                f"[red]training {job['status']}: {(job.get('error') or {}).get('message')}[/red]"
            )
            return 1
        metrics = client.models.retrieve(owner, project, model)["model"].get(
            "metrics", {}
        )
        note.append(f"mAP50 {metrics.get('mAP50', 0):.3f}")

    with steps.step("predict on bus.jpg") as note:
        photo = _load_sample_builder().photos_dir() / "bus.jpg"
        with open(photo, "rb") as handle:
            result = client.models.predict(
                owner,
                project,
                model,
                body={
                    "file": ("bus.jpg", handle, "image/jpeg"),
                    "conf": 0.1,
                    "imgsz": args.imgsz,
                },
            )
        detections = result["images"][0]["results"]
        table = Table("class", "confidence", "box (x1, y1, x2, y2)")
        for det in detections[:20]:
            box = det["box"]
            table.add_row(
                det["name"],
                f"{det['confidence']:.2f}",
                f"{box['x1']:.0f}, {box['y1']:.0f}, {box['x2']:.0f}, {box['y2']:.0f}",
            )
        console.print(table)
        note.append(f"{len(detections)} detections")
        if not detections:
            console.print("[yellow]no detections: train longer (--epochs)[/yellow]")

    with steps.step("export ONNX and load it") as note:
        export = client.exports.create(
            owner, project, model, format="onnx", args={"imgsz": args.imgsz}
        )

        def export_state():
            row = client.exports.retrieve(owner, project, model, export["id"])["export"]
            done = row["status"] in ("completed", "failed", "cancelled")
            return (100.0 if done else 50.0), row["status"], done

        steps.poll("export", export_state, 1.0)
        row = client.exports.retrieve(owner, project, model, export["id"])["export"]
        if row["status"] != "completed":
            console.print(
                f"[red]export {row['status']}: {(row.get('error') or {}).get('message')}[/red]"
            )
            return 1
        target = home / "cache" / row["file"]["downloadFilename"]
        target.write_bytes(httpx.get(row["file"]["downloadUrl"], timeout=120).content)
        outputs = check_onnx(target, args.imgsz)
        note.append(f"{target.stat().st_size / 1e6:.1f} MB, output {outputs}")

    summary = Table("step", "seconds", "result", title="demo summary")
    for title, seconds, text in steps.times:
        summary.add_row(title, f"{seconds:.1f}", text)
    summary.add_row("total", f"{sum(t for _, t, _ in steps.times):.1f}", "")
    console.print(summary)
    return 0 if detections else 1


def check_onnx(path: Path, imgsz: int) -> list[tuple[int, ...]]:
    """Load an ONNX file with ONNX Runtime and run one blank image through it."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(
        str(path), providers=["CPUExecutionProvider"]
    )
    feed = np.zeros((1, 3, imgsz, imgsz), dtype=np.float32)
    outputs = session.run(None, {session.get_inputs()[0].name: feed})
    return [tuple(o.shape) for o in outputs]
