"""The jobs a killed worker had taken, back at the front of their queue at once.

With ``acks_late``, a job stays in kombu's Redis "unacked" hash while a worker runs
it. A worker that is killed outright (``kill -9``, the OOM killer) never gives its
jobs back, and kombu restores them only after the visibility timeout
(``TASK_TIME_LIMIT`` + 300 s), because it cannot tell a dead consumer from a slow
one. The launcher can: it runs the only worker of each queue and has just seen it
die. So before it starts the successor, it puts every unacked message of that
worker's queues back, through kombu's own restore (the one the visibility timeout
runs), which also marks them redelivered; the job's delivery count
(``MAX_DELIVERIES``) still counts the run that died.

Only for a stack with one worker per queue, as ``make run`` starts: with several,
an unacked message may belong to a live sibling, which would then run it twice
(docker compose relies on the visibility timeout instead).

At start-up the launcher also gives back what a previous run left (its launcher was
killed, so nobody saw its workers die): every unacked message on its own Redis, or on
a shared one those of the queues that no live worker consumes (``requeue_orphaned``),
so a stranded job runs again within seconds of ``make run``, not at the visibility timeout.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterable

import redis

from contract import registration
from contract.broker import api_celery


def requeue_unacked(redis_url: str, queues: Iterable[str]) -> list[str]:
    """Restore the unacked messages of ``queues``; returns the ids of their jobs."""
    wanted = set(queues)
    app = api_celery(redis_url, result_ttl_s=60)
    restored: list[str] = []
    try:
        with app.connection_for_write() as connection:
            channel = connection.default_channel
            qos = channel.qos
            for tag, raw in channel.client.hgetall(qos.unacked_key).items():
                message, exchange, routing_key = json.loads(raw)
                if not wanted & set(channel._lookup(exchange, routing_key)):
                    continue
                qos.restore_by_tag(tag.decode() if isinstance(tag, bytes) else tag)
                restored.append(message.get("headers", {}).get("id", "?"))
    finally:
        app.close()
    return restored


def live_queues(redis_url: str) -> set[str]:
    """The queues that some worker with a fresh registration consumes (``contract.registration``)."""
    client = redis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        return {queue for worker in registration.read_live(client) for queue in worker.queues}
    finally:
        client.close()


def requeue_orphaned(redis_url: str, queues: Iterable[str]) -> list[str]:
    """At start-up: restore the unacked messages of those of ``queues`` that no live worker consumes."""
    orphaned = set(queues) - live_queues(redis_url)
    return requeue_unacked(redis_url, orphaned) if orphaned else []


def reap_worker_group(pid: int) -> None:
    """Kill what is left of a dead worker: its pool processes (its process group; the launcher starts
    each worker in a session of its own), which would otherwise finish a job that is about to be requeued."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
