"""Assemble the bundled detection sample as a YOLO archive.

The photographs are the two that ship inside the installed ultralytics package;
their boxes were drawn by hand (sample/labels.yaml). Each photo also yields a few
flipped and cropped variants, so a small model can learn them from scratch. No
image is downloaded or committed.

    python data/make_sample.py [OUT.zip]
"""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import yaml
from PIL import Image

HERE = Path(__file__).resolve().parent
LABELS = HERE / "sample" / "labels.yaml"
#: (name, crop box as fractions of width/height, mirrored)
VARIANTS = [
    ("full", (0.0, 0.0, 1.0, 1.0), False),
    ("flip", (0.0, 0.0, 1.0, 1.0), True),
    ("top", (0.0, 0.0, 1.0, 0.8), False),
    ("bottom", (0.0, 0.2, 1.0, 1.0), True),
    ("left", (0.0, 0.0, 0.8, 1.0), False),
    ("right", (0.2, 0.0, 1.0, 1.0), True),
]
MIN_VISIBLE = 0.4  # keep a box in a crop only if this much of it remains


def photos_dir() -> Path:
    import ultralytics

    return Path(ultralytics.__file__).resolve().parent / "assets"


def _yolo_rows(
    boxes: list[list[float]], crop: tuple[int, int, int, int], mirrored: bool
) -> list[str]:
    cx1, cy1, cx2, cy2 = crop
    width, height = cx2 - cx1, cy2 - cy1
    rows = []
    for cls, x1, y1, x2, y2 in boxes:
        ix1, iy1, ix2, iy2 = max(x1, cx1), max(y1, cy1), min(x2, cx2), min(y2, cy2)
        if ix2 <= ix1 or iy2 <= iy1:
            continue
        if (ix2 - ix1) * (iy2 - iy1) < MIN_VISIBLE * (x2 - x1) * (y2 - y1):
            continue
        bx1, bx2 = ix1 - cx1, ix2 - cx1
        if mirrored:
            bx1, bx2 = width - bx2, width - bx1
        by1, by2 = iy1 - cy1, iy2 - cy1
        rows.append(
            f"{int(cls)} {(bx1 + bx2) / 2 / width:.6f} {(by1 + by2) / 2 / height:.6f}"
            f" {(bx2 - bx1) / width:.6f} {(by2 - by1) / height:.6f}"
        )
    return rows


def build_sample(out: Path) -> Path:
    """Write the archive: data.yaml, images/{train,val}, labels/{train,val}."""
    spec = yaml.safe_load(LABELS.read_text())
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "sample/data.yaml",
            yaml.safe_dump(
                {
                    "path": ".",
                    "train": "images/train",
                    "val": "images/val",
                    "names": dict(enumerate(spec["names"])),
                },
                sort_keys=False,
            ),
        )
        for filename, entry in spec["images"].items():
            photo = Image.open(photos_dir() / filename).convert("RGB")
            if list(photo.size) != entry["size"]:
                raise SystemExit(
                    f"{filename} is {photo.size}, the labels were drawn on {entry['size']}"
                )
            stem = Path(filename).stem
            for name, (fx1, fy1, fx2, fy2), mirrored in VARIANTS:
                w, h = photo.size
                crop = (round(fx1 * w), round(fy1 * h), round(fx2 * w), round(fy2 * h))
                image = photo.crop(crop)
                if mirrored:
                    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                split = "val" if name == "full" else "train"
                buffer = io.BytesIO()
                image.save(buffer, "JPEG", quality=90)
                archive.writestr(
                    f"sample/images/{split}/{stem}_{name}.jpg", buffer.getvalue()
                )
                rows = _yolo_rows(entry["boxes"], crop, mirrored)
                archive.writestr(
                    f"sample/labels/{split}/{stem}_{name}.txt", "\n".join(rows) + "\n"
                )
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "build" / "sample.zip"
    print(build_sample(target))
