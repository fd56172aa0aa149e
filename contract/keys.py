"""Every Redis key and channel the service writes beside Celery's own, by prefix.

All prefixes live here, so two processes (or an operator with ``redis-cli``)
find the same names; a test keeps other modules from spelling one out.
"""

from __future__ import annotations

from collections.abc import Callable

PREFIX = "genserve:"

# Worker registry: a sorted set of worker ids scored by the unix time their
# registration expires, plus one JSON key per worker with a TTL. The sorted set
# lets readers find live workers without SCANning a keyspace full of results.
WORKERS_INDEX_KEY = PREFIX + "workers"
WORKER_KEY_PREFIX = PREFIX + "worker:"
# One small key per job the API created: how 404 is told apart from "queued".
JOB_KEY_PREFIX = PREFIX + "job:"
# How many times a worker has started each job (redeliveries after a worker died).
DELIVERIES_KEY_PREFIX = PREFIX + "deliveries:"
# Set by POST /jobs/{id}/cancel: a queued job never runs, a running diffusion job stops at its next step.
CANCEL_KEY_PREFIX = PREFIX + "cancel:"
# Live events of a running job (progress, reverse-process frames): published on a
# channel for those listening now, and frames also kept in a list for a client
# that connects later (GET /jobs/{id}/events replays it first).
EVENTS_CHANNEL_PREFIX = PREFIX + "events:"
EVENTS_LOG_PREFIX = PREFIX + "events-log:"
# Per-route Idempotency-Key bindings (api.service.idempotency).
IDEMPOTENCY_KEY_PREFIX = PREFIX + "idempotency:"
# The workers' task counters, read by the API's /metrics (contract.task_metrics).
TASK_METRICS_KEY = PREFIX + "metrics:tasks"
# Rate-limit counters (the ``limits`` package adds its own names after it).
RATE_LIMIT_PREFIX = PREFIX + "ratelimit"


def _under(prefix: str) -> Callable[[str], str]:
    def key(name: str) -> str:
        return prefix + name

    return key


worker_key = _under(WORKER_KEY_PREFIX)
job_key = _under(JOB_KEY_PREFIX)
deliveries_key = _under(DELIVERIES_KEY_PREFIX)
cancel_key = _under(CANCEL_KEY_PREFIX)
events_channel = _under(EVENTS_CHANNEL_PREFIX)
events_log_key = _under(EVENTS_LOG_PREFIX)
