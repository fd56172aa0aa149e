"""Jobs: create them (a Redis record, then the Celery message), read and await their state.

Celery reports an id it has never seen as PENDING forever, so the API keeps a
small record per job it created (kind, params, creation time, with the results'
TTL); an id without a record is a 404.

With API keys, the record names the key that created the job (``JobRecord.owner``)
and ``get`` is the one door to a job for every route that takes a job id: another
key's job is the same 404 as an unknown id, so no key learns that it exists.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from fastapi.responses import JSONResponse, Response
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.access.rate_limits import refuse_if_uncounted
from api.errors import (
    BackendUnavailable,
    IdempotencyKeyReused,
    JobAlreadyFinished,
    JobFailed,
    JobNotFound,
    ModelUnavailable,
    QueueFull,
    ResultsExpired,
)
from api.service.files import ResultFiles
from api.service.idempotency import Idempotency
from api.service.result_listener import ResultListener
from contract.broker import queue_keys
from contract.files import JOB_ID_RE
from contract.jobs import (
    CANCELED_MESSAGE,
    JobKind,
    JobPublic,
    JobRecord,
    JobState,
    JobStatus,
    state_from_meta,
    to_public,
)
from contract.keys import cancel_key, job_key
from contract.queues import QUEUE_DIFFUSION, QUEUE_SMALL, TASK_QUEUES

SAFETY_POLL_S = 1.0
# What a refused POST is told to wait: about how long its queue takes to make room.
RETRY_AFTER_FULL_S = {QUEUE_SMALL: 1, QUEUE_DIFFUSION: 10}

log = logging.getLogger(__name__)


def new_job_id() -> str:
    return uuid.uuid4().hex


def predictions_csv(result: dict[str, Any]) -> str:
    """The course's submission format: ``image_name,label``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image_name", "label"])
    for prediction in result["predictions"]:
        writer.writerow([spreadsheet_safe(prediction["image_name"]), prediction["label"]])
    return out.getvalue()


def spreadsheet_safe(cell: str) -> str:
    """A file name that a spreadsheet would run as a formula (``=``, ``+``, ``-``, ``@``, tab, CR first)
    gets a leading apostrophe, OWASP's advice against CSV injection; others are left as they are."""
    return "'" + cell if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell


class JobService:
    def __init__(
        self,
        celery: Celery,
        redis: Redis,
        ttl_s: int,
        *,
        files: ResultFiles,
        queue_bounds: dict[str, int] | None = None,
        base_url: str = "",
    ) -> None:
        self.celery = celery
        self.redis = redis
        self.ttl_s = ttl_s
        self.files = files
        self.queue_bounds = queue_bounds or {}
        self.base_url = base_url  # PUBLIC_BASE_URL: absolute URLs in job JSON
        self.results = ResultListener(redis, self._result_key("*"))

    def public(self, record: JobRecord, state: JobState) -> JobPublic:
        """The job as clients see it, with this service's URLs."""
        return to_public(record, state, self.base_url)

    async def response(self, record: JobRecord, state: JobState, *, representation: str = "json") -> Response:
        """200 with the result (JSON, the grid PNG or the CSV) when done; 202 with the job's URL otherwise
        (200 with the job, status ``canceled``, for a job canceled meanwhile)."""
        raise_if_failed(record, state)
        state = await self.checked(record, state)
        public = self.public(record, state)
        if state.status is JobStatus.expired and representation != "json":
            raise ResultsExpired(_expired_message(record.id), headers={"X-Job-Id": record.id})
        if state.status in (JobStatus.canceled, JobStatus.expired):
            return JSONResponse(public.model_dump(mode="json"), headers={"X-Job-Id": record.id})
        if state.status is not JobStatus.succeeded:
            return JSONResponse(
                public.model_dump(mode="json"), status_code=202, headers={"Location": public.url, "Retry-After": "1"}
            )
        assert state.result is not None
        if representation == "png" and "grid" in state.result:
            grid = state.result["grid"]
            headers = {"X-Job-Id": record.id, "Content-Location": f"{public.url}/images/{grid}"}
            if (image := await self.files.response(record.id, grid, headers=headers)) is not None:
                return image
            raise ResultsExpired(_expired_message(record.id), headers={"X-Job-Id": record.id})
        if representation == "csv" and record.kind is JobKind.classify:
            return Response(
                predictions_csv(state.result),
                media_type="text/csv",
                headers={"X-Job-Id": record.id, "Content-Location": f"{public.url}/predictions.csv"},
            )
        return JSONResponse(public.model_dump(mode="json"), headers={"X-Job-Id": record.id})

    async def submit(
        self,
        kind: JobKind,
        task: str,
        kwargs: dict[str, Any],
        params: dict[str, Any],
        *,
        owner: str | None,
        job_id: str | None = None,
        idempotency: Idempotency | None = None,
        webhook: str | None = None,
    ) -> JobRecord:
        """Create the job, or, for an ``Idempotency-Key`` seen before with the same parameters, return its job.

        ``owner`` is the caller's API key id (``api.deps.caller``): the job is that key's, and so is the
        Idempotency-Key (another key's same key is another binding)."""
        if idempotency is not None:
            idempotency = replace(idempotency, owner=owner)
            if (earlier := await self._replay(idempotency)) is not None:
                return earlier
        refuse_if_uncounted()
        await self._check_room(task)
        record = JobRecord(job_id or new_job_id(), kind, task, params, datetime.now(UTC), webhook, owner)
        # The record goes first: a worker may finish before send_task returns, and a
        # retry that finds the key below must find the record too.
        await self.redis.set(job_key(record.id), record.to_json(), ex=self.ttl_s)
        if idempotency is not None:
            claimed = await self.redis.set(idempotency.redis_key, idempotency.entry(record.id), nx=True, ex=self.ttl_s)
            if not claimed:
                # A request with the same key claimed it since the replay check: that one's job is the job.
                await self.redis.delete(job_key(record.id))
                earlier = await self._replay(idempotency)
                if earlier is None:
                    raise BackendUnavailable(
                        "another request with this Idempotency-Key was being created at the same moment and did "
                        "not go through: retry",
                        headers={"Retry-After": "1"},
                    )
                return earlier
        try:
            await asyncio.to_thread(self.celery.send_task, task, kwargs=kwargs, task_id=record.id)
        except Exception as err:
            await self.redis.delete(job_key(record.id))
            if idempotency is not None:
                await self.redis.delete(idempotency.redis_key)  # nothing was created: a retry may create it
            raise BackendUnavailable(
                f"could not queue the job ({type(err).__name__}: {err}): check that Redis is up and REDIS_URL is right",
                headers={"Retry-After": "5"},
            ) from err
        return record

    async def _replay(self, idempotency: Idempotency) -> JobRecord | None:
        """The job an earlier request with this key created; None when the key is new (or its job expired)."""
        raw = await self.redis.get(idempotency.redis_key)
        if raw is None:
            return None
        entry = json.loads(raw)
        if entry["fingerprint"] != idempotency.fingerprint:
            raise IdempotencyKeyReused(
                f"Idempotency-Key {idempotency.key!r} was first sent to {idempotency.scope} with other parameters "
                f"(job {entry['job']}): resend exactly the first request's parameters to get that job, or use a new "
                "key for a new request"
            )
        raw_record = await self.redis.get(job_key(entry["job"]))
        if raw_record is None:  # the job expired a moment before its key
            await self.redis.delete(idempotency.redis_key)
            return None
        return JobRecord.from_json(entry["job"], raw_record)

    async def _check_room(self, task: str) -> None:
        """429 before anything is created when the task's queue already holds its bound of jobs.

        A Celery queue on Redis is a list per priority step (``queue_keys``), so their
        lengths add up to the jobs waiting (not those running). Two requests that race
        past the check may take a queue one or two over its bound; that is the
        price of not locking every submit.
        """
        queue = TASK_QUEUES[task]
        bound = self.queue_bounds.get(queue)
        if bound is None:
            return
        pipe = self.redis.pipeline(transaction=False)
        for key in queue_keys(queue):
            pipe.llen(key)
        waiting = sum(await pipe.execute())
        if waiting >= bound:
            retry_s = RETRY_AFTER_FULL_S[queue]
            raise QueueFull(
                f"the {queue!r} queue already holds {waiting} waiting jobs, its limit "
                f"(MAX_QUEUED_{queue.upper()}={bound}): nothing was created; retry after {retry_s} s",
                headers={"Retry-After": str(retry_s)},
            )

    async def get(self, job_id: str, *, caller: str | None) -> JobRecord:
        """The job, for ``caller`` (its API key id; None without keys); 404 if unknown or another key's."""
        raw = await self.redis.get(job_key(job_id)) if JOB_ID_RE.match(job_id) else None
        record = JobRecord.from_json(job_id, raw) if raw is not None else None
        # Without keys every job is everyone's; with keys, a job of no key (made before keys were set) is no one's.
        if record is None or (caller is not None and record.owner != caller):
            raise JobNotFound(
                f"no job {job_id!r}: it was never created here or has expired (jobs are kept {self.ttl_s} s). "
                "Start a new one with a POST to /generate/... or /classify/..."
            )
        return record

    async def state(self, job_id: str) -> JobState:
        # What ``backend.get_task_meta`` does, on the API's async Redis client:
        # no thread hop, no second connection pool per thread.
        return state_from_meta(self._decode(await self.redis.get(self._result_key(job_id))))

    async def wait(self, job_id: str, timeout_s: float) -> JobState:
        """The job's state once finished, or when ``timeout_s`` runs out.

        Celery's Redis backend publishes every state it stores, with the stored
        value as the message; this process's one subscription hands it to the
        waiting request (``api.service.result_listener``), which sleeps until the worker writes
        and reads the state from the message itself: no polling, no second read.
        A slow poll remains as a safety net for a missed message.
        """
        if timeout_s <= 0:
            return await self.state(job_id)
        deadline = time.monotonic() + timeout_s
        with self.results.watch(self._result_key(job_id)) as inbox:
            await self.results.ready()
            # Read once watching, so a result stored in between is not missed.
            state = await self.state(job_id)
            while not state.finished:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    message = await asyncio.wait_for(inbox.get(), min(left, SAFETY_POLL_S))
                except TimeoutError:
                    state = await self.state(job_id)
                else:
                    state = state_from_meta(self._decode(message))
            return state

    async def checked(self, record: JobRecord, state: JobState) -> JobState:
        """``state``, or ``expired`` for a job that succeeded but whose files the results store has removed since
        (retention: JOB_TTL_SECONDS, RESULTS_MAX_BYTES), so no answer lists URLs that would be 404s."""
        grid = (state.result or {}).get("grid") if state.status is JobStatus.succeeded else None
        if grid is None or await self.files.exists(record.id, grid):
            return state
        return JobState(JobStatus.expired, error=_expired_message(record.id), error_type="ResultsExpired")

    async def wait_after_submit(self, job_id: str, timeout_s: float) -> JobState:
        """``wait`` for the job this request has just created. From here on a 503 would tell the client that its
        job was not made when it was (a retry without an Idempotency-Key made a duplicate), so a Redis error
        while waiting answers the job as queued: a 202 with its URL to poll."""
        try:
            return await self.wait(job_id, timeout_s)
        except (RedisError, OSError) as err:
            log.warning("job %s created, but its state could not be read (%s): answered as queued", job_id, err)
            return JobState(JobStatus.queued)

    def result_channel(self, job_id: str) -> str:
        """Where the job's Celery state is stored and published (``results`` dispatches it)."""
        return self._result_key(job_id)

    def state_of(self, message: bytes | str | None) -> JobState:
        """The state a message on ``result_channel`` carries."""
        return state_from_meta(self._decode(message))

    async def cancel(self, record: JobRecord, state: JobState) -> None:
        """Ask the job to stop: a flag the worker checks before it starts and at every sampling step.

        A job still queued is also marked revoked at once, so it reads as canceled
        without waiting for a worker to take it off its queue (which then skips it).
        """
        if state.finished:
            raise JobAlreadyFinished(
                f"job {record.id} has already {'been ' if state.status is JobStatus.canceled else ''}"
                f"{state.status.value}: there is nothing to cancel"
            )
        await self.redis.set(cancel_key(record.id), "1", ex=self.ttl_s)
        if state.status is JobStatus.queued:
            await asyncio.to_thread(self.celery.backend.mark_as_revoked, record.id, CANCELED_MESSAGE)

    def _decode(self, raw: bytes | str | None) -> dict[str, Any]:
        if not raw:
            return {"status": "PENDING", "result": None}
        return self.celery.backend.decode_result(raw)

    def _result_key(self, job_id: str) -> str:
        key = self.celery.backend.get_key_for_task(job_id)
        return key.decode() if isinstance(key, bytes) else key


def _expired_message(job_id: str) -> str:
    return (
        f"job {job_id} succeeded, but its files have been removed from the results store since (JOB_TTL_SECONDS, "
        "RESULTS_MAX_BYTES): send the request again, without its Idempotency-Key, for new ones"
    )


def raise_if_failed(record: JobRecord, state: JobState) -> None:
    if state.status is not JobStatus.failed:
        return
    message = f"job {record.id} failed: {state.error}"
    if state.error_type == "ModelUnavailable":
        raise ModelUnavailable(message)
    raise JobFailed(message)
