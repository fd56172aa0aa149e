"""What ``/metrics`` adds to the request metrics: queues, live workers, and the workers' task counts.

A prometheus_client custom collector reads them from Redis when Prometheus scrapes,
in two round trips whatever the traffic: the queue lengths (every priority list of
each queue, ``contract.broker.queue_keys``, the same count the 429 check uses),
the worker registry (the registrations ``contract.registration`` decodes) and the task
counters the workers keep (``contract.task_metrics``, which says why Redis and not
prometheus_client's multiprocess mode or a port per worker). Nothing is cached in
the API process, so every API replica reports the same numbers and a restart of
any process loses none. Redis unreachable: ``genserve_redis_up 0`` and nothing else
from here, so the scrape itself still succeeds.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import redis
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from contract import registration, task_metrics
from contract.broker import queue_keys
from contract.queues import QUEUES
from contract.registration import WorkerRegistration

SCRAPE_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Snapshot:
    queue_lengths: dict[str, int]
    workers: list[WorkerRegistration]
    tasks: list[task_metrics.TaskSeries]


def read_snapshot(client: redis.Redis, queues: Iterable[str] = QUEUES) -> Snapshot:
    queues = tuple(queues)
    keys = {queue: queue_keys(queue) for queue in queues}
    pipe = client.pipeline(transaction=False)
    for queue in queues:
        for key in keys[queue]:
            pipe.llen(key)
    pipe.zrangebyscore(*registration.live_query())
    pipe.hgetall(task_metrics.TASK_METRICS_KEY)
    *lengths, ids, counters = pipe.execute()
    queue_lengths, i = {}, 0
    for queue in queues:
        queue_lengths[queue] = sum(lengths[i : i + len(keys[queue])])
        i += len(keys[queue])
    workers = registration.decode(client.mget(registration.keys_of(ids))) if ids else []
    return Snapshot(queue_lengths, workers, task_metrics.parse(counters))


def families(snapshot: Snapshot) -> Iterator[Metric]:
    queue_length = GaugeMetricFamily(
        "genserve_queue_length", "Jobs waiting in the queue (not those running).", labels=["queue"]
    )
    for queue, length in snapshot.queue_lengths.items():
        queue_length.add_metric([queue], length)
    yield queue_length

    workers_up = GaugeMetricFamily(
        "genserve_workers_up",
        "Worker processes whose heartbeat is live, by the queue they consume (0: nothing runs that queue's jobs).",
        labels=["queue"],
    )
    for queue in snapshot.queue_lengths:
        workers_up.add_metric([queue], sum(1 for w in snapshot.workers if queue in w.queues))
    yield workers_up

    warm = GaugeMetricFamily(
        "genserve_model_warm_workers",
        "Live worker processes that have the model loaded and warmed up (readiness needs >= 1 for each).",
        labels=["model", "role"],
    )
    counts: dict[tuple[str, str], int] = {}
    for worker in snapshot.workers:
        for model in worker.models:
            key = (model.name, model.role)
            counts[key] = counts.get(key, 0) + int(model.warm)
    for (name, role), count in sorted(counts.items()):
        warm.add_metric([name, role], count)
    yield warm

    runs = CounterMetricFamily(
        "genserve_tasks", "Finished runs of worker tasks, by outcome.", labels=["task", "model", "state"]
    )
    duration = HistogramMetricFamily(
        "genserve_task_duration_seconds",
        "Runtime of worker task runs (every outcome), as the worker measured it.",
        labels=["task", "model"],
    )
    for series in snapshot.tasks:
        for state, count in sorted(series.runs.items()):
            runs.add_metric([series.task, series.model, state], count)
        duration.add_metric([series.task, series.model], series.cumulative(), series.sum_s)
    yield runs
    yield duration


class ServiceCollector(Collector):
    """Reads Redis at each scrape (``/metrics`` runs in a thread pool, so a blocking client is fine)."""

    def __init__(self, redis_url: str, *, timeout_s: float = SCRAPE_TIMEOUT_S) -> None:
        self.client = redis.Redis.from_url(redis_url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)

    def describe(self) -> list[Metric]:
        return []  # names only known once read; and registering must not touch Redis

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("genserve_redis_up", "Whether the metrics scrape could read Redis.")
        try:
            snapshot = read_snapshot(self.client)
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families(snapshot)

    def close(self) -> None:
        self.client.close()
