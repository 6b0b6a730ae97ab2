"""Starting and resuming training on this workstation's GPUs, or its CPU when it
has none; what each device is doing."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from .. import gpus, ndjson, trainargs
from ..checkpoints import BadCheckpoint, read_pickle
from ..errors import Conflict, Invalid
from ..ingest.splits import not_ready_reason
from ..store._jobs import ACTIVE
from ..web import field, json_body, reply, require_user, services
from .datasets import find_dataset
from .models import editable_model, find_model, model_of, weights_path

_UL_DATASET = re.compile(r"^ul://([^/]+)/datasets/([^/]+)$")
_ARG_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
#: Arguments the appliance sets itself; a caller's value would fight with ours.
_RESERVED = frozenset({"project", "name", "exist_ok", "save_dir", "resume"})
#: Ways a run ends early that leave a checkpoint to continue from.
_RESUMABLE = ("failed", "cancelled", "interrupted")


def _check_args(train_args: dict, weights_dir: Path) -> dict:
    for key, value in train_args.items():
        if not _ARG_NAME.match(key):
            raise Invalid(f"trainArgs: {key!r} is not an argument name")
        if not isinstance(value, str | int | float | bool | list | type(None)):
            raise Invalid(f"trainArgs.{key} must be a number, string, boolean or list")
    field(train_args, "epochs", int, required=True)
    trainargs.check_arguments(train_args)
    model = field(train_args, "model", str, required=True)
    if not _UL_MODEL.match(model):  # a model of this appliance: checked at start
        trainargs.check_model(model, weights_dir)
    batch = field(train_args, "batch", (int, float), default=16)
    if batch == 0 or batch < -1:
        raise Invalid("trainArgs.batch must be a positive number, or -1 for automatic")
    return {k: v for k, v in train_args.items() if k not in _RESERVED}


#: A model of this appliance, as a base to train from (not ul://ultralytics/...).
_UL_MODEL = re.compile(
    r"^ul://(?!ultralytics/)([a-z0-9-]{2,39})/([a-z0-9-]{1,128})/([a-z0-9-]{1,128})$"
)


def _base_weights(request: Request, name: str) -> str | None:
    """The weights file of `ul://owner/project/model` when trainArgs.model names
    a model of this appliance (the caller must be able to see it)."""
    match = _UL_MODEL.match(name)
    if not match:
        return None
    base = find_model(request, *match.groups())
    path = weights_path(request, base)
    if path is None:
        raise Invalid(f"trainArgs.model: {name} has no trained weights to start from")
    return str(path)


#: The task a model file's name says, by its suffix (yolo26n-seg.yaml: segment).
_SUFFIX_TASKS = {"-seg": "segment", "-pose": "pose", "-obb": "obb", "-cls": "classify"}


_OFFICIAL_STEM = re.compile(r"^(yolo|rtdetr)[a-z0-9.]*?(-[a-z]+)?$")


def task_of_model_name(name: str) -> str | None:
    """The task an official model name says (yolo26n-seg.yaml: segment); None
    for a weight file of another name, whose task the name does not tell."""
    file = name.rsplit("/", 1)[-1]
    stem = Path(file).stem
    if (
        not name.startswith("ul://")
        and file.endswith(".pt")
        and not _OFFICIAL_STEM.match(stem)
    ):
        return None
    for suffix, task in _SUFFIX_TASKS.items():
        if stem.endswith(suffix):
            return task
    return "detect"


def _base_task(request: Request, name: str) -> str | None:
    match = _UL_MODEL.match(name)
    return find_model(request, *match.groups())["task"] if match else None


def _check_task(train_args: dict, dataset: dict, base_task: str | None) -> None:
    """The model, `task` and the dataset must agree: a segment model cannot
    learn from a detect dataset's boxes. Refused up front, not in the trainer."""
    model_task = base_task or task_of_model_name(train_args["model"])
    asked = train_args.get("task")
    if asked is not None and model_task is not None and asked != model_task:
        raise Invalid(
            f"trainArgs.task is {asked} but {train_args['model']} is a {model_task} model"
        )
    if asked is not None and asked != dataset["task"]:
        raise Invalid(
            f"trainArgs.task is {asked} but dataset {dataset['slug']} is a"
            f" {dataset['task']} dataset"
        )
    if model_task is not None and model_task != dataset["task"]:
        raise Invalid(
            f"trainArgs.model {train_args['model']} is a {model_task} model but"
            f" dataset {dataset['slug']} is a {dataset['task']} dataset"
        )


def _dataset_for(request: Request, data: str) -> dict:
    match = _UL_DATASET.match(data)
    if match:
        return find_dataset(request, match.group(1), match.group(2))
    if "/" not in data:
        return find_dataset(request, data)
    raise Invalid("trainArgs.data must be ul://owner/datasets/slug or a dataset id")


def _device_for(devices: list[gpus.Device], gpu_type: str | None) -> gpus.Device | None:
    """The device a gpuType asks for; None lets the queue choose any."""
    if gpu_type is None:
        return None
    device = gpus.pick(devices, gpu_type)
    if device is None:
        names = ", ".join(d.gpu_type for d in devices)
        raise Invalid(f"gpuType {gpu_type} is not on this appliance; it has: {names}")
    return device


def _ready_dataset(request: Request, data: str) -> dict:
    svc = services(request)
    dataset = _dataset_for(request, data)
    if dataset["status"] == "processing":
        raise Conflict(f"dataset {dataset['slug']} is still processing an ingest")
    problem = not_ready_reason(dataset, svc.db.dataset_stats(dataset["id"]))
    if problem:
        raise Invalid(f"dataset {dataset['slug']} is not ready to train: {problem}")
    return dataset


def _version_for(request: Request, dataset: dict, model: dict) -> dict:
    """The dataset version this run trains on: a new one, or the version that
    already has this content."""
    db = services(request).db
    images = db.all_images(dataset["id"])
    version, _ = db.create_dataset_version(
        dataset,
        images,
        ndjson.content_digest(dataset, images),
        f"trained by {model['owner']}/{model['project']}/{model['slug']}",
    )
    return version


def _start_response(model: dict, device: gpus.Device) -> dict:
    return {
        "modelId": model["id"],
        "status": "starting",
        "gpuType": device.gpu_type,
        "estimatedCost": {"pricePerHour": 0, "gpuMemoryGb": device.memory_gb},
        "billing": {
            "estimatedCostCents": 0,
            "estimatedCostDisplay": "$0.00",
            "balanceCents": 0,
        },
    }


def _not_training(db, model: dict) -> None:
    active = db.latest_job(model["id"], "train")
    if active and active["status"] in ACTIVE:
        raise Conflict("this model is already training")


async def start(request: Request):
    user = require_user(request)
    svc = services(request)
    body = await json_body(request)
    model = editable_model(request, field(body, "modelId", str, required=True))
    train_args = _check_args(
        field(body, "trainArgs", dict, required=True), svc.settings.home / "weights"
    )
    devices = await run_in_threadpool(lambda: svc.queue.devices)
    wanted = _device_for(devices, field(body, "gpuType", str))
    dataset = _ready_dataset(request, field(train_args, "data", str, required=True))
    base = _base_weights(request, train_args["model"])
    _check_task(train_args, dataset, base_task=_base_task(request, train_args["model"]))
    _not_training(svc.db, model)
    if model["weights_size"]:
        raise Conflict(
            "this model already has trained weights; train a new model instead"
        )
    version = await run_in_threadpool(_version_for, request, dataset, model)
    # Checked again with nothing awaited until the job exists: concurrent starts
    # of one model get one job, the others a 409.
    model = svc.db.model(model["id"]) or model
    _not_training(svc.db, model)
    if model["weights_size"]:
        raise Conflict(
            "this model already has trained weights; train a new model instead"
        )
    svc.db.update_model(
        model["id"],
        status="starting",
        train_args=train_args,
        dataset_id=dataset["id"],
        training_error=None,
        task=model["task"] or dataset["task"],
        metadata={
            **(model.get("metadata") or {}),
            "datasetVersion": version["version"],
            "datasetVersionId": version["id"],
        },
    )
    args = {
        "trainArgs": train_args,
        "datasetId": dataset["id"],
        "datasetVersion": version["version"],
    }
    if wanted is not None:
        args["deviceIndex"] = wanted.index
    if base is not None:
        args["baseWeights"] = base
    svc.queue.submit("train", model["id"], user["id"], args)
    return reply(_start_response(model, wanted or devices[0]))


def run_dir(settings, job: dict) -> Path:
    """Where a training job's ultralytics run (weights/, results.csv) lives."""
    resumed = (job["args"] or {}).get("resume")
    if resumed:
        return Path(resumed["runDir"])
    return settings.runs / job["id"] / "train"


def resumable_checkpoint(folder: Path) -> Path | None:
    """The newest checkpoint in a run that still has its optimizer state (what
    ultralytics needs to continue): last.pt, or resume.pt kept at a cancel."""
    found = []
    for name in ("last.pt", "resume.pt"):
        path = folder / "weights" / name
        if not path.is_file():
            continue
        try:
            checkpoint = read_pickle(path)
        except (BadCheckpoint, OSError):
            continue
        if checkpoint.get("optimizer") is not None and checkpoint.get("epoch", -1) >= 0:
            found.append(path)
    return max(found, key=lambda p: p.stat().st_mtime, default=None)


def _all_epochs_done(checkpoint: Path) -> bool:
    """Whether a checkpoint's run reached its last epoch (the appliance died
    between that epoch and the end of the run): nothing is left to resume."""
    try:
        data = read_pickle(checkpoint)
    except (BadCheckpoint, OSError):
        return False
    args = data.get("train_args") if isinstance(data.get("train_args"), dict) else {}
    epoch, epochs = data.get("epoch"), args.get("epochs")
    return isinstance(epoch, int) and isinstance(epochs, int) and epoch + 1 >= epochs


async def resume(request: Request):
    """POST .../training/resume: continue a run that ended early (failed, killed,
    interrupted, stalled or cancelled) from its last checkpoint, in a new job that
    keeps the run's epochs and arguments."""
    user = require_user(request)
    svc = services(request)
    model = model_of(request, edit=True)
    job = svc.db.latest_job(model["id"], "train")
    if job is None:
        raise Conflict("this model has never trained; start training instead")
    if job["status"] in ACTIVE:
        raise Conflict("this model is already training")
    if job["args"].get("remote"):
        raise Conflict(
            "this run streamed in from yolo train elsewhere; resume it there"
            " (yolo train resume model=.../last.pt)"
        )
    if job["status"] not in _RESUMABLE:
        raise Conflict(f"the last run {job['status']}; there is nothing to resume")
    folder = run_dir(svc.settings, job)
    checkpoint = await run_in_threadpool(resumable_checkpoint, folder)
    if checkpoint is None:
        raise Conflict(
            "the last run left no checkpoint to resume from (it ended before its"
            " first epoch); start training again instead"
        )
    if await run_in_threadpool(_all_epochs_done, checkpoint):
        raise Conflict(
            "the last run finished all its epochs before it stopped; its weights"
            " are final (download or export them), or start a new training"
        )
    dataset = _ready_dataset(request, job["args"]["datasetId"])
    version = await run_in_threadpool(_version_for, request, dataset, model)
    svc.db.update_model(
        model["id"],
        status="starting",
        training_error=None,
        completed_at=None,
        metadata={
            **(model.get("metadata") or {}),
            "datasetVersion": version["version"],
            "datasetVersionId": version["id"],
        },
    )
    args = {
        **job["args"],
        "datasetId": dataset["id"],
        "datasetVersion": version["version"],
        "resume": {
            "from": job["id"],
            "runDir": str(folder),
            "checkpoint": str(checkpoint),
        },
    }
    new = svc.queue.submit("train", model["id"], user["id"], args)
    return reply(
        {
            "modelId": model["id"],
            "jobId": new["id"],
            "status": "starting",
            "resumedFrom": job["id"],
            "checkpoint": checkpoint.name,
        }
    )


async def gpu_availability(request: Request):
    """Each local device by gpuType, with how free it is now: High when no training
    runs on it, Medium while one does, Low when more wait for it."""
    require_user(request)
    svc = services(request)
    devices = await run_in_threadpool(lambda: svc.queue.devices)
    load = device_load(svc.db, devices)
    return reply({d.gpu_type: gpus.load_level(*load[d.index]) for d in devices})


def device_load(db, devices: list[gpus.Device]) -> dict[str, tuple[int, int]]:
    """(running, waiting) training jobs per device index. A job waiting for any
    device counts against every device."""
    running = {d.index: 0 for d in devices}
    for row in db.query(
        "SELECT device FROM jobs WHERE kind = 'train' AND device IS NOT NULL"
        " AND status IN ('starting', 'running', 'stalled')"
    ):
        if row["device"] in running:
            running[row["device"]] += 1
    waiting = {d.index: 0 for d in devices}
    for row in db.query(
        "SELECT args FROM jobs WHERE kind = 'train' AND status = 'queued'"
    ):
        wanted = (row["args"] or {}).get("deviceIndex")
        for index in waiting:
            if wanted in (None, index):
                waiting[index] += 1
    return {i: (running[i], waiting[i]) for i in running}


ID = "/api/models/{model_id:id}"
SLUG = "/api/models/{owner}/{project}/{model}"

routes = [
    Route("/api/training/start", start, methods=["POST"]),
    Route("/api/training/gpu-availability", gpu_availability, methods=["GET"]),
    Route(f"{ID}/training/resume", resume, methods=["POST"]),
    Route(f"{SLUG}/training/resume", resume, methods=["POST"]),
]
