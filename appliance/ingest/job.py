"""The ingest job: every file in the upload ends accepted, fixed or rejected.

Nothing is visible until the end: images and thumbnails are stored
content-addressed as they are read (harmless if the job dies), and the rows that
make them part of the dataset are written in one transaction. A dry run stores
nothing and returns the verdicts.

No single file fails the ingest: an unexpected error while reading, decoding or
labelling one file is logged with its traceback and becomes that file's
`internal_error` verdict.

Names are kept unique within the dataset (whatever the split). An incoming image
named like an existing one with other content follows conflictPolicy (`skip`:
rejected `name_conflict`; `keep_both`: stored as `stem_1.ext`, fixed `renamed`, as
is a kept identical image; `replace`: the old image and its labels are removed in
the same transaction). Two files of one upload with the same name (cat/1.jpg,
dog/1.jpg) are both kept, the later one renamed, whatever the policy; identical
content is still a duplicate under `skip`."""

from __future__ import annotations

import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..blobs import BlobStore, content_hash
from ..errors import Invalid
from ..ids import now
from ..serialize import thumbnail_segments
from ..signing import Signer
from ..store import Database
from ..store.database import encode
from . import classes, splits
from .choose import choose_plan
from .images import ImageRejected, NormalImage, normalise
from .labels import LabelError
from .layout import MAX_CLASSES
from .plan import Context, Entry, MemberError, Plan
from .sources import open_source
from .video import extract_frames

logger = logging.getLogger(__name__)

Progress = Callable[[float, str], None]
#: The reason code of a `fixed` verdict, from the start of its first fix's text.
_FIX_CODES = (
    ("exif_orientation_applied", "exif_orientation_applied"),
    ("truncated_jpeg_restored", "truncated_jpeg_restored"),
    ("converted ", "converted_to_rgb"),
    ("resized ", "resized"),
    ("re-encoded ", "reencoded"),
    ("removed ", "duplicate_rows_removed"),
    ("made ", "boxes_to_polygons"),
    ("clipped ", "clipped"),
    ("dropped ", "annotations_dropped"),
    ("replaced ", "replaced"),
    ("renamed", "renamed"),
)


def fix_code(text: str) -> str:
    return next((code for start, code in _FIX_CODES if text.startswith(start)), "fixed")


def _internal(what: str, path: str, exc: BaseException) -> tuple[str, str]:
    logger.error("ingest: unexpected error %s %s", what, path, exc_info=exc)
    return "internal_error", (
        f"unexpected {exc.__class__.__name__} while {what} this file; the ingest"
        " went on without it (the server log has the details)"
    )


#: Images decoded at once: Pillow releases the GIL while it decodes and encodes.
NORMALISE_THREADS = 8


@dataclass
class IngestOptions:
    conflict_policy: str = "skip"  # skip | keep_both | replace
    target_split: str | None = None
    class_mapping: dict = field(default_factory=dict)
    image_metadata: dict = field(default_factory=dict)
    dry_run: bool = False
    #: Class ids past the YAML's names become `classN` placeholders, not errors.
    extend_classes: bool = False
    #: Segment datasets: box rows become 4-point polygons instead of errors.
    boxes_as_polygons: bool = False
    #: The uploaded file's name: a `.ndjson` is read as NDJSON, not as an archive.
    filename: str = "upload.zip"


@dataclass
class _Run:
    blobs: BlobStore
    options: IngestOptions
    ctx: Context
    mapping: classes.Mapping
    known: set[str]
    #: Image name -> the content hashes stored under it (dataset, then upload).
    names: dict[str, set[str]] = field(default_factory=dict)
    #: Names taken by this upload's own images.
    upload_names: set[str] = field(default_factory=set)
    #: Source names changed to be stored (not UTF-8): path -> why.
    renamed: dict[str, str] = field(default_factory=dict)
    #: Why every label is refused: (reason, detail), e.g. a task mismatch.
    mismatch: tuple[str, str] | None = None
    report: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    #: Hashes whose existing images this ingest replaces (conflictPolicy=replace).
    replaced: set[str] = field(default_factory=set)
    #: Blob files this run wrote that did not exist before: (hash, path).
    created: list[tuple[str, Path]] = field(default_factory=list)
    #: Label files already given a verdict.
    label_verdicts: set[str] = field(default_factory=set)
    background: int = 0
    dropped: int = 0
    class_names: list[str] = field(default_factory=list)

    def verdict(self, path, verdict, reason=None, detail=None) -> None:
        self.report.append(
            {"path": path, "verdict": verdict, "reason": reason, "detail": detail}
        )

    def reads(self, entry: Entry) -> list[tuple[str, str, bytes]]:
        """The images one entry holds, as (report path, name, bytes): one for an
        image file, one per frame for a video, none when it cannot be read."""
        try:
            data = entry.read()
            if not entry.video:
                return [(entry.path, entry.name, data)]
            frames = extract_frames(data, entry.name, self.blobs.tmp)
        except (MemberError, ImageRejected) as exc:
            self.verdict(entry.path, "rejected", exc.reason, exc.detail)
            return []
        except Exception as exc:  # one file never fails the ingest
            self.verdict(entry.path, "rejected", *_internal("reading", entry.path, exc))
            return []
        self.verdict(entry.path, "accepted", None, f"{len(frames)} frames taken")
        return [(f"{entry.path}#{name}", name, frame) for name, frame in frames]

    def image(
        self, entry: Entry, path: str, name: str, image: NormalImage | ImageRejected
    ) -> None:
        if isinstance(image, ImageRejected):
            self.verdict(path, "rejected", image.reason, image.detail)
            return
        fixes = list(image.fixes)
        digest = content_hash(image.data)
        if digest in self.known:
            if self.options.conflict_policy == "skip":
                detail = f"identical image already in the dataset ({digest})"
                self.verdict(path, "rejected", "duplicate", detail)
                return
            if self.options.conflict_policy == "replace":
                self.replaced.add(digest)
                fixes.append("replaced the identical image already in the dataset")
        name = self._name(path, name, digest, fixes)
        if name is None:
            return
        if path in self.renamed:
            fixes.append(f"renamed: {self.renamed[path]}")
        self.known.add(digest)
        labels, error = self._labels(entry, path, image.width, image.height, fixes)
        if not self.options.dry_run:
            # Flushed to disk together before the rows are written (see run_ingest).
            target = self.blobs.image_path(digest, image.ext)
            if not target.exists():
                self.blobs.put_image(image.data, image.ext, durable=False)
                self.created.append((digest, target))
            thumb = self.blobs.path(*thumbnail_segments(digest))
            if not thumb.exists():
                self.blobs.put_bytes(thumb, image.thumbnail, durable=False)
                self.created.append((digest, thumb))
        if labels == [] and self.ctx.task != "classify":
            self.background += 1
        self.rows.append(
            {
                "hash": digest,
                "ext": image.ext,
                "name": name,
                "width": image.width,
                "height": image.height,
                "bytes": len(image.data),
                "split": self.options.target_split or entry.split,
                "labels": labels,
                "label_count": len(labels or []),
                "error": encode(error),  # a JSON column, so the string is quoted
                "metadata": self._metadata(entry, path, name),
            }
        )
        notes = fixes + image.notes
        if error:
            notes.append("stored unlabeled: its label was rejected")
        reason = fix_code(fixes[0]) if fixes else None
        self.verdict(
            path, "fixed" if fixes else "accepted", reason, "; ".join(notes) or None
        )

    def _name(self, path: str, name: str, digest: str, fixes: list[str]) -> str | None:
        """The name to store the image under, or None when it is refused (see the
        module docstring for the rules)."""
        taken = self.names.get(name)
        policy = self.options.conflict_policy
        in_dataset = name not in self.upload_names
        if not taken:
            pass
        elif in_dataset and digest in taken and policy != "keep_both":
            pass  # the identical image: its policy was applied as a content duplicate
        elif in_dataset and digest not in taken and policy == "skip":
            detail = (
                f"the dataset already has an image named {name} with other"
                " content; conflictPolicy keep_both or replace takes it"
            )
            self.verdict(path, "rejected", "name_conflict", detail)
            return None
        elif in_dataset and digest not in taken and policy == "replace":
            self.replaced |= taken
            self.names[name] = set()
            fixes.append(
                f"replaced the image named {name} already in the dataset (its labels too)"
            )
        else:
            new = _unique_name(name, self.names)
            where = "the dataset" if in_dataset else "this upload"
            fixes.append(f"renamed to {new}: {where} already has an image named {name}")
            name = new
        self.names.setdefault(name, set()).add(digest)
        self.upload_names.add(name)
        return name

    def _labels(
        self, entry, path, width, height, fixes
    ) -> tuple[list | None, str | None]:
        if entry.labels is None:
            return None, None
        where = entry.label_path or f"{path}#labels"
        try:
            if self.mismatch:
                raise LabelError(*self.mismatch)
            parsed = entry.labels(self.ctx, width, height)
        except LabelError as exc:
            self.verdict(where, "rejected", exc.reason, exc.detail)
            return None, f"{exc.reason}: {exc.detail}"
        except Exception as exc:  # one label file never fails the ingest
            reason, detail = _internal("parsing the labels of", where, exc)
            self.verdict(where, "rejected", reason, detail)
            return None, f"{reason}: {detail}"
        for reason, detail in parsed.rejected:
            self.verdict(where, "rejected", reason, detail)
        if parsed.error and not parsed.labels:
            # Its annotations were all refused (each has its verdict): the image is
            # not a background image, and hasError lists it.
            return None, f"{parsed.error[0]}: {parsed.error[1]}"
        labels, dropped = classes.apply(parsed.labels, self.mapping)
        fixes += parsed.fixes
        if entry.label_path and entry.label_path not in self.label_verdicts:
            # A label file gets a verdict too, once (a COCO file has its own).
            self.label_verdicts.add(entry.label_path)
            if not parsed.rejected:
                count = f"{len(parsed.labels)} annotations for {path}"
                if parsed.fixes:
                    detail = f"{count}; " + "; ".join(parsed.fixes)
                    self.verdict(entry.label_path, "fixed", "labels_fixed", detail)
                else:
                    self.verdict(entry.label_path, "accepted", None, count)
        if dropped:
            self.dropped += dropped
            fixes.append(f"dropped {dropped} annotations of classes mapped to null")
        if self.ctx.task == "classify" and not labels:
            return None, None
        return labels, None

    def _metadata(self, entry: Entry, path: str, name: str) -> dict:
        extra = self.options.image_metadata
        given = extra.get(path) or extra.get(entry.path) or extra.get(name)
        return {**(entry.metadata or {}), **(given or {})}


def _unique_name(name: str, taken: dict[str, set[str]]) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot:
        stem, ext = name, ""
    n = 1
    while f"{stem}_{n}{dot}{ext}" in taken:
        n += 1
    return f"{stem}_{n}{dot}{ext}"


def _normalised(data: bytes, name: str) -> NormalImage | ImageRejected:
    try:
        return normalise(data, name)
    except ImageRejected as exc:
        return exc
    except Exception as exc:  # one image never fails the ingest
        return ImageRejected(*_internal("decoding", name, exc))


def _read_all(run: _Run, entries: list[Entry], progress: Progress) -> None:
    """Read the entries in order (archives are read by one thread) while a pool
    decodes and normalises the images; results are taken back in order, so the
    report and the rows do not depend on the pool."""
    workers = max(1, min(NORMALISE_THREADS, os.cpu_count() or 1))
    pending: deque[tuple[Entry, str, str, Future]] = deque()

    def settle(most: int) -> None:
        while len(pending) > most:
            entry, path, name, future = pending.popleft()
            try:
                run.image(entry, path, name, future.result())
            except OSError:
                raise  # the store failing (a full disk) is not this file's fault
            except Exception as exc:  # one image never fails the ingest
                run.verdict(path, "rejected", *_internal("storing", path, exc))

    total = max(len(entries), 1)
    with ThreadPoolExecutor(workers, thread_name_prefix="normalise") as pool:
        for done, entry in enumerate(entries, start=1):
            for path, name, data in run.reads(entry):
                pending.append(
                    (entry, path, name, pool.submit(_normalised, data, name))
                )
                settle(2 * workers)
            if done % 25 == 0 or done == total:
                progress(90.0 * done / total, f"read {done}/{total} files")
        settle(0)


def run_ingest(
    db: Database,
    blobs: BlobStore,
    dataset_id: str,
    job_id: str,
    archive_path: Path,
    options: IngestOptions,
    progress: Progress,
    signer: Signer | None = None,
) -> dict:
    """Ingest one upload into a dataset; returns the summary (with every verdict
    under `files` for a dry run)."""
    started = time.monotonic()
    dataset = db.dataset(dataset_id)
    if dataset is None:
        raise Invalid("dataset no longer exists")
    before = db.dataset_stats(dataset_id)
    with open_source(archive_path, options.filename) as source:
        skipped = [(s.name, "rejected", s.reason, s.detail) for s in source.skipped]
        plan = choose_plan(source, source.names(), dataset, blobs, signer)
        task, notes = _task(dataset, plan, empty=not before.get("images"))
        run = _prepare(db, blobs, dataset, plan, task, options)
        run.renamed = dict(source.renamed)
        for path, verdict, reason, detail in skipped + plan.verdicts:
            run.verdict(path, verdict, reason, detail)
            run.label_verdicts.add(path)  # a file named once in the report
        try:
            _read_all(run, plan.entries, progress)
        except BaseException:
            _remove_created(db, run)
            raise
    notes = plan.notes + notes
    if plan.class_names is None:
        used = max(
            (lab["classId"] for r in run.rows for lab in r["labels"] or []), default=-1
        )
        run.class_names += [f"class{i}" for i in range(len(run.class_names), used + 1)]
    moved = 0
    if task != "classify" and not options.target_split and not before.get("val"):
        if not any(r["split"] == "val" for r in run.rows):
            moved = splits.auto_split(run.rows)
            if moved:
                notes.append(f"val was empty: moved {moved} train images to val")
    summary = _summary(run, plan, task, notes, moved, time.monotonic() - started)
    if options.dry_run:
        summary["files"] = run.report
        return summary
    fields = _dataset_fields(dataset, run, plan, summary, job_id, task, before)
    progress(95.0, "saving")
    # The images were written without a flush each; one sync makes them durable
    # before any row points at them.
    try:
        blobs.sync()
        db.replace_images(
            dataset_id, run.rows, run.report, job_id, remove=run.replaced, **fields
        )
    except BaseException:
        _remove_created(db, run)
        raise
    logger.info("ingest %s into %s: %s", job_id, dataset_id, summary)
    return summary


def _remove_created(db: Database, run: _Run) -> None:
    """After a failed ingest: delete the blobs it wrote that no image row uses
    (another dataset may hold the same content)."""
    used = db.hashes_in_use(digest for digest, _ in run.created)
    for digest, path in run.created:
        if digest not in used:
            path.unlink(missing_ok=True)


def _task(dataset: dict, plan: Plan, empty: bool) -> tuple[str, list[str]]:
    """The task to ingest as: the dataset's, or, for an empty dataset, the one the
    source unmistakably is."""
    task = dataset["task"]
    hint = plan.task
    if not hint and task == "detect":
        hint = "obb" if plan.obb_rows else "pose" if plan.pose_rows else None
    if not hint or hint == task or (task == "detect" and hint == "segment"):
        return task, []
    if empty:
        return hint, [
            f"the dataset's task changed from {task} to {hint}: the upload is a {hint} dataset"
        ]
    return task, []


def _prepare(db, blobs, dataset, plan: Plan, task: str, options: IngestOptions) -> _Run:
    existing = dataset["class_names"] or []
    if plan.class_names is None:
        # YOLO ids without names index the dataset's classes; placeholders for
        # the ids past them are added once the accepted labels are known.
        incoming, class_count = list(existing), None
    else:
        incoming = list(plan.class_names)
        if options.extend_classes:
            top = min(plan.max_class_id + 1, MAX_CLASSES)
            incoming += [f"class{i}" for i in range(len(incoming), top)]
        class_count = len(incoming)
    names, mapping = classes.map_classes(existing, incoming, options.class_mapping)
    metadata = dataset.get("metadata") or {}
    kpt_shape = None
    if task == "pose":
        kpt_shape = metadata.get("kptShape") or plan.kpt_shape or plan.kpt_guess
    mismatch = None
    if (
        plan.task
        and plan.task != task
        and not (task == "detect" and plan.task == "segment")
    ):
        detail = f"the upload is a {plan.task} dataset; this dataset's task is {task}"
        mismatch = ("task_mismatch", detail)
    elif plan.pose_rows and task != "pose":
        detail = (
            "the label rows are pose rows (class, box, keypoints with visibility);"
            f" this dataset's task is {task}"
        )
        mismatch = ("task_mismatch", detail)
    elif task == "pose" and kpt_shape is None and plan.kpt_problem:
        mismatch = ("kpt_shape_unknown", plan.kpt_problem)
    return _Run(
        blobs=blobs,
        options=options,
        ctx=Context(task, class_count, kpt_shape, options.boxes_as_polygons),
        mapping=mapping,
        known=db.image_hashes(dataset["id"]),
        names=db.image_names(dataset["id"]),
        mismatch=mismatch,
        class_names=names,
    )


def _summary(run: _Run, plan: Plan, task, notes, moved, seconds) -> dict:
    rejected = Counter(r["reason"] for r in run.report if r["verdict"] == "rejected")
    labeled = sum(1 for r in run.rows if r["labels"])
    return {
        "added": len(run.rows),
        "paired": sum(1 for r in run.rows if r["labels"] is not None),
        # An identical image already there is not an error: counted apart.
        "errors": sum(n for reason, n in rejected.items() if reason != "duplicate"),
        "duplicates": rejected.get("duplicate", 0),
        "fixed": sum(1 for r in run.report if r["verdict"] == "fixed"),
        "skippedCounts": dict(rejected),
        "labeled": labeled,
        "background": run.background,
        "unlabeled": sum(1 for r in run.rows if r["labels"] is None),
        "droppedAnnotations": run.dropped,
        "movedToVal": moved,
        "format": plan.format,
        "task": task,
        "kptShape": run.ctx.kpt_shape,
        "classNames": run.class_names,
        "splits": dict(Counter(r["split"] for r in run.rows)),
        "warnings": notes,
        "processingTimeMs": round(seconds * 1000),
    }


def _dataset_fields(dataset, run, plan, summary, job_id, task, before) -> dict:
    metadata = dict(dataset.get("metadata") or {})
    if task == "pose" and run.ctx.kpt_shape:
        metadata["kptShape"] = run.ctx.kpt_shape
        if plan.flip_idx and "flipIdx" not in metadata:
            metadata["flipIdx"] = plan.flip_idx
    metadata["format"] = plan.format
    fields = {
        "task": task,
        "class_names": run.class_names,
        "metadata": metadata,
        "ingest_summary": summary,
        "ingest_job_id": job_id,
        "status": "ready",
        "processing_error": None,
    }
    if not run.rows and not before.get("images"):
        reasons = (
            ", ".join(f"{k}: {v}" for k, v in summary["skippedCounts"].items())
            or "no images found"
        )
        fields["status"] = "failed"
        fields["processing_error"] = {
            "message": f"no usable image in the upload ({reasons})",
            "timestamp": now(),
        }
    return fields
