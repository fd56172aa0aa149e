"""Per task and model: runs, failures and a runtime histogram, kept in Redis by the workers.

The API's ``/metrics`` (``api.operations.metrics``) reads them at scrape time. The ways
the worker processes' counts could reach Prometheus, weighed:

- **Redis (this module)**: a job already costs several Redis writes; its metrics
  add one pipeline (HINCRBY x3, HINCRBYFLOAT) after the run. A scrape is one
  HGETALL of a hash of a few dozen fields, whatever the number of workers, and the
  counts outlive any worker restart (Redis persists them with the queued jobs).
  The API stays torch-free: this module imports only ``redis``.
- prometheus_client's **multiprocess mode**: every process must share one
  ``PROMETHEUS_MULTIPROC_DIR`` with the API, which the compose setup does not have
  (the diffusion worker is another container, on the GPU host); its files must be
  wiped at each start, so the counts die with a restart.
- a **metrics port per worker**: Prometheus would have to discover every worker
  (their number changes, and the prefork child that runs the jobs is not the process
  that would serve the port), and each restart starts the counts from zero.

Layout: one hash, ``TASK_METRICS_KEY``, whose fields are
``runs|<task>|<model>|<state>`` (count), ``bucket|<task>|<model>|<le>`` (runs whose
runtime fell in that bucket, not cumulative; the reader accumulates) and
``sum|<task>|<model>`` (seconds). Bucket bounds travel in the field names, so
changing ``BUCKETS`` never mixes up stored counts. A run whose process dies (OOM,
SIGKILL) is not counted; its rerun is.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Literal

import redis

from .keys import TASK_METRICS_KEY

# Runtimes range from milliseconds (a face) to minutes (400-step diffusion on a CPU).
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
State = Literal["succeeded", "failed", "canceled"]
STATES: tuple[State, ...] = ("succeeded", "failed", "canceled")
_SEP = "|"


def _bound(value: float) -> str:
    return "+Inf" if math.isinf(value) else repr(float(value))


def _label(value: str) -> str:
    return value.replace(_SEP, "_")


def bucket_for(seconds: float) -> str:
    """The (non-cumulative) bucket a runtime falls in: the smallest bound >= it."""
    i = bisect.bisect_left(BUCKETS, seconds)
    return _bound(BUCKETS[i] if i < len(BUCKETS) else math.inf)


def record(client: redis.Redis, task: str, model: str, state: State, seconds: float) -> None:
    """Count one finished run, in one round trip."""
    task, model = _label(task), _label(model)
    pipe = client.pipeline(transaction=False)
    pipe.hincrby(TASK_METRICS_KEY, _SEP.join(("runs", task, model, state)), 1)
    pipe.hincrby(TASK_METRICS_KEY, _SEP.join(("bucket", task, model, bucket_for(seconds))), 1)
    pipe.hincrbyfloat(TASK_METRICS_KEY, _SEP.join(("sum", task, model)), max(seconds, 0.0))
    pipe.execute()


@dataclass
class TaskSeries:
    """What one (task, model) pair has recorded, shaped for a Prometheus histogram."""

    task: str
    model: str
    runs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATES, 0))
    buckets: dict[float, int] = field(default_factory=dict)  # upper bound -> runs in it (not cumulative)
    sum_s: float = 0.0

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count)`` pairs, cumulative and ending in ``+Inf``, as the exposition format wants."""
        bounds = sorted({*BUCKETS, *self.buckets, math.inf})
        total, out = 0, []
        for bound in bounds:
            total += self.buckets.get(bound, 0)
            out.append((_bound(bound), total))
        return out

    @property
    def count(self) -> int:
        return sum(self.buckets.values())


def parse(raw: dict[bytes | str, bytes | str]) -> list[TaskSeries]:
    """The hash as HGETALL returns it -> one series per (task, model); fields it does not know are skipped."""
    series: dict[tuple[str, str], TaskSeries] = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        text = value.decode() if isinstance(value, bytes) else value
        kind, *rest = name.split(_SEP)
        try:
            if kind == "runs" and len(rest) == 3:
                entry = series.setdefault((rest[0], rest[1]), TaskSeries(rest[0], rest[1]))
                entry.runs[rest[2]] = int(text)
            elif kind == "bucket" and len(rest) == 3:
                entry = series.setdefault((rest[0], rest[1]), TaskSeries(rest[0], rest[1]))
                entry.buckets[float(rest[2])] = int(text)
            elif kind == "sum" and len(rest) == 2:
                entry = series.setdefault((rest[0], rest[1]), TaskSeries(rest[0], rest[1]))
                entry.sum_s = float(text)
        except ValueError:
            continue  # a field written by another version
    return sorted(series.values(), key=lambda s: (s.task, s.model))
