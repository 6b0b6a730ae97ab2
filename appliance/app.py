"""The application factory: one settings object in, one Starlette app out."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute

from .blobs import BlobStore
from .errors import ApplianceError
from .hooks import Deliverer
from .jobs import JobQueue
from .jobs.annotating import run_annotate
from .jobs.embedding import run_embeddings
from .jobs.exporting import run_export
from .jobs.ingesting import run_gdpr_export, run_ingest_job
from .jobs.training import run_training
from .keys import Keyring
from .ratelimit import RateLimitMiddleware
from .routes import (
    account,
    auth,
    classes,
    dataset_ai,
    datasets,
    explore,
    exports,
    files,
    gdpr,
    hooks,
    images,
    integrations,
    jobs,
    model_ops,
    models,
    official,
    projects,
    teams,
    training,
    trash,
    upload,
    users,
    versions,
    webhooks,
)
from .settings import Settings
from .signing import Signer, load_secret
from .store import Database
from .sweep import sweep_all
from .vision import Predictor
from .web import Services

logger = logging.getLogger(__name__)


def build_services(settings: Settings) -> Services:
    settings.home.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_path)
    blobs = BlobStore(settings.blobs)
    signer = Signer(
        load_secret(settings.home / "secret.key"),
        settings.base_url,
        settings.signed_url_ttl,
    )
    queue = JobQueue(settings, db, blobs)
    queue.register("ingest", lambda job: run_ingest_job(queue, job))
    queue.register("train", lambda job: run_training(queue, job))
    queue.register("export", lambda job: run_export(queue, job))
    queue.register("gdpr_export", lambda job: run_gdpr_export(queue, job))
    predictor = Predictor()
    queue.register("embeddings", lambda job: run_embeddings(queue, predictor, job))
    queue.register("annotate", lambda job: run_annotate(queue, predictor, job))
    return Services(
        settings=settings,
        db=db,
        blobs=blobs,
        signer=signer,
        queue=queue,
        predictor=predictor,
        keyring=Keyring(db),
    )


async def _appliance_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApplianceError)
    if exc.status >= 500:
        logger.error("%s %s: %s", request.method, request.url.path, exc.message)
    return JSONResponse(
        {"error": exc.message},
        status_code=exc.status,
        headers={"X-Error-Code": exc.code},
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    codes = {
        404: "NOT_FOUND",
        405: "VALIDATION_ERROR",
        401: "UNAUTHORIZED",
        403: "FORBIDDEN",
    }
    message = {404: "Not found", 405: "Method not allowed"}.get(
        exc.status_code, str(exc.detail)
    )
    return JSONResponse(
        {"error": message},
        status_code=exc.status_code,
        headers={
            **(exc.headers or {}),
            "X-Error-Code": codes.get(exc.status_code, "VALIDATION_ERROR"),
        },
    )


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception(
        "unhandled error on %s %s", request.method, request.url.path, exc_info=exc
    )
    return JSONResponse(
        {"error": "Internal server error"},
        status_code=500,
        headers={"X-Error-Code": "INTERNAL_ERROR"},
    )


def _id_routes_first(*groups: list[BaseRoute]) -> list[BaseRoute]:
    """All routes, those with an `{x:id}` segment first: an id never matches a
    username, while an `{owner}` segment would swallow an id, so a seed id route
    must be tried before any owner/slug route of the same shape."""
    flat = [route for group in groups for route in group]
    return sorted(flat, key=lambda route: ":id}" not in getattr(route, "path", ""))


def create_app(settings: Settings, *, run_queue: bool = True) -> Starlette:
    """Build the app. `run_queue=False` leaves the consumer stopped (for tests that
    only need the API)."""
    services = build_services(settings)
    deliverer = Deliverer(services.db, settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if run_queue:
            services.queue.start()
            threading.Thread(
                target=sweep_all,
                args=(services.db, services.blobs),
                name="sweep",
                daemon=True,
            ).start()
            deliverer.start()
        logger.info(
            "appliance ready at %s (data home %s)", settings.base_url, settings.home
        )
        try:
            yield
        finally:
            if run_queue:
                await run_in_threadpool(services.queue.stop)
                await run_in_threadpool(deliverer.stop)
            logger.info("appliance stopped")

    app = Starlette(
        routes=_id_routes_first(
            account.routes,
            upload.routes,
            files.routes,
            versions.routes,
            dataset_ai.routes,
            images.routes,
            classes.routes,
            datasets.routes,
            trash.routes,
            projects.routes,
            official.routes,
            models.routes,
            model_ops.routes,
            webhooks.routes,
            exports.routes,
            training.routes,
            jobs.routes,
            auth.routes,
            teams.routes,
            users.routes,
            explore.routes,
            gdpr.routes,
            integrations.routes,
            hooks.routes,
        ),
        exception_handlers={
            ApplianceError: _appliance_error,
            HTTPException: _http_error,
            Exception: _server_error,
        },
        lifespan=lifespan,
    )
    app.add_middleware(
        RateLimitMiddleware,
        limits=settings.rate_limits,
        ip_limit=settings.ip_rate_limit,
        window=settings.rate_window,
    )
    # A trailing slash is a 404 like any unknown path, never a redirect built
    # from the Host header.
    app.router.redirect_slashes = False
    app.state.services = services
    app.state.key_touched = {}
    return app
