"""A job's life as Server-Sent Events, for ``GET /jobs/{id}/events``.

Two Redis sources feed one stream: the job's Celery state (stored and published by
the result backend, dispatched by the job service's one subscription, ``api.service.result_listener``)
and the job's live events (``workers.live``: each sampling step, each reverse-process
frame), dispatched by a second pattern subscription of this process. So a listening
client costs no Redis connection of its own, and one that goes away costs nothing:
its watch ends with the response.

The stream, in order:

- ``status``: the job as ``GET /jobs/{id}`` shows it, first and at every change of status;
- ``frame``: ``{"t", "drawn_at", "image"}`` (a PNG data URL), each reverse-process frame, as soon as
  the worker has drawn it; a client that connects late is first sent the frames so far;
- ``progress``: ``{"step", "total"}``, after every sampling step;
- ``done``: the finished job (succeeded, failed or canceled), then the stream ends.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.sse import ServerSentEvent
from redis.asyncio import Redis

from api.service.job_service import SAFETY_POLL_S, JobService
from api.service.result_listener import ResultListener
from contract.jobs import JobRecord, JobState
from contract.keys import EVENTS_CHANNEL_PREFIX, events_channel, events_log_key


class JobEventStreams:
    """Turns the job states and live events in Redis into each listening client's stream."""

    def __init__(self, jobs: JobService, redis: Redis) -> None:
        self.jobs = jobs
        self.redis = redis
        self.live = ResultListener(redis, EVENTS_CHANNEL_PREFIX + "*")

    async def close(self) -> None:
        await self.live.close()

    async def stream(self, record: JobRecord) -> AsyncIterator[ServerSentEvent]:
        job_id = record.id
        with (
            self.jobs.results.watch(self.jobs.result_channel(job_id)) as states,
            self.live.watch(events_channel(job_id)) as live,
        ):
            await asyncio.gather(self.jobs.results.ready(), self.live.ready())
            state = await self.jobs.state(job_id)  # read once watching: nothing published since is missed
            yield self._status(record, state)
            sent = 0  # the last frame sent, by its sequence number
            for event in await self._logged_frames(job_id):
                sent = event["seq"]
                yield self._live_event(event)
            shown = state.status
            while True:
                while not live.empty():
                    if (event := self._fresh(live.get_nowait(), sent)) is not None:
                        sent = max(sent, event.get("seq", 0))
                        yield self._live_event(event)
                if state.finished:
                    break
                state, message = await self._next(job_id, state, states, live)
                if message is not None and (event := self._fresh(message, sent)) is not None:
                    sent = max(sent, event.get("seq", 0))
                    yield self._live_event(event)
                if state.status is not shown and not state.finished:
                    shown = state.status
                    yield self._status(record, state)
            # Frames and state come on two subscriptions, whose order is not kept between
            # them: the log has every frame the worker drew before it finished.
            for event in await self._logged_frames(job_id):
                if event["seq"] > sent:
                    sent = event["seq"]
                    yield self._live_event(event)
            yield ServerSentEvent(event="done", data=self.jobs.public(record, state).model_dump(mode="json"))

    async def _next(
        self, job_id: str, state: JobState, states: asyncio.Queue[bytes], live: asyncio.Queue[bytes]
    ) -> tuple[JobState, bytes | None]:
        """Wait for the next message of either kind (or ``SAFETY_POLL_S``, then read the state):
        the job's state after it, and the live event if that is what came."""
        state_waiter = asyncio.ensure_future(states.get())
        live_waiter = asyncio.ensure_future(live.get())
        done, pending = await asyncio.wait(
            {state_waiter, live_waiter}, timeout=SAFETY_POLL_S, return_when=asyncio.FIRST_COMPLETED
        )
        for waiter in pending:
            waiter.cancel()  # a cancelled Queue.get takes nothing off its queue
        if not done:
            return await self.jobs.state(job_id), None  # a missed message costs only this poll
        if state_waiter in done:
            state = self.jobs.state_of(state_waiter.result())
        return state, live_waiter.result() if live_waiter in done else None

    @staticmethod
    def _fresh(message: bytes, sent: int) -> dict[str, Any] | None:
        """The live event in ``message``, or None for a frame already sent (from the log)."""
        event = json.loads(message)
        return None if event["event"] == "frame" and event["seq"] <= sent else event

    async def _logged_frames(self, job_id: str) -> list[dict[str, Any]]:
        raw = await self.redis.lrange(events_log_key(job_id), 0, -1)
        return [json.loads(item) for item in raw]

    def _status(self, record: JobRecord, state: JobState) -> ServerSentEvent:
        return ServerSentEvent(event="status", data=self.jobs.public(record, state).model_dump(mode="json"))

    @staticmethod
    def _live_event(event: dict[str, Any]) -> ServerSentEvent:
        name = event.pop("event")
        seq = event.pop("seq", None)
        return ServerSentEvent(event=name, data=event, id=None if seq is None else str(seq))
