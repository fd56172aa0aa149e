"""The service as local child processes: one Celery worker per queue, and uvicorn.

``python -m stack`` (``make run``), the end-to-end tests and
``python -m bench`` start the workers from here, with the same commands, so the
tests and the benchmark exercise what ``make run`` runs (and what
``docker-compose.yml`` mirrors: a worker service per queue).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal, Self

import redis

from contract import registration
from contract.queues import QUEUE_DIFFUSION, QUEUE_SMALL, QUEUE_WEBHOOKS
from contract.settings import REPO
from stack.processes import free_port, http_ok, spawn, stop, stop_all, wait_for
from workers.config import WorkerSettings

# Jobs in flight in the small-model worker (threads pool): a batch can only
# gather the requests that are running at once, so this bounds its size in requests.
SMALL_WORKER_THREADS = 32
WEBHOOK_WORKER_THREADS = 8
WORKER_START_TIMEOUT_S = 180
# After SHUTDOWN_GRACE_S a worker still cancels, requeues and closes its connections.
SHUTDOWN_MARGIN_S = 10.0
# uvicorn's h11 protocol with a deadline for a request's headers (HEADER_TIMEOUT_S), which uvicorn lacks.
HTTP_PROTOCOL = "api.transport:HeaderTimeoutProtocol"


@dataclass(frozen=True)
class WorkerSpec:
    """One Celery worker process: the queue it consumes, its pool and its torch threads."""

    queue: str
    pool: Literal["prefork", "threads"]
    concurrency: int
    torch_threads: int | None = None  # None: torch's default, every core
    app: str = "workers.celery_app"
    # A model worker registers its models in Redis (workers.registry); the webhook worker has none.
    serves_models: bool = True

    def command(self, *, name: str | None = None, loglevel: str = "INFO") -> list[str]:
        return [
            sys.executable, "-m", "celery", "-A", self.app, "worker",
            f"--pool={self.pool}", f"--concurrency={self.concurrency}", "-Q", self.queue,
            f"--loglevel={loglevel}", "-n", name or f"{self.queue}@%h",
            "--without-gossip", "--without-mingle",
        ]  # fmt: skip

    def env(self) -> dict[str, str]:
        env = {"WORKER_QUEUES": self.queue} if self.serves_models else {}
        # Spawned with a parent-death signal (stack.processes): it also exits if that shutdown hangs on a dead Redis.
        env["EXIT_WITH_PARENT"] = "true"
        if self.pool == "prefork":
            # SIGTERM = Celery's soft shutdown: the running job gets SHUTDOWN_GRACE_S, then goes
            # back on its queue at once (see workers.celery_app). Read by billiard at import.
            env["REMAP_SIGTERM"] = "SIGQUIT"
        if self.torch_threads:
            env["TORCH_THREADS"] = str(self.torch_threads)
        return env


def worker_specs(*, cpus: int | None = None, torch_threads: int | None = None) -> list[WorkerSpec]:
    """One worker per queue, sized for a machine of ``cpus`` cores.

    - diffusion: prefork with one child (models load after the fork, so CUDA stays
      safe), and every core for torch: one long job at a time, as fast as it goes;
    - small: the threads pool, so concurrent jobs meet in one process and share
      forward passes (``workers.batching``), with a quarter of the cores for torch:
      the networks are small, and the cores stay with the diffusion worker.

    ``torch_threads`` (``TORCH_THREADS``) sets both, e.g. one thread on a shared CI CPU.
    """
    cpus = cpus or os.cpu_count() or 1
    return [
        WorkerSpec(QUEUE_DIFFUSION, "prefork", 1, torch_threads),
        WorkerSpec(QUEUE_SMALL, "threads", SMALL_WORKER_THREADS, torch_threads or max(1, cpus // 4)),
    ]


def webhook_worker_spec() -> WorkerSpec:
    """The webhook worker: a light process of its own (no torch, no model; ``workers.webhook_app``), so a
    slow receiver holds one of its threads and never a model worker. Threads, because a delivery waits on
    the network; a few, because retries wait in Redis, not in a thread."""
    return WorkerSpec(QUEUE_WEBHOOKS, "threads", WEBHOOK_WORKER_THREADS, app="workers.webhook_app", serves_models=False)


def api_command(host: str, port: int, processes: int = 1, *, forwarded_allow_ips: str = "") -> list[str]:
    """uvicorn serving the API; with ``processes`` > 1 it forks that many API processes on one port (and
    restarts one that dies). They share nothing but Redis and the results store, like API replicas on many hosts.

    ``forwarded_allow_ips`` (``FORWARDED_ALLOW_IPS``) is always passed: left to itself, uvicorn believes
    ``X-Forwarded-For`` from 127.0.0.1, so every local client could name its own address (rate limits)."""
    command = [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--host", host, "--port", str(port)]
    command += ["--http", HTTP_PROTOCOL]
    if forwarded_allow_ips:
        command += ["--proxy-headers", "--forwarded-allow-ips", forwarded_allow_ips]
    else:
        command.append("--no-proxy-headers")
    return command + (["--workers", str(processes)] if processes > 1 else [])


class LocalStack:
    """Workers (and optionally uvicorn) as child processes on the Redis in ``env["REDIS_URL"]``.

    With ``log_dir`` each child writes ``<log_dir>/<name>.log``; without, they
    share this process's stdout.
    """

    def __init__(self, env: Mapping[str, str], *, log_dir: Path | None = None, name_prefix: str = "") -> None:
        if "REDIS_URL" not in env:
            raise ValueError("env must set REDIS_URL")
        self.env = dict(env)
        self.log_dir = log_dir
        self.name_prefix = name_prefix
        self.workers: dict[str, subprocess.Popen] = {}
        self.specs: dict[str, WorkerSpec] = {}
        self.api: subprocess.Popen | None = None
        self.base_url: str | None = None
        self._started: dict[str, float] = {}
        self._logs: list[IO[bytes]] = []

    @property
    def redis_url(self) -> str:
        return self.env["REDIS_URL"]

    def log_path(self, name: str) -> Path | None:
        return self.log_dir / f"{name}.log" if self.log_dir else None

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> subprocess.Popen:
        path = self.log_path(name)
        if path is None:
            return spawn(args, env=dict(env), cwd=REPO)
        path.parent.mkdir(parents=True, exist_ok=True)
        sink = path.open("ab")
        self._logs.append(sink)
        return spawn(args, env=dict(env), cwd=REPO, stdout=sink, stderr=subprocess.STDOUT)

    def start_worker(self, spec: WorkerSpec, **env: str) -> subprocess.Popen:
        """Start a worker for ``spec`` (``env`` adds settings, e.g. ``MICRO_BATCH="false"``)."""
        name = f"{self.name_prefix}{spec.queue}"
        self._started[spec.queue] = time.time()
        process = self._spawn(
            f"worker-{spec.queue}", spec.command(name=f"{name}@%h"), {**self.env, **spec.env(), **env}
        )
        self.workers[spec.queue], self.specs[spec.queue] = process, spec
        return process

    def registered(self, queue: str) -> bool:
        """Whether a worker process of this stack consuming ``queue`` has registered its models."""
        client = redis.Redis.from_url(self.redis_url, socket_timeout=5)
        try:
            workers = registration.read_live(client)
        finally:
            client.close()
        # Started after our spawn: not a registration left by an earlier worker.
        return any(queue in w.queues and w.started_at.timestamp() >= self._started[queue] - 1 for w in workers)

    def wait_for_workers(self, queues: Iterable[str] | None = None, timeout: float = WORKER_START_TIMEOUT_S) -> None:
        for queue in list(queues or self.workers):
            process = self.workers[queue]
            # A worker without models has nothing to register: its messages wait in Redis until it consumes.
            started = self.registered if self.specs[queue].serves_models else (lambda _: True)
            try:
                wait_for(
                    lambda q=queue: started(q),
                    timeout,
                    f"the {queue} worker",
                    alive=lambda p=process: p.poll() is None,
                )
            except (RuntimeError, TimeoutError) as err:
                raise RuntimeError(f"{err}{self._log_tail(f'worker-{queue}')}") from err

    def start_api(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        *,
        wait_s: float = 60,
        processes: int = 1,
        forwarded_allow_ips: str = "",
    ) -> str:
        """Start uvicorn; waits up to ``wait_s`` for ``/healthz`` (0: not at all). Returns its base URL."""
        port = port or free_port(host)
        command = api_command(host, port, processes, forwarded_allow_ips=forwarded_allow_ips)
        self.api = self._spawn("api", command, self.env)
        self.base_url = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}"
        if wait_s > 0:
            api = self.api
            wait_for(lambda: http_ok(f"{self.base_url}/healthz"), wait_s, "the API", alive=lambda: api.poll() is None)
        return self.base_url

    def wait_ready(self, timeout: float = WORKER_START_TIMEOUT_S) -> None:
        """Until ``/readyz`` says every model is loaded by some worker."""
        assert self.base_url, "start_api first"
        wait_for(lambda: http_ok(f"{self.base_url}/readyz"), timeout, "readiness (/readyz)")

    def shutdown_wait_s(self) -> float:
        """How long a worker may take to stop: its grace for running jobs, then the requeue and exit."""
        grace = self.env.get("SHUTDOWN_GRACE_S") or WorkerSettings.model_fields["shutdown_grace_s"].default
        return float(grace) + SHUTDOWN_MARGIN_S

    def stop(self) -> None:
        """API first, so nothing new arrives; then every worker at once (each lets its running job
        finish within SHUTDOWN_GRACE_S, or puts it back on its queue), SIGKILL only past that."""
        stop(self.api)
        stop_all(self.workers.values(), timeout=self.shutdown_wait_s())
        for sink in self._logs:
            sink.close()
        self._logs.clear()

    def _log_tail(self, name: str) -> str:
        path = self.log_path(name)
        return f":\n{path.read_text(errors='replace')[-3000:]}" if path and path.is_file() else ""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
