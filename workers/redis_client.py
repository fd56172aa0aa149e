"""The workers' Redis clients: they ride out a Redis restart of a few seconds instead of failing the job.

A running digit job writes to Redis at every sampling step (progress, frames, the
cancel check); before, the first write after a restart raised ``ConnectionError``
and the job was stored as failed although Redis was back within a second. Each
command (and pipeline) is retried with exponential back-off, about 19 s in all;
the Celery result backend (progress and final states) gets a like budget in
``celery_app``.
"""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

BASE_S, CAP_S = 0.1, 2.0
RETRIES = 12  # sleeps of 0.2, 0.4, 0.8, 1.6, then 2 s: 19 s of outage ridden out


def connect(redis_url: str) -> redis.Redis:
    """A client whose commands retry across a Redis restart (``RETRIES`` times, back-off ``BASE_S`` to ``CAP_S``)."""
    return redis.Redis.from_url(
        redis_url,
        socket_timeout=5,
        socket_connect_timeout=2,
        retry=Retry(ExponentialBackoff(cap=CAP_S, base=BASE_S), RETRIES),
        retry_on_error=[RedisConnectionError, RedisTimeoutError, ConnectionResetError],
    )
