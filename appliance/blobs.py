"""The filesystem blob store: content-addressed images and named job outputs.

Every path segment is validated before it reaches the disk, and every write goes
to a temporary file that is renamed into place, so a reader never sees half a
file and a crash never leaves one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import Invalid

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_HASH = re.compile(r"^[0-9a-f]{32}$")
IMAGE_EXTS = frozenset({"jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff"})


def content_hash(data: bytes) -> str:
    """The 32-hex content address of a blob (the first half of its SHA-256)."""
    return hashlib.sha256(data).hexdigest()[:32]


def check_segment(segment: str) -> str:
    if not _SEGMENT.match(segment) or segment in {".", ".."} or ".." in segment:
        raise Invalid(f"invalid path segment: {segment!r}")
    return segment


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------

    def path(self, *segments: str) -> Path:
        """The path of a named blob; each segment is validated."""
        return self.root.joinpath(*(check_segment(s) for s in segments))

    def image_path(self, digest: str, ext: str) -> Path:
        if not _HASH.match(digest) or ext not in IMAGE_EXTS:
            raise Invalid("invalid image reference")
        return self.root / "images" / digest[:2] / f"{digest}.{ext}"

    # -- writing -----------------------------------------------------------

    @contextmanager
    def writer(self, target: Path, *, durable: bool = True) -> Iterator[BinaryIO]:
        """Open a temporary file that becomes `target` only if the block succeeds.
        With durable=False the data is not forced to disk here: the caller calls
        `sync()` once before it records the files (many small files, one flush)."""
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp, prefix="w-")
        try:
            with os.fdopen(fd, "wb") as handle:
                yield handle
                handle.flush()
                if durable:
                    os.fsync(handle.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def put_bytes(self, target: Path, data: bytes, *, durable: bool = True) -> Path:
        with self.writer(target, durable=durable) as handle:
            handle.write(data)
        return target

    def put_image(
        self, data: bytes, ext: str, *, durable: bool = True
    ) -> tuple[str, Path]:
        """Store image bytes under their content hash; identical content is stored once."""
        digest = content_hash(data)
        target = self.image_path(digest, ext)
        try:
            # Already stored: mark it in use, so a sweep leaves it (see sweep.py).
            os.utime(target)
        except FileNotFoundError:
            self.put_bytes(target, data, durable=durable)
        return digest, target

    @staticmethod
    def sync() -> None:
        """Force every written file to disk (after non-durable writes)."""
        os.sync()

    def put_file(self, target: Path, source: Path) -> Path:
        with self.writer(target) as handle, open(source, "rb") as src:
            shutil.copyfileobj(src, handle, 1024 * 1024)
        return target

    def remove_tree(self, *segments: str) -> None:
        shutil.rmtree(self.path(*segments), ignore_errors=True)
