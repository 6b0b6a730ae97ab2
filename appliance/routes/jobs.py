"""Jobs: the appliance's own view of queued work (not in the Platform contract).

The terminal UI and scripts use it to follow any job, and an ingest job lists
the verdict on every file it read."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import Route

from ..errors import NotFound
from ..web import q_choice, q_int, reply, require_user, services

STATUSES = (
    "queued",
    "starting",
    "running",
    "stalled",
    "completed",
    "failed",
    "cancelled",
    "interrupted",
)
VERDICTS = ("accepted", "fixed", "rejected")
FILES_PAGE = 1000
MAX_FILES_PAGE = 10_000


def job_json(job: dict, queue=None) -> dict:
    """A job; with the queue, a waiting training job's place in it
    (`queuePosition`, 1 starts next)."""
    out = {
        "id": job["id"],
        "kind": job["kind"],
        "subjectId": job["subject_id"],
        "status": job["status"],
        "progress": job["progress"],
        "message": job["message"],
        "result": job["result"],
        "error": job["error"],
        "createdAt": job["created_at"],
        "updatedAt": job["updated_at"],
        "startedAt": job["started_at"],
        "finishedAt": job["finished_at"],
    }
    if job.get("device"):
        out["device"] = job["device"]
    if queue is not None and (position := queue.queue_position(job)) is not None:
        out["queuePosition"] = position
    return out


async def list_jobs(request: Request):
    user = require_user(request)
    status = q_choice(request, "status", STATUSES, None)
    limit = q_int(request, "limit", 50, 1, 500)
    rows = [
        j
        for j in services(request).db.jobs(status, limit)
        if j["user_id"] == user["id"]
    ]
    queue = services(request).queue
    return reply({"jobs": [job_json(j, queue) for j in rows]})


async def retrieve(request: Request):
    user = require_user(request)
    db = services(request).db
    job = db.job(request.path_params["job_id"])
    if job is None or job["user_id"] != user["id"]:
        raise NotFound("Job not found")
    svc = services(request)
    out = job_json(job, svc.queue)
    if job["kind"] == "train":
        # the end of the trainer's console output (ultralytics' own log)
        log = svc.settings.runs / job["id"] / "train.log"
        out["logTail"] = await run_in_threadpool(svc.queue.log_tail, log, 40)
    if job["kind"] == "ingest":
        out.update(_report_page(request, job, out))
    return reply({"job": out})


def _report_page(request: Request, job: dict, out: dict) -> dict:
    """A page of an ingest's verdicts (`filesOffset`, `filesLimit`), optionally
    only one verdict or reason: `files`, `filesTotal` and, when more follow,
    `nextFilesOffset`."""
    offset = q_int(request, "filesOffset", 0, 0, 10**9)
    limit = q_int(request, "filesLimit", FILES_PAGE, 1, MAX_FILES_PAGE)
    verdict = q_choice(request, "verdict", VERDICTS, None)
    reason = request.query_params.get("reason") or None
    # A dry run stores nothing: its verdicts travel in the job's result.
    result = dict(job["result"] or {})
    dry = result.pop("files", None)
    if dry is not None:
        out["result"] = result
        rows = [
            r
            for r in dry
            if (verdict is None or r["verdict"] == verdict)
            and (reason is None or r["reason"] == reason)
        ]
        total, files = len(rows), rows[offset : offset + limit]
    else:
        files, total = services(request).db.ingest_report_page(
            job["subject_id"], job["id"], offset, limit, verdict, reason
        )
    page = {"files": files, "filesTotal": total}
    if offset + len(files) < total:
        page["nextFilesOffset"] = offset + len(files)
    return page


routes = [
    Route("/api/jobs", list_jobs, methods=["GET"]),
    Route("/api/jobs/{job_id}", retrieve, methods=["GET"]),
]
