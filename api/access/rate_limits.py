"""Per-client rate limits, counted in the service's Redis so every API process shares them.

Two budgets per client: ``RATE_LIMIT`` for the POSTs that create jobs (each one
costs a worker seconds of compute) and the looser ``RATE_LIMIT_READS`` for GETs
(polls, images, /models), which cost the API little. A client is its API key
(hashed: no key is stored in Redis) or, without keys, its IP address.

The address is the TCP peer's. uvicorn would take it from ``X-Forwarded-For``
whenever the peer is 127.0.0.1 (its default), so any local client could pick
a fresh address per request and never be limited; the service passes
``FORWARDED_ALLOW_IPS`` (default empty: trust no one) to uvicorn wherever it
starts it, so only a configured proxy's header counts.

A wrong API key is a guess at a key: it spends one request of its address's
write budget (``RATE_LIMIT``, whatever the method), and once that is spent every
request of that address that sends a key gets 429 before its key is compared,
the right key included: a guesser must not tell a right key by its 200 among
the 429s. A missing key guesses nothing and costs nothing.

Why the ``limits`` package directly and not ``slowapi`` (which wraps it): slowapi
limits through per-route decorators that need a ``request`` argument in every
endpoint, or a middleware that runs before the route's dependencies, so it
cannot key on the API key that ``api.access.keys`` has just checked; its 429 body
is its own, not this service's ``{"detail": ...}`` from ``api.errors``; and its
Redis storage is synchronous, so a slow Redis would block the event loop.
``limits`` gives the async Redis storage (sharing the app's connection pool) and
the counting algorithm, and this module is one FastAPI dependency.

The sliding-window counter keeps two integers per client and budget in Redis
(a moving window would keep a list entry per request: 1,200 for a read budget)
and, unlike a fixed window, does not let a client spend two budgets across a
window's edge.

Redis down: the limiter fails open and logs (at most once per ``OUTAGE_RETRY_S``). Every
route behind it needs Redis too and answers a clear 503 on its own, so failing
closed would add nothing but a second, less precise error; failing open means
an outage of Redis never turns into errors of the limiter.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from contextvars import ContextVar

from fastapi import Request
from limits import RateLimitItem, parse_many
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from limits.errors import StorageError
from redis.asyncio import ConnectionPool

from api.errors import BackendUnavailable, RateLimited
from contract.keys import RATE_LIMIT_PREFIX

log = logging.getLogger(__name__)

# After a failed Redis call the limiter skips Redis this long: requests do not
# each wait for a connect timeout, and the log gets one line per outage, not per request.
OUTAGE_RETRY_S = 5.0
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Set, in the request's own context, for a write the limiter could not count (see ``refuse_if_uncounted``).
_uncounted: ContextVar[bool] = ContextVar("rate_limit_uncounted", default=False)
WRONG_KEY = "wrong-key"  # the budget's name beside "write" and "read": an address's wrong API keys


def _describe(items: list[RateLimitItem]) -> str:
    return " and ".join(str(item) for item in items)  # "60 per 1 minute"


def client_id(request: Request) -> str:
    """Whom a request's budget belongs to: its API key (see ``api.access.keys``) or, without keys, its IP address."""
    key_id = getattr(request.state, "api_key_id", None)
    if key_id:
        return f"key:{key_id}"
    return address_id(request)


def address_id(request: Request) -> str:
    """The client's address: the TCP peer's, or the one a proxy listed in ``FORWARDED_ALLOW_IPS`` forwarded."""
    return f"ip:{request.client.host if request.client else 'unknown'}"


def key_id(key: str) -> str:
    """A stable, non-reversible name for an API key, for Redis keys and logs."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _redis_uri(redis_url: str) -> str:
    # ``limits`` picks its storage by URI scheme; the connection itself comes from the pool.
    return f"async+{redis_url}" if redis_url.startswith("redis") else f"async+redis+{redis_url}"


class RateLimiter:
    """``writes`` and ``reads`` are ``limits`` strings (``"60/minute"``); empty means no limit."""

    def __init__(self, pool: ConnectionPool, redis_url: str, *, writes: str, reads: str) -> None:
        self.budgets: dict[bool, list[RateLimitItem]] = {
            True: parse_many(writes) if writes else [],
            False: parse_many(reads) if reads else [],
        }
        self.settings_names = {True: "RATE_LIMIT", False: "RATE_LIMIT_READS"}
        storage = RedisStorage(
            _redis_uri(redis_url),
            implementation="redispy",
            wrap_exceptions=True,
            key_prefix=RATE_LIMIT_PREFIX,
            connection_pool=pool,
        )
        self.strategy = SlidingWindowCounterRateLimiter(storage)
        self._skip_until = 0.0

    async def check(self, request: Request) -> None:
        """Counts the request against its client's budget; raises ``RateLimited`` when it is used up."""
        writes = request.method in WRITE_METHODS
        items = self.budgets[writes]
        if not items:
            return
        # Reads skip an outage (each would wait for Redis, then go through anyway); writes try every time, since
        # one that cannot be counted is refused: Redis back a second later must count it again.
        if not writes and time.monotonic() < self._skip_until:
            return
        who = client_id(request)
        kind = "write" if writes else "read"
        try:
            for item in items:
                if not await self.strategy.hit(item, kind, who):
                    stats = await self.strategy.get_window_stats(item, kind, who)
                    self._refuse(items, writes, max(1, math.ceil(stats.reset_time - time.time())))
        except StorageError as err:
            if time.monotonic() >= self._skip_until:  # one log line per outage window, not one per request
                log.warning("rate limits not counted for %.0f s: Redis unreachable or busy (%s)", OUTAGE_RETRY_S, err)
                self._skip_until = time.monotonic() + OUTAGE_RETRY_S
            if writes:
                _uncounted.set(True)

    async def refuse_key_guesser(self, request: Request) -> None:
        """429, before its key is compared, for a request from an address whose wrong-key budget is spent."""
        await self._wrong_keys(request, spend=False)

    async def count_wrong_key(self, request: Request) -> None:
        """A wrong API key spends one request of its address's budget; 429 once that is spent."""
        await self._wrong_keys(request, spend=True)

    async def _wrong_keys(self, request: Request, *, spend: bool) -> None:
        # A guess costs the same by GET as by POST: the stricter write budget (the reads' when writes are off).
        writes = bool(self.budgets[True])
        items = self.budgets[writes]
        if not items or time.monotonic() < self._skip_until:
            return
        who = address_id(request)
        try:
            for item in items:
                counted = self.strategy.hit if spend else self.strategy.test
                if not await counted(item, WRONG_KEY, who):
                    stats = await self.strategy.get_window_stats(item, WRONG_KEY, who)
                    retry_after = max(1, math.ceil(stats.reset_time - time.time()))
                    raise RateLimited(
                        f"too many wrong API keys from this address: it may send {_describe(items)} requests with a "
                        f"wrong key ({self.settings_names[writes]}), and until then none with any key; "
                        f"retry in {retry_after} s",
                        headers={"Retry-After": str(retry_after)},
                    )
        except StorageError as err:
            self._skip_until = time.monotonic() + OUTAGE_RETRY_S
            log.warning("rate limits not enforced for %.0f s: Redis unreachable (%s)", OUTAGE_RETRY_S, err)

    def _refuse(self, items: list[RateLimitItem], writes: bool, retry_after: int) -> None:
        what = "POSTs" if writes else "GETs"
        raise RateLimited(
            f"rate limit reached: this client may send {_describe(items)} {what} "
            f"({self.settings_names[writes]}); retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )


def refuse_if_uncounted() -> None:
    """Called where a job is about to be created: writes fail closed when the limiter could not count them (a
    crowd that filled the Redis pool once got 143 jobs past a budget of 60). Only there, so a request with bad
    parameters still gets its 422 when Redis is down, and one that creates nothing (a replay) is answered."""
    if _uncounted.get():
        raise BackendUnavailable(
            "Redis is unreachable or busy, so this request could not be counted against its rate limit "
            f"(RATE_LIMIT): nothing was created; retry in {OUTAGE_RETRY_S:.0f} s (if it lasts, check that Redis "
            "is up and REDIS_URL is right)",
            headers={"Retry-After": str(int(OUTAGE_RETRY_S))},
        )


async def rate_limit(request: Request) -> None:
    """The dependency; ``api.access.keys.route_guards`` puts it after the key check, so it knows the client."""
    limiter: RateLimiter | None = getattr(request.app.state, "limiter", None)
    if limiter is not None:
        await limiter.check(request)
