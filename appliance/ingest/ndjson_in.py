"""Ultralytics NDJSON in: a header line (task, class_names, kpt_shape, flip_idx),
then one line per image with its split and annotations. As the client does, only
the first key's list of `annotations` is used.

An image comes from the archive the NDJSON sits in (by `file`, next to it), or,
for this appliance's own signed `/files/images/...` URLs, from the blob store.
Any other URL is never fetched: the appliance is offline."""

from __future__ import annotations

import json
import posixpath
from collections import Counter
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..blobs import BlobStore
from ..errors import Invalid
from ..labels import TASKS
from ..signing import Signer
from .images import MAX_IMAGE_BYTES
from .labels import LabelError, ParsedLabels, infer_kpt_shape, parse_yolo
from .plan import Context, Entry, MemberError, Plan
from .sources import Source, read_member, read_text

SPLITS = ("train", "val", "test")
MAX_LINES = 2_000_000


def find_ndjson(names: list[str]) -> str | None:
    found = sorted(
        (n for n in names if n.lower().endswith(".ndjson")),
        key=lambda n: (n.count("/"), n),
    )
    return found[0] if found else None


def plan_ndjson(
    source: Source,
    names: list[str],
    ndjson_name: str,
    blobs: BlobStore,
    signer: Signer | None,
) -> Plan:
    lines = [
        line for line in read_text(source, ndjson_name).splitlines() if line.strip()
    ]
    if len(lines) > MAX_LINES:
        raise Invalid(f"{ndjson_name} has {len(lines)} lines; the limit is {MAX_LINES}")
    if not lines:
        raise Invalid(f"{ndjson_name} is empty")
    header = _json(lines[0], ndjson_name, 1)
    if header.get("type") not in (None, "dataset") or "file" in header:
        raise Invalid(f"{ndjson_name} line 1 must be the dataset header")
    plan = Plan(format="ndjson")
    plan.verdicts.append((ndjson_name, "accepted", None, "Ultralytics NDJSON"))
    _header(plan, header, ndjson_name)
    folder = posixpath.dirname(ndjson_name)
    members = set(names)
    used = {ndjson_name}
    lengths: Counter = Counter()
    for number, line in enumerate(lines[1:], start=2):
        where = f"{ndjson_name}:{number}"
        try:
            record = _json(line, ndjson_name, number)
            entry = _entry(record, where, folder, members, source, blobs, signer)
        except (Invalid, _Refused) as exc:
            reason = exc.reason if isinstance(exc, _Refused) else "malformed_record"
            plan.verdicts.append((where, "rejected", reason, exc.message))
            continue
        if entry.path in members:
            used.add(entry.path)
        plan.entries.append(entry)
        for row in _first_rows(record.get("annotations")):
            if isinstance(row, list):
                lengths[len(row)] += 1
    if lengths:
        common = lengths.most_common(1)[0][0]
        plan.kpt_guess = infer_kpt_shape(Counter({common - 5: 1}))
    for name in names:
        if name not in used:
            plan.verdicts.append(
                (name, "rejected", "not_used", "not named by the NDJSON")
            )
    return plan


class _Refused(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def _json(line: str, name: str, number: int) -> dict:
    try:
        value = json.loads(line)
    except ValueError:
        raise Invalid(f"{name} line {number} is not JSON") from None
    if not isinstance(value, dict):
        raise Invalid(f"{name} line {number} is not a JSON object")
    return value


def _header(plan: Plan, header: dict, name: str) -> None:
    task = header.get("task", "detect")
    if task not in TASKS:
        raise Invalid(
            f"{name}: task {str(task)[:20]!r} is not one of {', '.join(TASKS)}"
        )
    plan.task = task
    names = header.get("class_names") or {}
    if not isinstance(names, dict):
        raise Invalid(f"{name}: class_names must be an object of index to name")
    try:
        indexed = {int(k): str(v) for k, v in names.items()}
    except (TypeError, ValueError):
        raise Invalid(f"{name}: class_names keys must be integers") from None
    size = max(indexed) + 1 if indexed else 0
    plan.class_names = [indexed.get(i, f"class{i}") for i in range(size)]
    shape = header.get("kpt_shape")
    if (
        isinstance(shape, list)
        and len(shape) == 2
        and all(isinstance(v, int) for v in shape)
    ):
        plan.kpt_shape = list(shape)
    flip = header.get("flip_idx")
    if isinstance(flip, list) and all(isinstance(v, int) for v in flip):
        plan.flip_idx = list(flip)


def _entry(record, where, folder, members, source, blobs, signer) -> Entry:
    file = record.get("file")
    if (
        not isinstance(file, str)
        or not file
        or "/" in file
        or "\\" in file
        or file in (".", "..")
    ):
        raise _Refused("malformed_record", "`file` must be a plain file name")
    split = record.get("split")
    if split not in SPLITS:
        raise _Refused(
            "malformed_record", f"split must be train, val or test, got {split!r}"
        )
    member = _member(folder, file, split, members)
    if member is not None:
        read = lambda: read_member(source, member, MAX_IMAGE_BYTES)  # noqa: E731
        path = member
    else:
        read = _url_reader(record.get("url"), blobs, signer)
        path = f"{where} {file}"
    metadata = record.get("metadata")
    return Entry(
        path=path,
        name=file,
        split=split,
        read=read,
        labels=_maker(record.get("annotations")),
        label_path=None,
        metadata=metadata if isinstance(metadata, dict) else None,
    )


def _member(folder: str, file: str, split: str, members: set[str]) -> str | None:
    for candidate in (
        posixpath.join(folder, file),
        posixpath.join(folder, "images", split, file),
        posixpath.join(folder, "images", file),
    ):
        if candidate in members:
            return candidate
    return None


def _url_reader(url, blobs: BlobStore, signer: Signer | None):
    if not isinstance(url, str) or not url:
        raise _Refused("missing_image", "no such file next to the NDJSON and no url")
    local = _local_blob(url, blobs, signer)

    def read() -> bytes:
        if not local.is_file():
            raise MemberError("missing_image", "the signed URL names no stored image")
        return local.read_bytes()

    return read


def _local_blob(url: str, blobs: BlobStore, signer: Signer | None) -> Path:
    """The stored image a signed URL of this appliance points at (a thumbnail's
    URL stands for the image it was made from); any other URL is refused, since
    nothing is fetched."""
    parts = urlsplit(url)
    base = urlsplit(signer.base_url) if signer else None
    path = unquote(parts.path)
    ours = base is not None and (parts.scheme, parts.netloc) == (
        base.scheme,
        base.netloc,
    )
    thumbnail = path.startswith("/files/thumbnails/")
    if ours and not (thumbnail or path.startswith("/files/images/")):
        raise _Refused(
            "not_an_image_url",
            f"the URL is this appliance's {path.split('?')[0]}, which is not an image"
            " file (/files/images/... or /files/thumbnails/...)",
        )
    if not ours:
        raise _Refused(
            "remote_url_offline",
            f"{parts.netloc or 'the url'} is not this appliance, and this appliance"
            " is offline and fetches nothing: put the image in the archive next to"
            " the NDJSON",
        )
    query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
    if not signer.verify("GET", path, query.get("expires"), query.get("signature")):
        raise _Refused(
            "invalid_signature",
            "the URL names this appliance but its signature is wrong or expired;"
            " export the dataset again for fresh URLs",
        )
    segments = path.split("/")[3:]
    digest, _, ext = segments[-1].partition(".")
    try:
        if len(segments) != 2:
            raise Invalid("not an image path")
        if thumbnail:
            return _image_of_thumbnail(blobs, digest)
        return blobs.image_path(digest, ext)
    except Invalid:
        raise _Refused("missing_image", "the URL names no stored image") from None


def _image_of_thumbnail(blobs: BlobStore, digest: str) -> Path:
    """The full image a thumbnail was made from: the same content hash."""
    if not digest or not all(c in "0123456789abcdef" for c in digest):
        raise Invalid("not a thumbnail path")
    for candidate in sorted(blobs.path("images", digest[:2]).glob(f"{digest}.*")):
        return candidate
    raise _Refused(
        "missing_image",
        "the URL is a thumbnail of this appliance, but the image it was made from"
        " is no longer stored; export the dataset again",
    )


def _maker(annotations):
    def make(ctx: Context, width: int, height: int) -> ParsedLabels:
        rows = _first_rows(annotations)
        if ctx.task == "classify":
            if not rows:
                return ParsedLabels()
            text = str(rows[0])
        else:
            if not all(isinstance(r, list) for r in rows):
                raise LabelError(
                    "malformed_row", "annotation rows must be lists of numbers"
                )
            text = "\n".join(" ".join(str(v) for v in r) for r in rows)
        return parse_yolo(text, ctx.task, ctx.class_count, ctx.kpt_shape)

    return make


def _first_rows(annotations) -> list:
    if not isinstance(annotations, dict) or not annotations:
        return []
    rows = next(iter(annotations.values()))
    return rows if isinstance(rows, list) else []
