"""Benchmark: archive ingest against raw decoding, and image listing on a big dataset.

Part 1 writes N small JPEG and PNG images with YOLO labels into a zip, uploads it
to a real appliance (the app with its Huey consumer, in this process, through
Starlette's TestClient) and ingests it, then decodes the same files in a plain
loop (Pillow and OpenCV) and prints both rates and their ratio.

Part 2 inserts a synthetic dataset of M image rows straight into the store (no
files: listing never opens them) and times listing pages with several sorts and
filters, and the dataset's class-stats, over HTTP. It prints p50 and p95 in ms.

    python scripts/bench_ingest.py            # 10,000 images, 100,000 rows
    python scripts/bench_ingest.py --quick    # a smoke run in a few seconds
"""

from __future__ import annotations

import argparse
import io
import logging
import random
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw
from starlette.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.app import create_app  # noqa: E402
from appliance.ids import new_image_id, now, parse_time  # noqa: E402
from appliance.keys import create_key  # noqa: E402
from appliance.settings import load_settings  # noqa: E402

CLASSES = ["person", "car", "dog", "cat", "bike", "bus", "tree", "sign", "cup", "box"]
UNLIMITED = {
    k: 0 for k in ("default", "training", "upload", "predict", "export", "download")
}


def _image(index: int, rng: random.Random) -> tuple[bytes, str, str]:
    """One small picture (a gradient with boxes) and its YOLO label text."""
    size = rng.choice((48, 64, 80, 96))
    grad = np.linspace(0, 255, size, dtype=np.uint8)
    pixels = np.stack(
        [
            np.tile(grad, (size, 1)),
            np.tile(grad[:, None], (1, size)),
            np.full((size, size), index % 256, np.uint8),
        ],
        axis=2,
    )
    # The index, written as three flat 8x8 blocks (which JPEG keeps), makes every
    # picture's content unique, so none is skipped as a duplicate.
    for block, value in enumerate((index >> 16 & 255, index >> 8 & 255, index & 255)):
        pixels[:8, block * 8 : block * 8 + 8] = value
    image = Image.fromarray(pixels)
    draw = ImageDraw.Draw(image)
    lines = []
    for _ in range(rng.randint(0, 3)):
        w, h = rng.uniform(0.1, 0.5), rng.uniform(0.1, 0.5)
        cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
        cls = rng.randrange(len(CLASSES))
        draw.rectangle(
            [
                (cx - w / 2) * size,
                (cy - h / 2) * size,
                (cx + w / 2) * size,
                (cy + h / 2) * size,
            ],
            outline=(255, 255, 255),
        )
        lines.append(f"{cls} {cx:.5f} {cy:.5f} {w:.5f} {h:.5f}")
    buffer = io.BytesIO()
    ext = "png" if index % 4 == 0 else "jpg"
    image.save(buffer, "PNG" if ext == "png" else "JPEG", quality=90)
    return buffer.getvalue(), ext, "\n".join(lines) + ("\n" if lines else "")


def build_archive(path: Path, count: int) -> list[bytes]:
    rng = random.Random(7)
    blobs = []
    names = ", ".join(f"{i}: {n}" for i, n in enumerate(CLASSES))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(
            "bench/data.yaml",
            f"path: .\ntrain: images/train\nval: images/val\nnames: {{{names}}}\n",
        )
        for i in range(count):
            data, ext, label = _image(i, rng)
            split = "val" if i % 5 == 0 else "train"
            archive.writestr(f"bench/images/{split}/img{i:06d}.{ext}", data)
            archive.writestr(f"bench/labels/{split}/img{i:06d}.txt", label)
            blobs.append(data)
    return blobs


def decode_rates(blobs: list[bytes]) -> tuple[float, float]:
    started = time.perf_counter()
    for data in blobs:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    pil = len(blobs) / (time.perf_counter() - started)
    started = time.perf_counter()
    for data in blobs:
        cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    opencv = len(blobs) / (time.perf_counter() - started)
    return pil, opencv


def _app(home: Path):
    settings = load_settings(
        environ={}, home=str(home), public_url="http://testserver"
    ).with_overrides(rate_limits=UNLIMITED, ip_rate_limit=0)
    app = create_app(settings)
    db = app.state.services.db
    user = db.create_user("bench")
    return app, {"Authorization": f"Bearer {create_key(db, user['id'])}"}


def bench_ingest(
    client: TestClient, headers: dict, app, count: int, folder: Path
) -> None:
    archive = folder / "bench.zip"
    started = time.perf_counter()
    blobs = build_archive(archive, count)
    print(
        f"generated {count} images ({archive.stat().st_size / 1e6:.1f} MB zip) in {time.perf_counter() - started:.1f} s"
    )
    client.post(
        "/api/datasets",
        json={"dataset": "ingested", "name": "Ingested"},
        headers=headers,
    )
    data = archive.read_bytes()
    session = client.post(
        "/api/upload/signed-url",
        json={
            "assetType": "datasets",
            "assetId": "ingested",
            "filename": "bench.zip",
            "contentType": "application/zip",
            "totalBytes": len(data),
        },
        headers=headers,
    ).json()
    client.put(session["uploadUrl"], content=data, headers=session.get("headers") or {})
    started = time.perf_counter()
    job = client.post(
        "/api/datasets/bench/ingested/ingest",
        json={"sessionId": session["sessionId"]},
        headers=headers,
    ).json()
    while True:
        row = client.get(f"/api/jobs/{job['jobId']}", headers=headers).json()["job"]
        if row["status"] not in ("queued", "running"):
            break
        time.sleep(0.05)
    wall = time.perf_counter() - started
    dataset = client.get("/api/datasets/bench/ingested", headers=headers).json()[
        "dataset"
    ]
    inside = (
        parse_time(row["finishedAt"]) - parse_time(row["startedAt"])
    ).total_seconds()
    summary = dataset.get("lastIngestSummary") or {}
    print(
        f"  ingest summary: added {summary.get('added')}, errors {summary.get('errors')},"
        f" skipped {summary.get('skippedCounts')}"
    )
    pil, opencv = decode_rates(blobs)
    ingest_rate = dataset["imageCount"] / wall
    print(
        f"ingest: {dataset['imageCount']} images, job {row['status']}, dataset"
        f" {dataset['status']}, {wall:.2f} s from request to done"
        f" ({inside:.2f} s inside the job)"
    )
    print(
        f"  ingest rate         {ingest_rate:9.0f} images/s ({dataset['imageCount'] / inside:.0f}/s inside the job)"
    )
    print(
        f"  raw decode, Pillow  {pil:9.0f} images/s   ingest/decode = {ingest_rate / pil:.3f}"
    )
    print(
        f"  raw decode, OpenCV  {opencv:9.0f} images/s   ingest/decode = {ingest_rate / opencv:.3f}"
    )


def build_big(app, rows: int) -> str:
    db = app.state.services.db
    owner = db.user_by_name("bench")
    dataset = db.create_dataset(
        owner_id=owner["id"],
        slug="big",
        name="Big",
        task="detect",
        visibility="private",
        class_names=CLASSES,
    )
    rng = random.Random(11)

    def synthetic():
        for i in range(rows):
            labels = [
                {
                    "classId": rng.randrange(len(CLASSES)),
                    "bbox": [0.5, 0.5, round(rng.uniform(0.05, 0.9), 4), 0.3],
                }
                for _ in range(rng.choice((0, 0, 1, 1, 2, 3, 5)))
            ]
            yield {
                "id": new_image_id(),
                "hash": f"{rng.getrandbits(128):032x}",
                "ext": "jpg",
                "name": f"img_{i:07d}.jpg",
                "width": rng.choice((320, 640, 1280)),
                "height": rng.choice((240, 480, 720)),
                "bytes": rng.randint(5_000, 900_000),
                "split": rng.choices(("train", "val", "test"), (80, 15, 5))[0],
                "labels": labels or None,
                "label_count": len(labels),
            }

    started = time.perf_counter()
    db.replace_images(dataset["id"], synthetic(), [], "bench", updated_at=now())
    print(
        f"\ninserted {rows} synthetic image rows in {time.perf_counter() - started:.1f} s"
    )
    return dataset["id"]


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]
    return f"p50 {statistics.median(ordered):8.1f} ms   p95 {p95:8.1f} ms"


def time_get(
    client: TestClient, url: str, headers: dict, repeats: int
) -> tuple[int, list[float]]:
    samples, status = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        response = client.get(url, headers=headers)
        samples.append((time.perf_counter() - started) * 1000)
        status = response.status_code
        if status != 200:
            break
    return status, samples


def bench_listing(client: TestClient, headers: dict, rows: int, repeats: int) -> None:
    base = "/api/datasets/bench/big/images"
    deep = max(rows // 2, 0)
    queries = [
        "",
        "?sort=oldest",
        "?sort=name-asc",
        f"?sort=name-asc&offset={deep}",
        "?sort=size-desc",
        "?sort=labels-desc",
        "?split=val",
        "?hasLabel=false&sort=size-asc",
        "?search=img_00012",
        "?limit=1000&includeThumbnails=false",
    ]
    print(f"listing {rows} images, {repeats} requests each:")
    for query in queries:
        status, samples = time_get(client, base + query, headers, repeats)
        label = query or "(default: newest, 50 a page)"
        if status != 200:
            print(f"  {label:42s} HTTP {status}")
            continue
        print(f"  {label:42s} {_percentiles(samples)}")
    stats = "/api/datasets/bench/big/class-stats"
    cold = []
    for n in range(max(1, repeats // 4)):
        # A change to the dataset invalidates the cached statistics.
        client.patch(
            "/api/datasets/bench/big", json={"description": f"run {n}"}, headers=headers
        )
        status, samples = time_get(client, stats, headers, 1)
        cold += samples
    if status in (404, 405):
        print(f"  class-stats: skipped, the route answers {status} on this build")
    elif status != 200:
        print(f"  class-stats: HTTP {status}")
    else:
        print(f"  {'class-stats, computed (after a change)':42s} {_percentiles(cold)}")
        status, samples = time_get(client, stats, headers, repeats)
        print(f"  {'class-stats, cached':42s} {_percentiles(samples)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="images to ingest")
    parser.add_argument(
        "--rows", type=int, default=100_000, help="rows in the listing dataset"
    )
    parser.add_argument(
        "--repeats", type=int, default=20, help="requests per listing query"
    )
    parser.add_argument(
        "--quick", action="store_true", help="300 images, 5,000 rows, 5 requests"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.rows, args.repeats = 300, 5_000, 5
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        folder = Path(tmp)
        app, headers = _app(folder / "home")
        with TestClient(app) as client:
            bench_ingest(client, headers, app, args.images, folder)
            build_big(app, args.rows)
            bench_listing(client, headers, args.rows, args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
