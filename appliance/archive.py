"""Reading uploaded archives without trusting them.

Members are read straight from the archive, never extracted by name, so a hostile
path cannot write anywhere. Links, absolute or escaping paths and encrypted
entries are reported and skipped; size and count limits stop decompression bombs.
"""

from __future__ import annotations

import posixpath
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .errors import Invalid

ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")
ENCRYPTED = (
    "encrypted_archive: password-protected archives are not supported;"
    " upload it without a password"
)
_JUNK_NAMES = frozenset({".ds_store", "thumbs.db", "desktop.ini"})


#: Absolute budgets on what an archive may expand to: one member, and all of them.
MAX_MEMBER_BYTES = 1024**3
MAX_TOTAL_BYTES = 50 * 1024**3
#: Compression ratios are only checked above this many expanded bytes (a member,
#: or a compressed tar as a whole): flat-coloured BMPs or TIFFs legitimately
#: compress a few hundred times over, so a ratio alone proves nothing.
RATIO_FLOOR_BYTES = 200 * 1024**2
#: Above the floor, expanding more than this many times over is a bomb.
MAX_RATIO = 100


@dataclass(frozen=True)
class Limits:
    max_members: int = 500_000
    max_member_bytes: int = MAX_MEMBER_BYTES
    max_total_bytes: int = MAX_TOTAL_BYTES
    #: A member (or a compressed tar) that expands past `ratio_floor` bytes and
    #: more than `max_ratio` times its compressed size is treated as a bomb.
    max_ratio: int = MAX_RATIO
    ratio_floor: int = RATIO_FLOOR_BYTES

    def is_bomb(self, expanded: int, packed: int) -> bool:
        return (
            expanded > self.ratio_floor and expanded > max(packed, 1) * self.max_ratio
        )


@dataclass(frozen=True)
class Member:
    name: str  # normalised, relative, '/'-separated, valid UTF-8
    size: int


@dataclass(frozen=True)
class Skipped:
    name: str
    reason: str
    detail: str


def refuse_encrypted(path: Path) -> None:
    """Refuse a password-protected zip at once (its central directory says so)."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            encrypted = any(info.flag_bits & 0x1 for info in archive.infolist())
    except (zipfile.BadZipFile, OSError):
        return  # the ingest job reports what is wrong with it
    if encrypted:
        raise Invalid(ENCRYPTED)


def is_archive_name(filename: str) -> bool:
    return filename.lower().endswith(ARCHIVE_SUFFIXES)


def is_junk(name: str) -> bool:
    """Files operating systems add to archives: never images, labels or YAML."""
    parts = name.split("/")
    base = parts[-1].lower()
    return "__MACOSX" in parts or base.startswith("._") or base in _JUNK_NAMES


def display_name(raw: str) -> str:
    """A member name that can be stored and shown: tar names that are not UTF-8
    arrive with surrogate escapes; their undecodable bytes become U+FFFD."""
    try:
        raw.encode("utf-8")
        return raw
    except UnicodeEncodeError:
        data = raw.encode("utf-8", "surrogateescape")
        return data.decode("utf-8", "replace")


def _clean_name(raw: str) -> str | None:
    """A safe relative name, or None when the name is absolute or escapes the root.

    Backslashes are folders (zip tools on Windows write `images\\train\\a.jpg`)."""
    name = display_name(raw).replace("\\", "/")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return None
    norm = posixpath.normpath(name)
    if norm in (".", "") or norm.startswith("../") or norm == "..":
        return None
    return norm


class Archive:
    """A read-only view of a zip or tar archive's regular files."""

    def __init__(self, path: Path, limits: Limits | None = None) -> None:
        self.path = path
        self.limits = limits or Limits()
        self.members: dict[str, Member] = {}
        self.skipped: list[Skipped] = []
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        #: Normalised name -> the entry to read it by (its raw name stays there).
        self._zip_members: dict[str, zipfile.ZipInfo] = {}
        self._tar_members: dict[str, tarfile.TarInfo] = {}
        #: Normalised names that differ from the raw ones beyond slashes.
        self.renamed: dict[str, str] = {}
        self._open()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._zip:
            self._zip.close()
        if self._tar:
            self._tar.close()

    # -- opening -----------------------------------------------------------

    def _open(self) -> None:
        try:
            if zipfile.is_zipfile(self.path):
                self._open_zip()
            else:
                self._tar = tarfile.open(self.path, "r:*")
                self._open_tar()
        except UnicodeDecodeError as exc:
            self.close()
            raise Invalid(
                "the zip marks its file names as UTF-8 but one is not"
                f" ({exc.object[:60]!r}); re-create the archive with a current zip tool"
            ) from exc
        except (
            zipfile.BadZipFile,
            tarfile.TarError,
            EOFError,
            OSError,
            zlib.error,
        ) as exc:
            self.close()
            raise Invalid(f"not a readable zip or tar archive ({exc})") from exc
        total = sum(m.size for m in self.members.values())
        self._check_totals(total, len(self.members), self.path.stat().st_size)

    def _check_totals(self, total: int, count: int, packed: int) -> None:
        if count > self.limits.max_members:
            raise Invalid(
                f"archive holds more than {self.limits.max_members} files, the limit"
            )
        if total > self.limits.max_total_bytes:
            raise Invalid(
                f"archive expands to more than {self.limits.max_total_bytes} bytes, the limit"
            )
        if self.limits.is_bomb(total, packed):
            raise Invalid(
                f"compression_ratio: the archive expands to {total} bytes,"
                f" {total // max(packed, 1)} times over; above"
                f" {self.limits.ratio_floor} bytes the limit is {self.limits.max_ratio}"
            )

    def _accept(self, raw: str, size: int, compressed: int | None) -> str | None:
        name = _clean_name(raw)
        if name is None:
            self.skipped.append(
                Skipped(
                    display_name(raw),
                    "unsafe_path",
                    "absolute path or one that leaves the archive",
                )
            )
            return None
        if is_junk(name):
            return None
        if size > self.limits.max_member_bytes:
            self.skipped.append(Skipped(name, "file_too_large", f"{size} bytes"))
            return None
        if compressed is not None and self.limits.is_bomb(size, compressed):
            self.skipped.append(
                Skipped(
                    name,
                    "compression_ratio",
                    f"{size} bytes from {compressed}: over {self.limits.max_ratio}"
                    f" times above {self.limits.ratio_floor} bytes",
                )
            )
            return None
        if name in self.members:
            # The first copy is the one read; say so on the one that is not.
            self.skipped.append(
                Skipped(
                    name,
                    "duplicate_path",
                    "the archive holds this path more than once: the first copy"
                    " was used, this later one ignored",
                )
            )
            return None
        if display_name(raw) != raw:
            self.renamed[name] = (
                "the name is not valid UTF-8; undecodable bytes shown as \ufffd"
            )
        self.members[name] = Member(name, size)
        return name

    def _open_zip(self) -> None:
        self._zip = zipfile.ZipFile(self.path)
        for info in self._zip.infolist():
            if info.is_dir():
                continue
            if info.flag_bits & 0x1:
                raise Invalid(ENCRYPTED)
            mode = (info.external_attr >> 16) & 0o170000
            if mode == 0o120000:
                self.skipped.append(
                    Skipped(info.filename, "link", "symbolic links are not followed")
                )
                continue
            name = self._accept(info.filename, info.file_size, info.compress_size)
            if name:
                self._zip_members[name] = info

    def _open_tar(self) -> None:
        assert self._tar is not None
        # A compressed tar is read as a stream: stop at the header that would take
        # the archive past its limits, before decompressing that member's data.
        packed = max(self.path.stat().st_size, 1)
        total = count = 0
        for info in self._tar:
            total += max(info.size, 0)
            count += 1
            self._check_totals(total, count, packed)
            if info.isdir():
                continue
            if info.issym() or info.islnk():
                self.skipped.append(
                    Skipped(display_name(info.name), "link", "links are not followed")
                )
                continue
            if not info.isfile():
                self.skipped.append(
                    Skipped(
                        display_name(info.name), "special_file", "not a regular file"
                    )
                )
                continue
            name = self._accept(info.name, info.size, None)
            if name:
                self._tar_members[name] = info

    # -- reading -----------------------------------------------------------

    def names(self) -> list[str]:
        return sorted(self.members)

    def open(self, name: str) -> IO[bytes]:
        if self._zip:
            return self._zip.open(self._zip_members[name])
        assert self._tar is not None
        handle = self._tar.extractfile(self._tar_members[name])
        if handle is None:
            raise Invalid(f"cannot read {name}")
        return handle

    def read(self, name: str) -> bytes:
        limit = self.limits.max_member_bytes
        with self.open(name) as handle:
            data = handle.read(limit + 1)
        if len(data) > limit:
            raise Invalid(f"{name} is larger than {limit} bytes")
        return data
