"""One Redis subscription per API process, for the results of every job its requests wait on.

Celery's Redis backend publishes each state it stores on the channel named
after the result key, with the stored value as the message. Subscribing per
waiting request costs a new Redis connection each time (redis-py disconnects a
pub/sub connection when it is released) and a SUBSCRIBE/UNSUBSCRIBE pair: under
load that was most of the API's Redis work per request. Here one pattern
subscription (``celery-task-meta-*``) on one connection feeds every waiting
request through an in-process inbox per job; a job's waiter reads its state
from the message itself. Messages for jobs nobody waits on are dropped.

A missed message (the subscription dropped and was re-made) only costs time:
waiters also poll the result key at a slow rate (``api.service.job_service.SAFETY_POLL_S``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

RECONNECT_S = 1.0
READY_WAIT_S = 1.0  # how long a first waiter waits for the subscription, before relying on the poll


class ResultListener:
    """Dispatches result messages of channels matching ``pattern`` to the inboxes that watch them."""

    def __init__(self, redis: Redis, pattern: str) -> None:
        self.redis = redis
        self.pattern = pattern
        self._inboxes: dict[str, set[asyncio.Queue[bytes]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    @contextlib.contextmanager
    def watch(self, channel: str) -> Iterator[asyncio.Queue[bytes]]:
        """An inbox for the messages published on ``channel`` while the block runs."""
        inbox: asyncio.Queue[bytes] = asyncio.Queue()
        self._inboxes.setdefault(channel, set()).add(inbox)
        try:
            yield inbox
        finally:
            watchers = self._inboxes.get(channel)
            if watchers is not None:
                watchers.discard(inbox)
                if not watchers:
                    del self._inboxes[channel]

    async def ready(self) -> bool:
        """Start listening if not yet; True once subscribed (waits at most ``READY_WAIT_S``)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="result-listener")
        if not self._subscribed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._subscribed.wait(), READY_WAIT_S)
        return self._subscribed.is_set()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                async with self.redis.pubsub() as pubsub:
                    await pubsub.psubscribe(self.pattern)
                    self._subscribed.set()
                    while True:
                        # A short timeout, not a blocking read: the client's socket timeout would cut one.
                        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                        if message is not None and message.get("type") == "pmessage":
                            self._deliver(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as err:
                log.warning("result subscription lost (%s); re-subscribing in %.0f s", err, RECONNECT_S)
            finally:
                self._subscribed.clear()
            await asyncio.sleep(RECONNECT_S)

    def _deliver(self, channel: bytes | str, data: bytes) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        for inbox in self._inboxes.get(name, ()):
            inbox.put_nowait(data)
