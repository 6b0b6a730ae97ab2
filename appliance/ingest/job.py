"""The ingest job: every file in the archive ends accepted, fixed or rejected.

Nothing is visible until the end: images are stored content-addressed as they
are read (harmless if the job dies), and the rows that make them part of the
dataset are written in one transaction."""

from __future__ import annotations

import logging
import posixpath
import tarfile
import time
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..archive import Archive
from ..blobs import BlobStore
from ..errors import Invalid
from ..ids import now
from ..store import Database
from .images import ImageRejected, normalise
from .labels import LabelError, parse_detect
from .layout import IMAGE_SUFFIXES, YAML_SUFFIXES, discover

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
MAX_IMAGE_BYTES = 100 * 1024**2
MAX_LABEL_BYTES = 16 * 1024**2


@dataclass
class IngestOptions:
    conflict_policy: str = "skip"  # skip | keep_both | replace
    target_split: str | None = None


@dataclass
class _Run:
    report: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    #: Hashes whose existing images this ingest replaces (conflictPolicy=replace).
    replaced: set[str] = field(default_factory=set)

    def verdict(
        self,
        path: str,
        verdict: str,
        reason: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.report.append(
            {"path": path, "verdict": verdict, "reason": reason, "detail": detail}
        )


def _merge_classes(
    existing: list[str], incoming: list[str]
) -> tuple[list[str], dict[int, int]]:
    """Map the archive's class indices onto the dataset's, by name, appending new names."""
    names = list(existing)
    position = {name: i for i, name in enumerate(names)}
    mapping: dict[int, int] = {}
    for index, name in enumerate(incoming):
        if name not in position:
            position[name] = len(names)
            names.append(name)
        mapping[index] = position[name]
    return names, mapping


def run_ingest(
    db: Database,
    blobs: BlobStore,
    dataset_id: str,
    job_id: str,
    archive_path: Path,
    options: IngestOptions,
    progress: Progress,
) -> dict:
    """Ingest one archive into a dataset; returns the summary stored on the dataset."""
    started = time.monotonic()
    dataset = db.dataset(dataset_id)
    if dataset is None:
        raise Invalid("dataset no longer exists")
    if dataset["task"] != "detect":
        raise Invalid(
            f"ingest of {dataset['task']} datasets is not supported yet; use a detect dataset"
        )
    run = _Run()
    with Archive(archive_path) as archive:
        for skipped in archive.skipped:
            run.verdict(skipped.name, "rejected", skipped.reason, skipped.detail)
        names = archive.names()
        layout = discover(names, lambda n: archive.read(n).decode("utf-8", "replace"))
        class_names, mapping = _merge_classes(
            dataset["class_names"] or [], layout.names
        )
        class_count = len(layout.names) if layout.yaml_name else None
        _report_other_files(run, names, layout)
        known = db.image_hashes(dataset_id)
        total = max(len(layout.items), 1)
        for done, item in enumerate(layout.items, start=1):
            _ingest_item(
                run, archive, blobs, item, class_count, mapping, known, options
            )
            if done % 25 == 0 or done == total:
                progress(90.0 * done / total, f"read {done}/{total} images")
    if class_count is None:
        # No YAML: classes are the ids used, named by placeholder.
        used = max(
            (lab["classId"] for r in run.rows for lab in (r["labels"] or [])),
            default=-1,
        )
        class_names = class_names + [
            f"class{i}" for i in range(len(class_names), used + 1)
        ]
    summary = _summary(run, time.monotonic() - started)
    fields = {
        "class_names": class_names,
        "ingest_summary": summary,
        "ingest_job_id": job_id,
        "status": "ready",
        "processing_error": None,
    }
    if not run.rows and not db.dataset_stats(dataset_id).get("images"):
        reasons = (
            ", ".join(f"{k}: {v}" for k, v in summary["skippedCounts"].items())
            or "no images found"
        )
        fields["status"] = "failed"
        fields["processing_error"] = {
            "message": f"no usable image in the archive ({reasons})",
            "timestamp": now(),
        }
    progress(95.0, "saving")
    db.replace_images(
        dataset_id, run.rows, run.report, job_id, remove=run.replaced, **fields
    )
    logger.info("ingest %s into %s: %s", job_id, dataset_id, summary)
    return summary


def _report_other_files(run: _Run, names: list[str], layout) -> None:
    images = {item.image for item in layout.items}
    labels = {item.label for item in layout.items if item.label}
    for name in names:
        if name in images or name in labels or name == layout.yaml_name:
            continue
        suffix = posixpath.splitext(name)[1].lower()
        if name in layout.orphan_labels:
            run.verdict(name, "rejected", "orphan_label", "no image with this stem")
        elif suffix in IMAGE_SUFFIXES:
            run.verdict(
                name,
                "rejected",
                "outside_dataset_root",
                f"not under {layout.root or 'the root'}",
            )
        elif suffix == ".txt" or name.lower().endswith(YAML_SUFFIXES):
            run.verdict(name, "ignored", "not_used", "not a label of any image")
        else:
            run.verdict(
                name,
                "rejected",
                "unsupported_file",
                f"{suffix or 'no suffix'} is not an image or label",
            )


def _read(archive: Archive, name: str, limit: int) -> bytes:
    """A member's bytes; a damaged or oversized member is that file's problem only."""
    size = archive.members[name].size
    if size > limit:
        raise _MemberError("file_too_large", f"{size} bytes; the limit is {limit}")
    try:
        return archive.read(name)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _MemberError(
            "unreadable_member", f"damaged in the archive: {exc}"
        ) from None
    except Invalid as exc:
        raise _MemberError("file_too_large", exc.message) from None


class _MemberError(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _ingest_item(
    run, archive, blobs, item, class_count, mapping, known, options
) -> None:
    try:
        image = normalise(_read(archive, item.image, MAX_IMAGE_BYTES))
        label_text = None
        if item.label is not None:
            label_text = _read(archive, item.label, MAX_LABEL_BYTES).decode(
                "utf-8", "replace"
            )
    except (_MemberError, ImageRejected) as exc:
        run.verdict(item.image, "rejected", exc.reason, exc.detail)
        return
    labels = None
    fixes = list(image.fixes)
    if label_text is not None:
        try:
            parsed = parse_detect(label_text, class_count)
        except LabelError as exc:
            detail = f"{item.label}: {exc.detail}"
            run.verdict(item.image, "rejected", exc.reason, detail)
            return
        labels = [
            {**lab, "classId": mapping.get(lab["classId"], lab["classId"])}
            for lab in parsed.labels
        ]
        fixes += parsed.fixes
    digest, _ = blobs.put_image(image.data, image.ext)
    if digest in known:
        if options.conflict_policy == "skip":
            detail = f"identical image already in the dataset ({digest})"
            run.verdict(item.image, "rejected", "duplicate", detail)
            return
        if options.conflict_policy == "replace":
            run.replaced.add(digest)
            fixes.append("replaced the identical image already in the dataset")
    known.add(digest)
    run.rows.append(
        {
            "hash": digest,
            "ext": image.ext,
            "name": posixpath.basename(item.image),
            "width": image.width,
            "height": image.height,
            "bytes": len(image.data),
            "split": options.target_split or item.split,
            "labels": labels,
            "label_count": len(labels or []),
        }
    )
    if fixes:
        run.verdict(item.image, "fixed", None, "; ".join(fixes))
    else:
        run.verdict(item.image, "accepted")


def _summary(run: _Run, seconds: float) -> dict:
    rejected = Counter(r["reason"] for r in run.report if r["verdict"] == "rejected")
    return {
        "added": len(run.rows),
        "paired": sum(1 for r in run.rows if r["labels"] is not None),
        "errors": sum(rejected.values()),
        "fixed": sum(1 for r in run.report if r["verdict"] == "fixed"),
        "skippedCounts": dict(rejected),
        "processingTimeMs": round(seconds * 1000),
    }
