"""Image normalisation, as the Platform does it: sniff the real format, apply EXIF
orientation, convert to 8-bit RGB, refuse what is too small, shrink what is too
large. The user's original file is never modified; a fixed copy is stored."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

from pi_heif import register_heif_opener
from PIL import Image, ImageOps, UnidentifiedImageError

# Phones save HEIC; decode it here rather than rely on ultralytics, whose patched
# Image.open would otherwise try to install this plugin on the first unknown file.
register_heif_opener()

MIN_SIDE = 8
MAX_SIDE = 8192
MAX_PIXELS = 100_000_000
_KEEP_FORMATS = {
    "JPEG": "jpg",
    "PNG": "png",
    "WEBP": "webp",
    "BMP": "bmp",
}  # HEIF etc. become JPEG


class ImageRejected(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass
class NormalImage:
    data: bytes
    ext: str
    width: int
    height: int
    fixes: list[str] = field(default_factory=list)


def _open(data: bytes) -> Image.Image:
    if not data:
        raise ImageRejected("not_an_image", "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.width * image.height > MAX_PIXELS:
                raise ImageRejected(
                    "too_large",
                    f"{image.width}x{image.height} is over {MAX_PIXELS} pixels",
                )
            image.load()
    except ImageRejected:
        raise
    except (
        UnidentifiedImageError,
        ImportError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise ImageRejected(
            "not_an_image", f"not a readable image ({exc.__class__.__name__})"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected("corrupt_image", f"cannot decode: {exc}") from None
    return image


def normalise(data: bytes) -> NormalImage:
    image = _open(data)
    fmt = image.format or ""
    fixes: list[str] = []
    if _orientation(image) not in (0, 1):
        image = ImageOps.exif_transpose(image)
        fixes.append("exif_orientation_applied")
    if image.mode != "RGB":
        fixes.append(f"converted {image.mode} to RGB")
        image = _to_rgb(image)
    width, height = image.size
    if min(width, height) < MIN_SIDE:
        raise ImageRejected(
            "too_small", f"{width}x{height}; each side must be at least {MIN_SIDE} px"
        )
    if max(width, height) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE))
        fixes.append(f"resized from {width}x{height} to {image.width}x{image.height}")
        width, height = image.size
    if not fixes and fmt in _KEEP_FORMATS:
        return NormalImage(data, _KEEP_FORMATS[fmt], width, height)
    if fmt not in _KEEP_FORMATS and not fixes:
        fixes.append(f"re-encoded {fmt or 'unknown format'} as JPEG")
    buffer = io.BytesIO()
    if fmt == "PNG":
        image.save(buffer, "PNG", optimize=False)
        ext = "png"
    else:
        image.save(buffer, "JPEG", quality=95)
        ext = "jpg"
    return NormalImage(buffer.getvalue(), ext, width, height, fixes)


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # a broken EXIF block is not a broken image
        return 1


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        image = image.point(lambda v: v / 256).convert("L")
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA"):
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").split()[-1])
        return background
    return image.convert("RGB")
