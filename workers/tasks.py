"""Thin Celery tasks: look up the loaded model, run it, return file names.

Arguments and results are JSON (model, parameters, seed, names); pixels stay in
``RESULTS_DIR``. ``acks_late`` may run a task twice after a crash, which is
harmless: the API always sends a seed, so a rerun rewrites the same files.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import redis
from celery import Task, states

from contract import task_metrics
from contract.keys import cancel_key, deliveries_key, job_key
from contract.queues import TASK_CLASSIFY, TASK_DIGITS, TASK_FACES
from contract.quota import trim_to_quota
from contract.roles import CLASSIFY_ROLES, DIGIT_ROLE, FACE_ROLES, SERVED

from . import live, orphans, redis_client, webhooks  # noqa: F401 - orphans connects its signals
from .celery_app import app
from .config import get_settings
from .lifecycle import batch_limit, get_batcher, get_registry, get_store

if TYPE_CHECKING:
    from .storage import JobFiles

log = logging.getLogger(__name__)

# A cancel is what the user asked for: logged in a line, not as an error with a traceback.
EXPECTED = (live.JobCanceled,)
PROGRESS_EVERY_S = 0.5  # Redis writes per job stay bounded whatever the step speed
_trimming = threading.Lock()  # one quota pass at a time per process (the small worker runs jobs in threads)


def _files(task: Task) -> JobFiles:
    # Torch (storage, runners) is imported only in the processes that run jobs: a Celery parent imports
    # this module to know its tasks, and must neither carry torch into its forks nor wait on its exit handlers.
    from .storage import JobFiles

    return JobFiles(get_store(), task.request.id)


class WorkerKeptDying(RuntimeError):
    """A job whose worker process died on each of its runs: it is not run again."""


def model_label(task: str, kwargs: dict[str, Any]) -> str:
    """The checkpoint a job of ``task`` runs, from its arguments (the ``model`` label of its metrics)."""
    try:
        if task == TASK_FACES:
            role = FACE_ROLES[kwargs["model"]]
        elif task == TASK_CLASSIFY:
            role = CLASSIFY_ROLES[kwargs["target"]]
        else:
            role = DIGIT_ROLE
    except (KeyError, TypeError):
        return "unknown"
    return SERVED.get(role, role)


def task_label(task: str) -> str:
    return task.rsplit(".", 1)[-1]


class JobTask(Task):
    """Counts the runs of each job, so a job that kills its worker process stops coming back,
    and records each run's outcome and runtime (``contract.task_metrics``).

    With ``acks_late`` and ``task_reject_on_worker_lost`` a job whose process dies is
    put back on its queue and runs again (it rewrites the same files: the seed is in
    its arguments); a crash that the job itself causes would repeat forever without
    this count. A run that a graceful shutdown cancels is not the job's fault, so it
    is taken off the count again.
    """

    _redis: redis.Redis | None = None

    @classmethod
    def client(cls) -> redis.Redis:
        if JobTask._redis is None:
            JobTask._redis = redis_client.connect(get_settings().redis_url)
        return JobTask._redis

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        settings = get_settings()
        job_id = self.request.id
        key = deliveries_key(job_id)
        pipe = self.client().pipeline()
        # One round trip: count this run, see whether the job was canceled while it waited,
        # and read its record for the webhook that after_return notifies.
        pipe.incr(key).expire(key, settings.job_ttl_seconds).exists(cancel_key(job_id)).get(job_key(job_id))
        runs, _, canceled, record = pipe.execute()
        self.request.webhook = webhooks.webhook_in(record)
        started = time.perf_counter()
        state: task_metrics.State | None = "failed"
        try:
            if canceled:
                raise live.JobCanceled(live.CANCELED_BEFORE_START)
            if runs > settings.max_deliveries:
                raise WorkerKeptDying(
                    f"the worker process died on each of this job's {runs - 1} runs (out of memory, or a crash in the "
                    f"model?), so it is not run again (MAX_DELIVERIES={settings.max_deliveries}): ask for fewer images"
                )
            result = super().__call__(*args, **kwargs)
            state = "succeeded"
            return result
        except live.JobCanceled:
            state = "canceled"
            raise
        except SystemExit:
            # billiard turns the signal a soft shutdown cancels a pool process with into
            # SystemExit; the message goes back on the queue, and the run was not the job's fault.
            state = None
            self._give_back(job_id)
            raise
        finally:
            if state is not None:
                self._record(job_id, kwargs, state, time.perf_counter() - started)

    def _give_back(self, job_id: str) -> None:
        try:
            self.client().decr(deliveries_key(job_id))
            # Back in the queue: reported as queued again, not as running at its last step.
            self.update_state(task_id=job_id, state=states.PENDING, meta=None)
        except redis.RedisError as err:
            log.warning("could not give back the run of %s: %s", job_id, err)

    def after_return(self, status: str, retval: Any, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        # Celery has stored the outcome by now, so the webhook worker reads the job as GET /jobs/{id} shows it.
        # Not reached when the process dies or a soft shutdown puts the job back: it has not ended.
        if status not in states.READY_STATES:
            return
        try:
            webhooks.enqueue_if_asked(self.app, task_id, getattr(self.request, "webhook", None))
        except Exception as err:  # noqa: BLE001 - the job's outcome stands; a lost notice is logged, not a failed job
            log.warning("could not queue the webhook of %s: %s", task_id, err)
        self._enforce_quota(task_id)

    @staticmethod
    def _enforce_quota(job_id: str) -> None:
        """RESULTS_MAX_BYTES as results are written: once the client can have its result, the oldest finished jobs
        go until the store is under the quota again (the API's sweep is only the backstop)."""
        if not _trimming.acquire(blocking=False):
            return  # another thread of this worker is trimming now: the store ends under the quota all the same
        try:
            trimmed = trim_to_quota(get_store(), get_settings().results_max_bytes, keep=(job_id,), finished_only=True)
        except Exception as err:  # noqa: BLE001 - an OSError, a botocore error: the next job or the sweep retries
            log.warning("could not enforce RESULTS_MAX_BYTES after %s: %s", job_id, err)
            return
        finally:
            _trimming.release()
        if trimmed.removed:
            log.info("RESULTS_MAX_BYTES: removed the %d oldest jobs (%d bytes)", trimmed.removed, trimmed.freed)

    def _record(self, job_id: str, kwargs: dict[str, Any], state: task_metrics.State, seconds: float) -> None:
        try:
            task_metrics.record(self.client(), task_label(self.name), model_label(self.name, kwargs), state, seconds)
        except redis.RedisError as err:  # the job's own outcome matters more than its metrics
            log.warning("could not record metrics of %s: %s", job_id, err)


# The small tasks do not report STARTED: they finish within milliseconds, and the
# extra state write would wake every waiting request once more for nothing.
@app.task(bind=True, base=JobTask, name=TASK_FACES, track_started=False, throws=EXPECTED)
def generate_faces(self: Task, *, model: str, n: int, seed: int | None = None) -> dict[str, Any]:
    loaded = get_registry().get(FACE_ROLES[model])
    from . import runners  # see _files

    return runners.generate_faces(
        loaded, _files(self), variant=model, n=n, seed=seed, batcher=get_batcher(), max_batch=batch_limit("faces")
    )


@app.task(bind=True, base=JobTask, name=TASK_DIGITS, throws=EXPECTED)
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
    animation: bool = False,
) -> dict[str, Any]:
    loaded = get_registry().get(DIGIT_ROLE)
    events = live.JobEvents(JobTask.client(), self.request.id, get_settings().job_ttl_seconds)
    last = 0.0

    def progress(step: int, total: int) -> None:
        nonlocal last
        events.progress(step, total)  # every step, live; raises JobCanceled once canceled
        now = time.monotonic()
        if step == 1 or step == total or now - last >= PROGRESS_EVERY_S:
            last = now
            self.update_state(state="PROGRESS", meta={"step": step, "total": total})

    from . import runners  # see _files

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
        animation=animation,
        progress=progress,
        on_frame=events.frame,
    )


@app.task(bind=True, base=JobTask, name=TASK_CLASSIFY, track_started=False, throws=EXPECTED)
def classify_digits(self: Task, *, target: str, inputs: str, names: list[str]) -> dict[str, Any]:
    loaded = get_registry().get(CLASSIFY_ROLES[target])
    from . import runners  # see _files

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
