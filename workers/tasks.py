"""Thin Celery tasks: look up the loaded model, run it, return file names.

Arguments and results are JSON (model, parameters, seed, names); pixels stay in
``RESULTS_DIR``. ``acks_late`` may run a task twice after a crash, which is
harmless: the API always sends a seed, so a rerun rewrites the same files.
"""

from __future__ import annotations

import time
from typing import Any

import redis
from celery import Task

from . import runners
from .celery_app import app
from .config import get_settings
from .protocol import CLASSIFY_ROLES, DIGIT_ROLE, FACE_ROLES, TASK_CLASSIFY, TASK_DIGITS, TASK_FACES, deliveries_key
from .registry import batch_limit, get_batcher, get_registry
from .storage import JobFiles

PROGRESS_EVERY_S = 0.5  # Redis writes per job stay bounded whatever the step speed


def _files(task: Task) -> JobFiles:
    return JobFiles(get_settings().results_dir, task.request.id)


class WorkerKeptDying(RuntimeError):
    """A job whose worker process died on each of its runs: it is not run again."""


class JobTask(Task):
    """Counts the runs of each job, so a job that kills its worker process stops coming back.

    With ``acks_late`` and ``task_reject_on_worker_lost`` a job whose process dies is
    put back on its queue and runs again (it rewrites the same files: the seed is in
    its arguments); a crash that the job itself causes would repeat forever without
    this count.
    """

    _redis: redis.Redis | None = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        settings = get_settings()
        if JobTask._redis is None:
            JobTask._redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
        key = deliveries_key(self.request.id)
        pipe = JobTask._redis.pipeline()
        runs, _ = pipe.incr(key).expire(key, settings.job_ttl_seconds).execute()
        if runs > settings.max_deliveries:
            raise WorkerKeptDying(
                f"the worker process died on each of this job's {runs - 1} runs (out of memory, or a crash in the "
                f"model?), so it is not run again (MAX_DELIVERIES={settings.max_deliveries}): ask for fewer images"
            )
        return super().__call__(*args, **kwargs)


# The small tasks do not report STARTED: they finish within milliseconds, and the
# extra state write would wake every waiting request once more for nothing.
@app.task(bind=True, base=JobTask, name=TASK_FACES, track_started=False)
def generate_faces(self: Task, *, model: str, n: int, seed: int | None = None) -> dict[str, Any]:
    loaded = get_registry().get(FACE_ROLES[model])
    return runners.generate_faces(
        loaded, _files(self), variant=model, n=n, seed=seed, batcher=get_batcher(), max_batch=batch_limit("faces")
    )


@app.task(bind=True, base=JobTask, name=TASK_DIGITS)
def generate_digits(
    self: Task,
    *,
    labels: list[int],
    n: int,
    seed: int | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    guidance_interval: list[int] | None = None,
    frames: bool = False,
) -> dict[str, Any]:
    loaded = get_registry().get(DIGIT_ROLE)
    last = 0.0

    def progress(step: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if step == 1 or step == total or now - last >= PROGRESS_EVERY_S:
            last = now
            self.update_state(state="PROGRESS", meta={"step": step, "total": total})

    return runners.generate_digits(
        loaded,
        _files(self),
        labels=labels,
        n=n,
        seed=seed,
        sampler=sampler,
        steps=steps,
        guidance=guidance,
        guidance_interval=guidance_interval,
        frames=frames,
        progress=progress,
    )


@app.task(bind=True, base=JobTask, name=TASK_CLASSIFY, track_started=False)
def classify_digits(self: Task, *, target: str, inputs: list[str], names: list[str]) -> dict[str, Any]:
    loaded = get_registry().get(CLASSIFY_ROLES[target])
    return runners.classify_digits(
        loaded,
        _files(self),
        target=target,
        inputs=inputs,
        names=names,
        batcher=get_batcher(),
        max_batch=batch_limit("classify"),
        chunk=get_settings().batch_max_classify,
    )
