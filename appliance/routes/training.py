"""Starting training on this workstation's GPU, or its CPU when it has none."""

from __future__ import annotations

import functools
import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from .. import trainargs, vision
from ..errors import Conflict, Invalid
from ..ingest.splits import not_ready_reason
from ..web import field, json_body, reply, require_user, services
from .datasets import find_dataset
from .models import editable_model

_UL_DATASET = re.compile(r"^ul://([^/]+)/datasets/([^/]+)$")
_ARG_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
#: Arguments the appliance sets itself; a caller's value would fight with ours.
_RESERVED = frozenset({"project", "name", "exist_ok", "save_dir"})


@functools.cache
def local_compute() -> dict:
    return vision.device_summary()


def _check_args(train_args: dict, weights_dir) -> dict:
    for key, value in train_args.items():
        if not _ARG_NAME.match(key):
            raise Invalid(f"trainArgs: {key!r} is not an argument name")
        if not isinstance(value, str | int | float | bool | list | type(None)):
            raise Invalid(f"trainArgs.{key} must be a number, string, boolean or list")
    trainargs.check_arguments(train_args)
    trainargs.check_model(field(train_args, "model", str, required=True), weights_dir)
    epochs = field(train_args, "epochs", int, required=True)
    if not 1 <= epochs <= 10000:
        raise Invalid("trainArgs.epochs must be between 1 and 10000")
    imgsz = field(train_args, "imgsz", int, default=640)
    if not 32 <= imgsz <= 8192:
        raise Invalid("trainArgs.imgsz must be between 32 and 8192")
    batch = field(train_args, "batch", (int, float), default=16)
    if batch == 0 or batch < -1:
        raise Invalid("trainArgs.batch must be a positive number, or -1 for automatic")
    return {k: v for k, v in train_args.items() if k not in _RESERVED}


def _dataset_for(request: Request, data: str) -> dict:
    match = _UL_DATASET.match(data)
    if match:
        return find_dataset(request, match.group(1), match.group(2))
    if "/" not in data:
        return find_dataset(request, data)
    raise Invalid("trainArgs.data must be ul://owner/datasets/slug or a dataset id")


async def start(request: Request):
    user = require_user(request)
    svc = services(request)
    body = await json_body(request)
    model = editable_model(request, field(body, "modelId", str, required=True))
    train_args = _check_args(
        field(body, "trainArgs", dict, required=True), svc.settings.home / "weights"
    )
    dataset = _dataset_for(request, field(train_args, "data", str, required=True))
    if dataset["status"] == "processing":
        raise Conflict(f"dataset {dataset['slug']} is still processing an ingest")
    problem = not_ready_reason(dataset, svc.db.dataset_stats(dataset["id"]))
    if problem:
        raise Invalid(f"dataset {dataset['slug']} is not ready to train: {problem}")
    active = svc.db.latest_job(model["id"], "train")
    if active and active["status"] in ("queued", "starting", "running"):
        raise Conflict("this model is already training")
    if model["weights_size"]:
        raise Conflict(
            "this model already has trained weights; train a new model instead"
        )
    compute = await run_in_threadpool(local_compute)
    svc.db.update_model(
        model["id"],
        status="starting",
        train_args=train_args,
        dataset_id=dataset["id"],
        training_error=None,
        task=model["task"] or dataset["task"],
    )
    svc.queue.submit(
        "train",
        model["id"],
        user["id"],
        {"trainArgs": train_args, "datasetId": dataset["id"]},
    )
    return reply(
        {
            "modelId": model["id"],
            "status": "starting",
            "gpuType": compute["name"],
            "estimatedCost": {"pricePerHour": 0, "gpuMemoryGb": compute["memoryGb"]},
            "billing": {
                "estimatedCostCents": 0,
                "estimatedCostDisplay": "$0.00",
                "balanceCents": 0,
            },
        }
    )


async def gpu_availability(request: Request):
    """Local compute by name, with how free it is now: High when no training runs,
    Medium while one does, Low when more wait in the queue."""
    require_user(request)
    compute = await run_in_threadpool(local_compute)
    db = services(request).db
    running = db.scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'train' AND status = 'running'"
    )
    queued = db.scalar(
        "SELECT count(*) FROM jobs WHERE kind = 'train' AND status = 'queued'"
    )
    level = "High" if not running else ("Medium" if not queued else "Low")
    return reply({compute["name"]: level})


routes = [
    Route("/api/training/start", start, methods=["POST"]),
    Route("/api/training/gpu-availability", gpu_availability, methods=["GET"]),
]
