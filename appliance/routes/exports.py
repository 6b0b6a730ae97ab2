"""Model exports: create (a queued job), list, retrieve; files come signed."""

from __future__ import annotations

from importlib.util import find_spec

from starlette.requests import Request
from starlette.routing import Route

from ..errors import Invalid, NotFound
from ..serialize import export_json
from ..web import field, json_body, q_choice, q_int, reply, require_user, services
from .models import editable_model, find_model, weights_path

#: Contract formats, each with the Python packages it needs on this machine.
FORMATS: dict[str, tuple[str, ...]] = {
    "onnx": ("onnx",),
    "torchscript": (),
    "openvino": ("openvino",),
    "ncnn": ("ncnn", "pnnx"),
    "mnn": ("MNN",),
    "paddle": ("paddle", "x2paddle"),
    "executorch": ("executorch",),
    "litert": ("litert_torch",),
    "saved_model": ("tensorflow", "onnx2tf"),
    "pb": ("tensorflow", "onnx2tf"),
    "coreml": ("coremltools",),
    "engine": ("tensorrt",),
}
UNAVAILABLE = frozenset(
    {
        "edgetpu",
        "rknn",
        "qnn",
        "imx",
        "axelera",
        "deepx",
        "hailo",
        "ascend",
        "xilinx",
        "coreai",
    }
)
STATUSES = ("queued", "starting", "running", "completed", "failed", "cancelled")
_ARG_TYPES = {
    "imgsz": int,
    "dynamic": bool,
    "simplify": bool,
    "opset": int,
    "batch": int,
    "half": bool,
    "nms": bool,
}


def _check_format(name: str) -> None:
    if name not in FORMATS and name not in UNAVAILABLE:
        known = ", ".join(sorted(FORMATS) + sorted(UNAVAILABLE))
        raise Invalid(f"unknown format {name!r}; formats are: {known}")
    if name in UNAVAILABLE:
        raise Invalid(
            f"format {name} needs a vendor toolkit or hardware this appliance does not have"
        )
    missing = [pkg for pkg in FORMATS[name] if find_spec(pkg) is None]
    if missing:
        raise Invalid(
            f"format {name} needs the Python package(s) {', '.join(missing)}, not installed here"
        )


def _check_args(args: dict) -> dict:
    clean = {}
    for key, value in args.items():
        kind = _ARG_TYPES.get(key)
        if kind is None:
            raise Invalid(
                f"args.{key} is not a supported export argument ({', '.join(sorted(_ARG_TYPES))})"
            )
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            label = "an integer" if kind is int else "true or false"
            raise Invalid(f"args.{key} must be {label}")
        clean[key] = value
    limits = {"imgsz": (32, 4096), "opset": (7, 23), "batch": (1, 1024)}
    for key, (low, high) in limits.items():
        if key in clean and not low <= clean[key] <= high:
            raise Invalid(f"args.{key} must be between {low} and {high}")
    return clean


def _path(request: Request) -> tuple[str, str, str]:
    p = request.path_params
    return p["owner"], p["project"], p["model"]


async def create(request: Request):
    user = require_user(request)
    model = editable_model(request, *_path(request))
    body = await json_body(request)
    fmt = field(body, "format", str, required=True)
    _check_format(fmt)
    args = _check_args(field(body, "args", dict, default={}))
    if weights_path(request, model) is None:
        raise Invalid("this model has no trained weights to export")
    svc = services(request)
    export = svc.db.create_export(model_id=model["id"], format=fmt, args=args)
    job = svc.queue.submit("export", export["id"], user["id"])
    svc.db.update_export(export["id"], job_id=job["id"])
    return reply(
        {"id": export["id"], "format": fmt, "status": "queued", "region": "us"}, 201
    )


async def list_exports(request: Request):
    model = find_model(request, *_path(request))
    svc = services(request)
    rows = svc.db.exports_of(
        model["id"],
        q_choice(request, "status", STATUSES, None),
        q_int(request, "limit", 20, 1, 100),
    )
    return reply(
        {"exports": [export_json(r, svc.signer) for r in rows], "region": "us"}
    )


async def retrieve(request: Request):
    model = find_model(request, *_path(request))
    svc = services(request)
    row = svc.db.export(request.path_params["export_id"])
    if row is None or row["model_id"] != model["id"]:
        raise NotFound("Export not found")
    return reply({"export": export_json(row, svc.signer)})


routes = [
    Route("/api/models/{owner}/{project}/{model}/exports", create, methods=["POST"]),
    Route(
        "/api/models/{owner}/{project}/{model}/exports", list_exports, methods=["GET"]
    ),
    Route(
        "/api/models/{owner}/{project}/{model}/exports/{export_id}",
        retrieve,
        methods=["GET"],
    ),
]
