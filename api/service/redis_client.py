"""The API process's one Redis client: a bounded pool that makes a request wait for a connection.

redis-py's default async pool refuses the 101st concurrent command with
``MaxConnectionsError`` (a ``ConnectionError``), which read as "Redis is down"
while Redis was up: a crowd of 128 clients got 503s, some for jobs already
created, and the rate limiter stopped counting. Here a request waits up to
``REDIS_POOL_WAIT_S`` for a free connection, and a pool that stays full past it
raises ``MaxConnectionsError`` itself, which ``api.errors`` answers as "busy,
retry" rather than "unreachable". Subscriptions (``api.service.result_listener``)
hold two connections of the pool for the process's life; everything else holds
one only for a command.
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError
from redis.exceptions import TimeoutError as RedisTimeoutError


class BoundedPool(BlockingConnectionPool):
    """``BlockingConnectionPool`` whose wait timeout raises ``MaxConnectionsError``, not a plain ``ConnectionError``."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)
        except RedisConnectionError as err:
            # The pool's wait ran out: redis-py says so only in the message (a socket timeout is an OSError too).
            if isinstance(err.__cause__, asyncio.TimeoutError) and "No connection available" in str(err):
                raise MaxConnectionsError(
                    f"all {self.max_connections} Redis connections of this API process stayed in use for "
                    f"{self.timeout} s"
                ) from err
            raise


def make_redis(redis_url: str, *, max_connections: int, wait_s: float) -> Redis:
    pool = BoundedPool.from_url(
        redis_url,
        max_connections=max_connections,
        timeout=wait_s,
        socket_connect_timeout=3,
        socket_timeout=5,
        # After a Redis restart every pooled connection is dead: a command retries on a fresh one rather than
        # answering 503 while Redis is up. A few short tries only, so an outage is still told at once.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )
    return Redis(connection_pool=pool)
