"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from api.deps import JobsDep, RedisDep, WorkersDep
from api.schemas import Health, Readiness, ReadyCheck
from contract.registration import WorkerRegistration, without_paths
from contract.roles import SERVED_ROLES
from contract.store import ResultStore

router = APIRouter(tags=["operations"])
# Apart from ``router`` because it stays open when API keys are on (api.access.keys).
liveness = APIRouter(tags=["operations"])



@liveness.get(
    "/healthz",
    response_model=Health,
    summary="Liveness: the API process answers",
    description='Always `200 {"status": "ok"}` while the process serves HTTP; it checks nothing else (see `/readyz`).',
    # Liveness has no error response of its own: if it cannot answer, there is no answer.
)
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    summary="Readiness: Redis, a worker and its models",
    description=(
        "`200` when Redis answers, the results store can be used, at least one worker process is reporting (its "
        "last heartbeat within two of its `HEARTBEAT_SECONDS`), and "
        "every served model "
        "(faces A and B, digits, classify svhn and usps) is loaded and warmed up (one forward pass done) by "
        "some worker; otherwise `503` with the failing checks and why.\n\n```\ncurl localhost:8000/readyz\n```"
    ),
    responses={503: {"model": Readiness, "description": "Not ready: `checks` says what is missing."}},
)
async def readyz(redis: RedisDep, workers: WorkersDep, jobs: JobsDep) -> JSONResponse:
    checks: list[ReadyCheck] = [await store_check(jobs.files.store)]
    try:
        await redis.ping()
        checks.append(ReadyCheck(name="redis", ok=True, detail="PING answered"))
        live = await workers.live()
    except RedisError as err:
        checks.append(ReadyCheck(name="redis", ok=False, detail=f"unreachable ({err}): start Redis or fix REDIS_URL"))
        live = []
    checks.append(
        ReadyCheck(
            name="worker",
            ok=bool(live),
            detail=f"{len(live)} worker process(es) reporting"
            if live
            else "no worker is reporting: start one (celery -A workers.celery_app worker)",
        )
    )
    checks.append(models_check(live))
    body = Readiness(ready=all(check.ok for check in checks), checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if body.ready else 503)


async def store_check(store: ResultStore) -> ReadyCheck:
    try:
        await run_in_threadpool(store.check)
    except (RuntimeError, OSError) as err:
        return ReadyCheck(name="store", ok=False, detail=without_paths(str(err)))
    return ReadyCheck(name="store", ok=True, detail=f"the {store.describe()} can be used")


def models_check(live: list[WorkerRegistration]) -> ReadyCheck:
    """Every served model loaded and warm on some live worker; else which are not, and why."""
    loaded = {model.role: model.name for worker in live for model in worker.models}
    warm = {model.role for worker in live for model in worker.models if model.warm}
    absent = [role for role in SERVED_ROLES if role not in loaded]
    cold = [role for role in SERVED_ROLES if role in loaded and role not in warm]
    reasons = {m.role: f"{m.name}: {m.reason}" for worker in live for m in worker.missing}
    problems = []
    if absent:
        problems.append("not loaded: " + "; ".join(reasons.get(role, role) for role in absent))
    if cold:
        problems.append(
            "not warm yet (loaded, first forward pass running): "
            + ", ".join(f"{role} ({loaded[role]})" for role in cold)
        )
    return ReadyCheck(
        name="models",
        ok=not problems,
        detail=" | ".join(problems) or f"all {len(SERVED_ROLES)} served models loaded and warmed up",
    )
