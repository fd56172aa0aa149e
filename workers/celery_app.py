"""The Celery application the workers run: ``celery -A workers.celery_app worker``.

Models are loaded in ``worker_process_init`` (see ``workers.registry``), i.e. in
each pool child after the fork, so the forking parent never touches CUDA and the
prefork pool is CUDA-safe.

Queues: tasks are routed by ``contract.queues.task_routes()`` (in ``contract.broker.base_config``),
the same table the API publishes with. Without ``-Q`` a worker consumes ``WORKER_QUEUES``; with
``-Q`` it consumes those, and either way it loads only the models of the queues
it really consumes (``workers.registry``).

Stopping: a job must never wait out the Redis visibility timeout (above the hard
time limit, so ~20 minutes) because its worker was stopped. Celery's plain warm
shutdown (SIGTERM) waits for running jobs without bound, and whoever stops the
worker (``python -m stack``, ``docker stop``) sends SIGKILL after a while, which
strands the job's message in kombu's unacked hash until that timeout. So:

- the diffusion worker (prefork, jobs of minutes) runs with ``REMAP_SIGTERM=SIGQUIT``
  (``stack.services.WorkerSpec.env``, ``docker-compose.yml``): SIGTERM starts Celery's
  *soft shutdown*, which lets the running job finish for up to ``SHUTDOWN_GRACE_S``
  and then cancels it; with ``acks_late`` its message goes straight back on its
  queue, and ``workers.tasks`` does not count such a run against ``MAX_DELIVERIES``;
- the small worker (threads pool, jobs of milliseconds, which a threads pool cannot
  cancel anyway) keeps the warm shutdown: running jobs finish, and the messages
  it holds but has not started are put back on the queue when its connection closes.

Whoever stops a worker waits ``SHUTDOWN_GRACE_S`` plus a margin before SIGKILL
(``stack.services.LocalStack.stop``, compose's ``stop_grace_period``).
"""

from __future__ import annotations

from celery import Celery

from contract.broker import base_config, consumed_queues

from .config import get_settings

settings = get_settings()

app = Celery("workers", broker=settings.redis_url, backend=settings.redis_url, include=["workers.tasks"])
app.conf.update(
    **base_config(),
    task_queues=consumed_queues(settings.queues),
    # Ack after the task returns, one message at a time: a worker that dies
    # mid-job does not swallow the jobs queued behind it.
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    # A job whose process dies (killed, out of memory) goes back on its queue at once
    # and runs again; ``workers.tasks.JobTask`` fails it after MAX_DELIVERIES, so a
    # job that kills its process every time is not redelivered forever.
    task_reject_on_worker_lost=True,
    task_track_started=True,
    task_soft_time_limit=settings.task_soft_time_limit,
    task_time_limit=settings.task_time_limit,
    result_expires=settings.job_ttl_seconds,
    # Redis redelivers unacked messages after the visibility timeout; keep it
    # above the hard time limit so a long job is not run twice.
    broker_transport_options={"visibility_timeout": settings.task_time_limit + 300},
    broker_connection_retry_on_startup=True,
    # A Redis restart mid-job: progress and the final state are stored once it is back, not lost with the job
    # (full-jitter back-off from 0.1 s, capped at 2 s: about as long as workers.redis_client rides out).
    result_backend_always_retry=True,
    result_backend_max_retries=20,
    result_backend_base_sleep_between_retries_ms=100,
    result_backend_max_sleep_between_retries_ms=2000,
    # Soft shutdown (see above): at most this long for a running job, then back on its queue.
    worker_soft_shutdown_timeout=settings.shutdown_grace_s,
    # Loading every checkpoint (and initialising CUDA) in a fresh child can take
    # far longer than the 4 s Celery allows by default.
    worker_proc_alive_timeout=180,
    worker_hijack_root_logger=False,
)
