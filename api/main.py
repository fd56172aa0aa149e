"""The FastAPI application: ``uvicorn api.main:create_app --factory``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi_offline import FastAPIOffline
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_fastapi_instrumentator import Instrumentator

from api import errors, openapi
from api.access import keys as security
from api.access.rate_limits import RateLimiter
from api.config import Settings
from api.middleware import BodySizeLimit, JsonBodyLimit
from api.operations.live_workers import LiveWorkers
from api.operations.metrics import ServiceCollector
from api.operations.retention import ResultsJanitor
from api.routes import classify, digits, faces, health, jobs, live, models, playground
from api.routes.common import error_responses
from api.service.files import ResultFiles
from api.service.job_service import JobService
from api.service.live_events import JobEventStreams
from api.service.redis_client import make_redis
from contract.broker import api_celery
from contract.queues import QUEUE_DIFFUSION, QUEUE_SMALL
from contract.store import make_store

DESCRIPTION = """
On-demand DCGAN faces, class-conditional diffusion digits (MNIST-M style) and
domain-adapted (DANN) digit classification, from the models of DLCV 2022 homework 2.

**How a request runs.** Every POST creates a job that a worker runs. The request waits
up to `wait` seconds for it: finished in time, the answer is `200` with the result;
otherwise `202` with the job's URL, which `GET /jobs/{id}` reports on (a diffusion job
shows its step) until it has succeeded. Images are PNGs under `/jobs/{id}/images/`.
With `Accept: image/png` the generate endpoints answer with the grid image itself.

**Errors** are `{"detail": "..."}` saying what to change.

**Keys.** When the server sets `API_KEYS`, every endpoint but `/healthz` needs one, sent as
`X-API-Key: <key>` or `Authorization: Bearer <key>`; here, enter it with **Authorize**.
"""

TAGS = [
    {"name": "generate", "description": "Faces and digits from the generative models."},
    {"name": "classify", "description": "Digits from another domain, classified by the adapted model."},
    {"name": "jobs", "description": "Status, progress and results of the jobs the POSTs create."},
    {"name": "operations", "description": "Loaded models, health, readiness and metrics."},
]


def _metrics(app: FastAPI, guards: list[Any], responses: dict[int | str, dict[str, Any]]) -> None:
    # A registry per app (not the process-global one), so several apps can live in one process (tests).
    registry = CollectorRegistry()
    for collector in (ProcessCollector, PlatformCollector, GCCollector):
        collector(registry=registry)
    registry.register(ServiceCollector(app.state.settings.redis_url))  # queues, workers, task counts
    Instrumentator(registry=registry, excluded_handlers=["/metrics"]).instrument(app).expose(
        app,
        tags=["operations"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        description=(
            "Request counts and latencies per route; jobs waiting per queue (`genserve_queue_length`), live "
            "workers per queue (`genserve_workers_up`), and per task and model the runs by outcome "
            "(`genserve_tasks_total`) and their runtimes (`genserve_task_duration_seconds`), in the Prometheus "
            "text format.\n\n```\ncurl localhost:8000/metrics\n```"
        ),
        dependencies=guards,
        responses={
            **responses,
            200: {
                "content": {
                    "text/plain": {
                        "schema": {"type": "string"},
                        "example": 'http_requests_total{handler="/generate/faces",method="POST",status="2xx"} 3.0\n',
                    }
                },
                "description": "Prometheus exposition format.",
            }
        },
    )


def _lifespan(settings: Settings) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """What each API process holds while it serves: Redis, the Celery handle, the job service, the
    results store and its janitor (which runs with no worker up too)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redis = make_redis(
            settings.redis_url, max_connections=settings.redis_max_connections, wait_s=settings.redis_pool_wait_s
        )
        celery = api_celery(settings.redis_url, settings.job_ttl_seconds)
        store = make_store(settings)
        app.state.redis, app.state.store = redis, store
        app.state.jobs = JobService(
            celery,
            redis,
            settings.job_ttl_seconds,
            files=ResultFiles(store, presign=settings.results_presign, url_ttl_s=settings.results_url_ttl_s),
            queue_bounds={QUEUE_SMALL: settings.max_queued_small, QUEUE_DIFFUSION: settings.max_queued_diffusion},
            base_url=settings.public_base_url,
        )
        app.state.workers = LiveWorkers(redis)
        app.state.events = JobEventStreams(app.state.jobs, redis)
        app.state.limiter = (
            RateLimiter(
                redis.connection_pool, settings.redis_url, writes=settings.rate_limit, reads=settings.rate_limit_reads
            )
            if settings.rate_limit or settings.rate_limit_reads
            else None
        )
        janitor = ResultsJanitor(
            store,
            ttl_s=settings.job_ttl_seconds,
            max_bytes=settings.results_max_bytes,
            every_s=settings.results_sweep_seconds,
        )
        cleanup = asyncio.create_task(janitor.run(), name="results-cleanup")
        try:
            yield
        finally:
            cleanup.cancel()
            await app.state.events.close()
            await app.state.jobs.results.close()
            await redis.aclose()
            celery.close()

    return lifespan


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    # Swagger UI and ReDoc assets are served by the app itself, not a CDN, so /docs
    # works on machines without internet access.
    app = FastAPIOffline(
        title="DLCV generative models service",
        version="0.1.0",
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=_lifespan(settings),
    )
    app.state.settings = settings
    errors.install(app)
    # Every route but /healthz (and the docs, which FastAPIOffline adds) behind the key check and rate limit.
    guards = security.route_guards(settings)
    guarded = error_responses(*security.guard_error_codes(settings))
    for module in (faces, digits, classify, jobs, live, models):
        app.include_router(module.router, dependencies=guards, responses=guarded)
    app.include_router(health.liveness)
    app.include_router(playground.router)
    app.mount(playground.STATIC_PREFIX, playground.static_files(), name="playground")
    app.include_router(health.router, dependencies=guards, responses=guarded)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(JsonBodyLimit, max_bytes=settings.max_json_bytes, max_depth=settings.max_json_depth)
    security.install(app, settings)
    openapi.install(app, settings)
    _metrics(app, guards, guarded)
    return app
