"""Image normalisation, as the Platform does it: sniff the real format, apply EXIF
orientation, convert to 8-bit RGB, repair truncated JPEGs, refuse what is too
small, shrink what is too large, and make a thumbnail. The user's original file
is never modified; a fixed copy is stored."""

from __future__ import annotations

import io
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np
from pi_heif import register_heif_opener
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

# Phones save HEIC; decode it here rather than rely on ultralytics, whose patched
# Image.open would otherwise try to install this plugin on the first unknown file.
register_heif_opener()

#: The Platform's limits: 50 MB per image file, larger images resized so that the
#: longest side is 4096 px, 256 px thumbnails. The smallest side we keep is ours.
MAX_IMAGE_BYTES = 50 * 1024**2
MAX_SIDE = 4096
MIN_SIDE = 8
MAX_PIXELS = 100_000_000
THUMBNAIL_SIDE = 256
JPEG_QUALITY = 95
_KEEP_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}
_SUFFIX_FORMATS = {
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "png": "PNG",
    "webp": "WEBP",
    "bmp": "BMP",
    "gif": "GIF",
    "tif": "TIFF",
    "tiff": "TIFF",
}
_TRUNCATED = threading.Lock()


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
    thumbnail: bytes
    fixes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _decode(data: bytes, allow_truncated: bool) -> Image.Image:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > MAX_PIXELS:
            raise ImageRejected(
                "too_large",
                f"{image.width}x{image.height} is over {MAX_PIXELS} pixels",
            )
        if allow_truncated:
            # Pillow reads this switch from its module; hold a lock while it is on.
            with _TRUNCATED:
                ImageFile.LOAD_TRUNCATED_IMAGES = True
                try:
                    image.load()
                finally:
                    ImageFile.LOAD_TRUNCATED_IMAGES = False
        else:
            image.load()
    return image


def _open(data: bytes) -> tuple[Image.Image, list[str]]:
    if not data:
        raise ImageRejected("not_an_image", "empty file")
    try:
        image = _decode(data, False)
        truncated = image.format == "JPEG" and not data.rstrip(b"\0").endswith(
            b"\xff\xd9"
        )
        return image, ["truncated_jpeg_restored"] if truncated else []
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
        if "truncated" not in str(exc).lower():
            raise ImageRejected("corrupt_image", f"cannot decode: {exc}") from None
    try:
        return _decode(data, True), ["truncated_jpeg_restored"]
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageRejected(
            "corrupt_image", f"truncated and cannot be restored: {exc}"
        ) from None


def normalise(data: bytes, name: str = "") -> NormalImage:
    """Decode, check and normalise one image; raises ImageRejected."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageRejected(
            "file_too_large", f"{len(data)} bytes; the limit is {MAX_IMAGE_BYTES}"
        )
    image, fixes = _open(data)
    fmt = image.format or ""
    notes = _format_notes(fmt, name)
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
    thumbnail = make_thumbnail(image)
    if not fixes and fmt in _KEEP_FORMATS:
        return NormalImage(
            data, _KEEP_FORMATS[fmt], width, height, thumbnail, notes=notes
        )
    if fmt not in _KEEP_FORMATS and not fixes:
        fixes.append(f"re-encoded {fmt or 'unknown format'} as JPEG")
    buffer = io.BytesIO()
    if fmt == "PNG":
        image.save(buffer, "PNG")
        ext = "png"
    else:
        image.save(buffer, "JPEG", quality=JPEG_QUALITY)
        ext = "jpg"
    return NormalImage(buffer.getvalue(), ext, width, height, thumbnail, fixes, notes)


def make_thumbnail(image: Image.Image) -> bytes:
    """A JPEG whose longest side is THUMBNAIL_SIDE (never enlarged)."""
    small = image.copy()
    small.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    buffer = io.BytesIO()
    small.convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def _format_notes(fmt: str, name: str) -> list[str]:
    suffix = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    expected = _SUFFIX_FORMATS.get(suffix)
    if expected and fmt and expected != fmt:
        return [f"format={fmt.lower()} (named .{suffix})"]
    return []


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except (ValueError, TypeError, OSError, SyntaxError):
        return 1  # a broken EXIF block is not a broken image


#: Modes with more than 8 bits a channel: brought to 8-bit grey first.
_DEEP_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
#: Premultiplied alpha: made straight alpha before the background is filled in.
_PREMULTIPLIED = {"La": "LA", "RGBa": "RGBA"}


def _to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB from any Pillow mode; a mode that cannot be converted is this
    image's `unsupported_mode` rejection."""
    mode = image.mode
    try:
        if mode in _DEEP_MODES:
            image = _to_8bit(image)
        if image.mode in _PREMULTIPLIED:
            image = image.convert(_PREMULTIPLIED[image.mode])
        if image.mode == "P":
            image = image.convert("RGBA")
        if image.mode in ("RGBA", "LA", "PA"):
            rgba = image.convert("RGBA")
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(rgba, mask=rgba.split()[-1])
            return background
        return image.convert("RGB")
    except (ValueError, OSError, TypeError) as exc:
        raise ImageRejected(
            "unsupported_mode", f"cannot convert a {mode} image to 8-bit RGB ({exc})"
        ) from None


def _to_8bit(image: Image.Image) -> Image.Image:
    """Grey levels of a 16-bit, 32-bit integer or float image, scaled to 0-255:
    16-bit by its full range, 32-bit integers by the range they use, floats as
    0-1 when they stay in it, else clipped to 0-255."""
    values = np.asarray(image, dtype=np.float64)
    values = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
    top = float(values.max()) if values.size else 0.0
    if image.mode.startswith("I;16"):
        values = values / 257.0
    elif image.mode == "I" and top > 255:
        values = values * (255.0 / (65535.0 if top <= 65535 else top))
    elif image.mode == "F" and float(values.min(initial=0.0)) >= 0 and top <= 1.0:
        values = values * 255.0
    return Image.fromarray(np.clip(values, 0, 255).round().astype(np.uint8), "L")
