"""Where an ingest reads its files from: an archive, or one uploaded NDJSON file
that looks like an archive of one member."""

from __future__ import annotations

import tarfile
import zipfile
import zlib
from pathlib import Path

from ..archive import Archive, Member, Skipped
from ..errors import Invalid
from .plan import MemberError

#: Largest label, YAML, JSON or NDJSON file read whole into memory.
MAX_TEXT_BYTES = 256 * 1024**2


class SingleFile:
    """An uploaded .ndjson: the one member of its own archive."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.skipped: list[Skipped] = []
        self.renamed: dict[str, str] = {}
        self.members = {name: Member(name, path.stat().st_size)}

    def __enter__(self) -> SingleFile:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def names(self) -> list[str]:
        return list(self.members)

    def read(self, name: str) -> bytes:
        return self.path.read_bytes()


Source = Archive | SingleFile


def open_source(path: Path, filename: str) -> Source:
    if filename.lower().endswith(".ndjson"):
        return SingleFile(path, filename)
    return Archive(path)


def read_member(source: Source, name: str, limit: int) -> bytes:
    """A member's bytes; a damaged or oversized member is that file's problem only."""
    size = source.members[name].size
    if size > limit:
        raise MemberError("file_too_large", f"{size} bytes; the limit is {limit}")
    try:
        return source.read(name)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise MemberError(
            "unreadable_member", f"damaged in the archive: {exc}"
        ) from None
    except Invalid as exc:
        raise MemberError("file_too_large", exc.message) from None


def read_text(source: Source, name: str) -> str:
    try:
        return read_member(source, name, MAX_TEXT_BYTES).decode("utf-8", "replace")
    except MemberError as exc:
        raise Invalid(f"{name}: {exc.detail}") from None
