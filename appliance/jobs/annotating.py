"""Auto-annotation: one model's predictions turned into a dataset's labels, for one
image (the predict routes) or for many in a queued job (`annotate`).

Predictions come from `vision.Predictor` in this process. A model class maps to
the dataset class of the same name (case-insensitive); a dataset with no classes
yet adopts the model's. Classes the dataset lacks are dropped and counted. A
detect dataset takes the boxes of segment and pose models too; other tasks must
match the model's."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from .. import labels as label_shapes
from ..errors import ApplianceError, Invalid, Unprocessable

if TYPE_CHECKING:
    from ..vision import Predictor
    from .queue import JobQueue

logger = logging.getLogger(__name__)

#: The per-image summary a job keeps; past this only the counts grow.
MAX_REPORTED = 5000
_BOX_TASKS = {"detect": {"detect", "segment", "pose"}}


@dataclass
class Mapping:
    """How a model's classes and task land in one dataset."""

    task: str
    classes: dict[int, int]
    class_names: list[str]
    adopted: bool
    kpt_shape: list[int] | None = None
    dropped: int = field(default=0)


def plan(dataset: dict, model_task: str, model_names: list[str]) -> Mapping:
    """Check that a model fits a dataset and map its classes; raises Invalid for a
    task mismatch and Unprocessable when no class matches."""
    task = dataset["task"]
    if model_task != task and model_task not in _BOX_TASKS.get(task, ()):
        raise Invalid(
            f"model task mismatch: a {model_task} model cannot annotate a {task} dataset"
        )
    names = list(dataset["class_names"] or [])
    kpt_shape = (dataset.get("metadata") or {}).get("kptShape")
    if not names:
        return Mapping(
            task, dict(enumerate(range(len(model_names)))), model_names, True, kpt_shape
        )
    index = {name.strip().lower(): i for i, name in enumerate(names)}
    classes = {
        i: index[name.strip().lower()]
        for i, name in enumerate(model_names)
        if name.strip().lower() in index
    }
    if not classes:
        raise Unprocessable(
            "Model classes do not match the dataset: none of "
            f"{', '.join(model_names[:10])} is a class of this dataset"
        )
    return Mapping(task, classes, names, False, kpt_shape)


def _keypoints(points: list[float], kpt_shape: list[int] | None) -> list[float]:
    """Predicted triples as the dataset keeps them (pairs or triples)."""
    if not kpt_shape or kpt_shape[1] == 3:
        return points
    return [v for i, v in enumerate(points) if i % 3 != 2]


def convert(mapping: Mapping, predicted: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Model labels to dataset labels, validated by `labels.check`."""
    out = []
    for label in predicted:
        class_id = mapping.classes.get(label["classId"])
        if class_id is None:
            mapping.dropped += 1
            continue
        label = {**label, "classId": class_id}
        if mapping.task == "detect":
            label = {"classId": class_id, "bbox": label["bbox"]}
        elif mapping.task == "pose" and "keypoints" in label:
            label["keypoints"] = _keypoints(label["keypoints"], mapping.kpt_shape)
        if label.get("bbox") and (label["bbox"][2] <= 0 or label["bbox"][3] <= 0):
            continue  # a box squeezed to nothing at the image's edge
        out.append(
            label_shapes.check(
                mapping.task,
                label,
                len(mapping.class_names),
                kpt_shape=mapping.kpt_shape,
            )
        )
    if mapping.task == "classify":
        out = out[:1]
    return out


def save(db: Any, dataset: dict, mapping: Mapping, image_id: str, labels: list) -> None:
    """Write one image's labels; a dataset that had no classes takes the model's,
    and a pose dataset with no kptShape takes the predictions'."""
    with db.atomic():
        if mapping.adopted and not dataset["class_names"]:
            db.update_dataset(dataset["id"], class_names=mapping.class_names)
            dataset["class_names"] = mapping.class_names
        if mapping.task == "pose" and not mapping.kpt_shape:
            shape = label_shapes.infer_kpt_shape(labels)
            if shape:
                metadata = {**(dataset.get("metadata") or {}), "kptShape": shape}
                db.update_dataset(dataset["id"], metadata=metadata)
                dataset["metadata"] = metadata
                mapping.kpt_shape = shape
        db.set_image_labels(image_id, labels)


def open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise Invalid(f"the stored image cannot be read: {exc}") from None


# -- the batch job -------------------------------------------------------------


def run_annotate(queue: JobQueue, predictor: Predictor, job: dict) -> None:
    """Run a model over a dataset's images and write their labels."""
    db, args = queue.db, job["args"]
    dataset = db.dataset(job["subject_id"])
    if dataset is None:
        raise Invalid("the dataset no longer exists")
    weights = Path(args["weights"])
    model_task, model_names = predictor.task_and_names(weights)
    mapping = plan(dataset, model_task, model_names)
    images = db.images_to_annotate(
        dataset["id"],
        only_unlabeled=args["onlyUnlabeled"],
        image_ids=args.get("imageIds"),
    )
    counts = {"annotated": 0, "empty": 0, "failed": 0, "skipped": 0, "labels": 0}
    report: list[dict[str, Any]] = []
    total = len(images)
    for done, image in enumerate(images, start=1):
        if queue.cancel_requested(job["id"]):
            queue.finish(
                job["id"], "cancelled", result=_result(counts, report, total, mapping)
            )
            return
        outcome = _annotate_one(
            queue, predictor, dataset, mapping, weights, image, args
        )
        counts[outcome["outcome"]] += 1
        counts["labels"] += outcome.get("labelCount", 0)
        if len(report) < MAX_REPORTED:
            report.append(outcome)
        queue.progress(
            job["id"],
            100.0 * done / max(total, 1),
            f"{done} of {total} images",
            interruptible=True,
        )
    queue.finish(job["id"], "completed", result=_result(counts, report, total, mapping))


def _annotate_one(queue, predictor, dataset, mapping, weights, image, args) -> dict:
    entry: dict[str, Any] = {"imageId": image["id"], "hash": image["hash"]}
    try:
        path = queue.blobs.image_path(image["hash"], image["ext"])
        predicted = predictor.annotate(
            weights,
            open_image(path),
            conf=args["confidence"],
            iou=args["iou"],
            imgsz=args["imgsz"],
            device=queue.settings.device,
        )
        labels = convert(mapping, predicted["labels"])
    except ApplianceError as exc:
        return {**entry, "outcome": "failed", "error": exc.message}
    except (OSError, RuntimeError, ValueError) as exc:
        logger.warning("annotating image %s failed: %s", image["id"], exc)
        return {
            **entry,
            "outcome": "failed",
            "error": f"{exc.__class__.__name__}: {exc}",
        }
    if not labels:
        return {**entry, "outcome": "empty", "labelCount": 0}
    current = queue.db.image(image["id"])
    if current is None or (args["onlyUnlabeled"] and current["label_count"]):
        # Deleted, or labelled by someone while the model ran: leave it be.
        return {**entry, "outcome": "skipped", "labelCount": 0}
    save(queue.db, dataset, mapping, image["id"], labels)
    return {**entry, "outcome": "annotated", "labelCount": len(labels)}


def _result(counts: dict, report: list, total: int, mapping: Mapping) -> dict:
    return {
        "total": total,
        **counts,
        "droppedPredictions": mapping.dropped,
        "images": report,
        "truncated": sum(counts[k] for k in ("annotated", "empty", "failed", "skipped"))
        > len(report),
    }
