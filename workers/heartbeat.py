"""A worker process's registration in Redis, kept alive by a thread while the process can take jobs.

The API's ``GET /models`` and ``/readyz`` read it (``contract.registration``). In a
prefork pool child the Celery parent is what takes jobs off the queue: once it is
gone (killed), the child, still finishing its job, gets no other, so its heartbeat
deregisters rather than keep ``/readyz`` at 200 for a worker that is not there.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import TYPE_CHECKING

import redis

from contract.registration import WorkerRegistration, deregister, register

from .config import WorkerSettings

if TYPE_CHECKING:
    from .registry import Registry

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    """Keeps this process's registration key alive while the process lives and (``parent_pid``) its parent too."""

    def __init__(self, registry: Registry, settings: WorkerSettings, *, parent_pid: int | None = None) -> None:
        super().__init__(name="registry-heartbeat", daemon=True)
        self.registry = registry
        self.settings = settings
        self.parent_pid = parent_pid  # the process that feeds this one jobs, when that is another one
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.ttl = max(3 * settings.heartbeat_seconds, 5.0)
        self.started_at = time.time()
        self._halt = threading.Event()
        self._wake = threading.Event()  # beat now rather than at the next interval
        self._client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)

    def beat(self) -> None:
        now = time.time()
        registration = WorkerRegistration(
            worker=self.worker_id,
            started_at=self.started_at,
            heartbeat_at=now,
            heartbeat_s=self.settings.heartbeat_seconds,
            **self.registry.describe(),
        )
        pipe = self._client.pipeline()
        register(pipe, registration, self.ttl, now)
        pipe.execute()

    def orphaned(self) -> bool:
        """Whether the parent that fed this process jobs is gone (this process was re-parented)."""
        return self.parent_pid is not None and os.getppid() != self.parent_pid

    def run(self) -> None:
        while not self._halt.is_set():
            if self.orphaned():
                log.warning(
                    "the worker's parent process %d is gone: %s takes no more jobs and deregisters",
                    self.parent_pid,
                    self.worker_id,
                )
                self._halt.set()
                self._deregister()
                return
            try:
                self.beat()
            except (redis.RedisError, ValueError) as err:  # ValueError: a registration that does not validate
                log.warning("heartbeat failed: %s", err)
            self._wake.wait(self.settings.heartbeat_seconds)
            self._wake.clear()

    def beat_soon(self) -> None:
        """Publish the registry's state now (a model just warmed up), not at the next interval."""
        self._wake.set()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout=5)  # a beat in flight would re-register after the delete
        self._deregister()

    def _deregister(self) -> None:
        try:
            pipe = self._client.pipeline()
            deregister(pipe, self.worker_id)
            pipe.execute()
        except redis.RedisError as err:
            log.debug("could not deregister %s: %s", self.worker_id, err)
