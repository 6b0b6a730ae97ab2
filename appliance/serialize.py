"""Database rows to the JSON shapes the contract documents."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from .ids import parse_time
from .signing import Signer

REGION = "us"


def dataset_json(
    row: dict,
    stats: dict,
    *,
    is_starred: bool = False,
    detail: bool = False,
    versions: list[dict] | None = None,
) -> dict[str, Any]:
    names = row["class_names"] or []
    out: dict[str, Any] = {
        "id": row["id"],
        "owner": row["owner"],
        "dataset": row["slug"],
        "name": row["name"],
        "description": row["description"],
        "visibility": row["visibility"],
        "task": row["task"],
        "imageCount": stats.get("images", 0),
        "classCount": len(names),
        "classNames": names,
        "splits": {
            "train": stats.get("train", 0),
            "val": stats.get("val", 0),
            "test": stats.get("test", 0),
            "labeled": stats.get("labeled", 0),
        },
        "annotationCount": stats.get("annotations", 0),
        "totalBytes": stats.get("bytes", 0),
        "errorCount": stats.get("errors", 0),
        "starCount": 0,
        "isStarred": is_starred,
        "status": row["status"],
        "region": REGION,
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
    }
    if row.get("processing_error"):
        out["processingError"] = row["processing_error"]
    if row.get("ingest_job_id"):
        out["lastIngestJobId"] = row["ingest_job_id"]
    summary = row.get("ingest_summary")
    if summary:
        out["lastIngestSummary"] = {
            "added": summary.get("added", 0),
            "paired": summary.get("paired", 0),
            "errors": summary.get("errors", 0),
            "skippedCounts": summary.get("skippedCounts", {}),
        }
        if "processingTimeMs" in summary:
            out["processingTimeMs"] = summary["processingTimeMs"]
    metadata = row.get("metadata") or {}
    if metadata.get("kptShape"):
        out["kptShape"] = metadata["kptShape"]
    if metadata.get("flipIdx"):
        out["flipIdx"] = metadata["flipIdx"]
    if metadata.get("format") in ("yolo", "coco", "raw", "ndjson"):
        out["format"] = metadata["format"]
    if detail:
        out["metadata"] = metadata
    if versions is not None:
        out["versions"] = [version_json(v) for v in versions]
    return out


def version_json(row: dict) -> dict[str, Any]:
    """One dataset version, as the dataset detail lists it."""
    return {
        "version": row["version"],
        "description": row["description"],
        "sizeBytes": row["size_bytes"],
        "contentHash": row["content_hash"],
        "sourceUpdatedAt": row["source_updated_at"],
        "imageCount": row["image_count"],
        "classCount": row["class_count"],
        "annotationCount": row["annotation_count"],
        "splits": {
            "train": row["train"],
            "val": row["val"],
            "test": row["test"],
            "labeled": row["labeled"],
        },
        "createdAt": row["created_at"],
    }


def thumbnail_segments(digest: str) -> tuple[str, str, str]:
    """Where ingest stores an image's 256 px JPEG thumbnail in the blob store."""
    return ("thumbnails", digest[:2], f"{digest}.jpg")


#: Annotations a listing previews per image; `labelsTruncated` says when more exist.
PREVIEW_LABELS = 100


def image_path(row: dict) -> str:
    """The appliance path of an image's blob (sign it to hand it out)."""
    return f"/files/images/{row['hash'][:2]}/{row['hash']}.{row['ext']}"


def _preview(out: dict[str, Any], labels: list | None) -> None:
    labels = labels or []
    out["labels"] = labels[:PREVIEW_LABELS]
    if len(labels) > PREVIEW_LABELS:
        out["labelsTruncated"] = True


def image_json(
    row: dict,
    signer: Signer,
    *,
    thumbnails: bool,
    image_urls: bool,
    labels: bool,
    blobs: Any = None,
) -> dict[str, Any]:
    """`blobs`, when given, lets thumbnailUrl point at the stored thumbnail."""
    path = image_path(row)
    thumb = path
    segments = thumbnail_segments(row["hash"])
    if blobs is not None and blobs.path(*segments).is_file():
        thumb = "/files/" + "/".join(segments)
    out: dict[str, Any] = {
        "id": row["id"],
        "hash": row["hash"],
        "ext": row["ext"],
        "width": row["width"],
        "height": row["height"],
        "split": row["split"],
        "labelCount": row["label_count"],
        "name": row["name"],
        "bytes": row["bytes"],
        "error": row["error"],
    }
    if thumbnails:
        out["thumbnailUrl"] = signer.url(thumb)
    if image_urls:
        out["imageUrl"] = signer.url(path)
    if labels:
        _preview(out, row["labels"])
    return out


def image_detail_json(
    row: dict, dataset: dict, *, retained: bool = False
) -> dict[str, Any]:
    """GET /api/images/{imageId}: the contract's Image. `retained`: a saved
    version of the dataset holds this image, so deleting it frees nothing."""
    labels = row["labels"] or []
    properties: dict[str, Any] = {
        "id": row["id"],
        "datasetId": row["dataset_id"],
        "filename": row["name"],
        "hash": row["hash"],
        "extension": row["ext"],
        "width": row["width"],
        "height": row["height"],
        "split": row["split"],
        "annotationCount": row["label_count"],
        "classIds": sorted(
            {c for label in labels if isinstance(c := label.get("classId"), int)}
        ),
        "bytes": row["bytes"],
        "region": REGION,
        "retainedByVersion": retained,
        "createdAt": row["created_at"],
        "error": row["error"],
    }
    if row.get("updated_at"):
        properties["updatedAt"] = row["updated_at"]
    return {
        "metadata": row.get("metadata") or {},
        "properties": properties,
        "labels": labels,
        "classNames": dataset["class_names"] or [],
    }


#: Dataset fields the contract shows that this appliance keeps in `details`.
DETAIL_FIELDS = ("tags", "license", "format", "classColors", "iconColor", "iconLetter")


def dataset_extras(
    row: dict,
    signer: Signer,
    samples: list[dict] | None,
    *,
    image_urls: bool = False,
    clone_count: int | None = None,
) -> dict[str, Any]:
    """The contract's optional dataset fields: presentation details, pose
    keypoint shape, clone lineage and sample images."""
    out: dict[str, Any] = {}
    details = row.get("details") or {}
    for key in DETAIL_FIELDS:
        if key in details:
            out[key] = details[key]
    metadata = row.get("metadata") or {}
    for key in ("kptShape", "flipIdx"):
        if key in metadata:
            out[key] = metadata[key]
    if row.get("cloned_from"):
        out["clonedFrom"] = row["cloned_from"]
    if clone_count is not None:
        out["cloneCount"] = clone_count
    if samples is not None:
        out["sampleImages"] = []
        for image in samples:
            sample: dict[str, Any] = {
                "url": signer.url(image_path(image)),
                "width": image["width"],
                "height": image["height"],
            }
            if image_urls:
                sample["imageUrl"] = sample["url"]
            _preview(sample, image["labels"])
            sample.pop("labelsTruncated", None)
            out["sampleImages"].append(sample)
    return out


def trained_model_json(row: dict, *, seed: bool = False) -> dict[str, Any]:
    """A model in GET .../models (models trained on a dataset); `seed` adds the
    seed's field names beside the contract's."""
    out: dict[str, Any] = {
        "id": row["id"],
        "owner": row["owner"],
        "project": row["project"],
        "model": row["slug"],
        "name": row["name"],
        "status": row["status"],
        "metrics": _metrics_summary(row["metrics"]),
        "createdAt": row["created_at"],
    }
    if row["task"]:
        out["task"] = row["task"]
    epochs = _as_int((row["train_args"] or {}).get("epochs"))
    if epochs is not None and epochs >= 0:
        out["epochs"] = epochs
    if row["best_epoch"] is not None:
        out["bestEpoch"] = row["best_epoch"]
    if row["best_fitness"] is not None:
        out["bestFitness"] = row["best_fitness"]
    if row["started_at"]:
        out["startedAt"] = row["started_at"]
    if row["completed_at"]:
        out["completedAt"] = row["completed_at"]
    if seed:
        out.update(
            _id=row["id"],
            slug=row["slug"],
            projectId=row["project_id"],
            projectSlug=row["project"],
            username=row["owner"],
        )
    return out


def project_json(
    row: dict, model_count: int, *, detail: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row["id"],
        "owner": row["owner"],
        "project": row["slug"],
        "name": row["name"],
        "description": row["description"],
        "visibility": row["visibility"],
        "modelCount": model_count,
        "starCount": 0,
        "isStarred": False,
        "region": REGION,
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
    }
    details = row.get("details") or {}
    for key in PROJECT_DETAIL_FIELDS:
        if key in details:
            out[key] = details[key]
    if row.get("cloned_from"):
        out["clonedFrom"] = row["cloned_from"]
    if detail:
        out["metadata"] = row.get("metadata") or {}
    return out


#: Project fields the contract shows that this appliance keeps in `details`.
PROJECT_DETAIL_FIELDS = (
    "tags",
    "license",
    "iconColor",
    "iconLetter",
    "archived",
    "viewPreferences",
)
#: Model fields the contract shows that this appliance keeps in `details`.
MODEL_DETAIL_FIELDS = ("color", "license", "version", "docs")


def _as_int(value: Any) -> int | None:
    """Train arguments may arrive stringified (ultralytics sends "epochs": "2")."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _metrics_summary(metrics: dict | None) -> dict[str, float]:
    """The Platform's short metric names from ultralytics' keys."""
    if not metrics:
        return {}
    keys = {
        "metrics/mAP50(B)": "mAP50",
        "metrics/mAP50-95(B)": "mAP50-95",
        "metrics/precision(B)": "precision",
        "metrics/recall(B)": "recall",
        "metrics/accuracy_top1": "accuracy_top1",
        "metrics/accuracy_top5": "accuracy_top5",
    }
    out = {
        short: float(metrics[long]) for long, short in keys.items() if long in metrics
    }
    for key, value in metrics.items():
        if "/" not in key and isinstance(value, int | float):
            out.setdefault(key, float(value))
    return out


def model_summary_json(row: dict, epoch_count: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row["id"],
        "model": row["slug"],
        "name": row["name"],
        "status": row["status"],
        "epochCount": epoch_count,
        "hasWeights": bool(row["weights_size"]),
        "bestEpoch": row["best_epoch"],
        "bestFitness": row["best_fitness"],
        "metrics": _metrics_summary(row["metrics"]),
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
    }
    if row["task"]:
        out["task"] = row["task"]
    if (row.get("details") or {}).get("color"):
        out["color"] = row["details"]["color"]
    if row["train_args"]:
        out["trainArgs"] = row["train_args"]
        epochs = _as_int(row["train_args"].get("epochs"))
        if epochs is not None:
            out["epochs"] = epochs
    if row["weights_size"]:
        out["file"] = {"size": row["weights_size"]}
    if row["started_at"]:
        out["startedAt"] = row["started_at"]
    return out


def model_json(row: dict, epochs: list[dict]) -> dict[str, Any]:
    out = model_summary_json(row, len(epochs))
    out.pop("epochCount")
    out.update(
        {
            "owner": row["owner"],
            "project": row["project"],
            "projectName": row["project_name"],
            "visibility": row["visibility"],
            "description": row["description"],
            "starCount": 0,
            "isStarred": False,
            "metadata": row.get("metadata") or {},
            "trainResults": [
                {
                    "epoch": e["epoch"],
                    "metrics": e["metrics"],
                    "fitness": e["fitness"],
                    "timestamp": e["created_at"],
                }
                for e in epochs
            ],
        }
    )
    for epoch in out["trainResults"]:
        if epoch["fitness"] is None:
            del epoch["fitness"]
    if row["class_names"]:
        out["classNames"] = row["class_names"]
    if row["dataset_id"]:
        out["datasetId"] = row["dataset_id"]
    if row["completed_at"]:
        out["completedAt"] = row["completed_at"]
    if row["training_error"]:
        out["trainingError"] = row["training_error"]
    if row["environment"]:
        out["environment"] = row["environment"]
    details = row.get("details") or {}
    for key in MODEL_DETAIL_FIELDS:
        if key in details:
            out[key] = details[key]
    if row.get("cloned_from"):
        out["clonedFrom"] = out["sourceModelId"] = row["cloned_from"]
    return out


def training_json(
    job: dict, model: dict, epochs: list[dict], compute: dict | None = None
) -> dict[str, Any]:
    """The contract's training progress. `compute` is the device the job runs on
    (gpuType, gpuDisplayName, gpuMemoryGb), when it has one."""
    train_args = job["args"].get("trainArgs", {})
    total = _as_int(train_args.get("epochs")) or 0
    current = len(epochs)
    elapsed_ms = 0
    per_epoch = 0
    if job["started_at"]:
        end = (
            parse_time(job["finished_at"]) if job["finished_at"] else datetime.now(UTC)
        )
        elapsed_ms = max(
            int((end - parse_time(job["started_at"])).total_seconds() * 1000), 0
        )
        per_epoch = elapsed_ms // current if current else 0
    status = _public_training_status(job, model)
    progress: dict[str, Any] = {
        "currentEpoch": current,
        "totalEpochs": total,
        "percentage": 100.0 if status == "completed" else float(job["progress"]),
    }
    if job["started_at"]:
        progress["startedAt"] = job["started_at"]
    if job["finished_at"]:
        progress["completedAt"] = job["finished_at"]
    error = None
    if job["error"]:
        error = {
            "message": job["error"].get("message", ""),
            "code": job["error"].get("code", job["status"]),
            "timestamp": job["finished_at"] or job["updated_at"],
        }
    elif job["status"] == "stalled":
        # Still running as far as anyone knows, but its trainer has gone quiet.
        error = {
            "message": job["message"],
            "code": "stalled",
            "timestamp": job["updated_at"],
        }
    return {
        "id": job["id"],
        "status": status,
        "progress": progress,
        "timing": {
            "elapsedMs": elapsed_ms,
            "timePerEpochMs": per_epoch,
            "etaMs": per_epoch * max(total - current, 0) if status == "running" else 0,
        },
        "compute": compute,
        "trainArgs": {
            k: train_args[k]
            for k in ("model", "epochs", "batch", "imgsz")
            if k in train_args
        },
        "epochMetrics": epochs[-1]["metrics"] if epochs else None,
        "error": error,
        "createdAt": job["created_at"],
        "updatedAt": job["updated_at"],
    }


def _public_training_status(job: dict, model: dict) -> str:
    """Our job states on the contract's enum: a job waiting for a device is
    'pending'; 'stalled' still runs (its error says it is stalled);
    'interrupted' is a failure whose error code says so."""
    status = job["status"]
    if status == "queued":
        return "pending"
    if status == "stalled":
        return "running"
    if status == "interrupted":
        return "failed"
    if status == "running" and model["status"] != "running":
        return "starting"
    return status


def export_json(row: dict, signer: Signer) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": row["id"],
        "status": row["status"],
        "format": row["format"],
        "args": row["args"] or {},
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
    }
    if row["filename"]:
        out["file"] = {
            "size": row["file_size"],
            "downloadUrl": signer.url(f"/files/exports/{row['id']}/{row['filename']}"),
            "downloadFilename": row["filename"],
        }
    if row["error"]:
        out["error"] = {
            "message": row["error"].get("message", ""),
            "timestamp": row["error"].get("timestamp", row["updated_at"]),
        }
    if row["started_at"]:
        out["startedAt"] = row["started_at"]
    if row["completed_at"]:
        out["completedAt"] = row["completed_at"]
    return out
