"""Jobs: create them (a Redis record, then the Celery message), read and await their state.

Celery reports an id it has never seen as PENDING forever, so the API keeps a
small record per job it created (kind, params, creation time, with the results'
TTL); an id without a record is a 404.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Celery
from fastapi.responses import FileResponse, JSONResponse, Response
from redis.asyncio import Redis

from workers.protocol import JOB_ID_RE, QUEUE_DIFFUSION, QUEUE_SMALL, TASK_QUEUES, job_key

from .errors import BackendUnavailable, JobFailed, JobNotFound, ModelUnavailable, QueueFull
from .results import ResultListener
from .schemas import (
    ClassifyResult,
    DigitsResult,
    FacesResult,
    FrameLink,
    ImageLink,
    JobKind,
    JobPublic,
    JobStatus,
    Progress,
)

SAFETY_POLL_S = 1.0
# What a refused POST is told to wait: about how long its queue takes to make room.
RETRY_AFTER_FULL_S = {QUEUE_SMALL: 1, QUEUE_DIFFUSION: 10}


def new_job_id() -> str:
    return uuid.uuid4().hex


def job_url(job_id: str) -> str:
    return f"/jobs/{job_id}"


def image_link(job_id: str, name: str) -> ImageLink:
    return ImageLink(name=name, url=f"{job_url(job_id)}/images/{name}")


@dataclass(frozen=True)
class JobRecord:
    id: str
    kind: JobKind
    task: str
    params: dict[str, Any]
    created_at: datetime

    def to_json(self) -> str:
        return json.dumps(
            {
                "kind": self.kind.value,
                "task": self.task,
                "params": self.params,
                "created_at": self.created_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, job_id: str, raw: bytes | str) -> JobRecord:
        data = json.loads(raw)
        return cls(
            job_id, JobKind(data["kind"]), data["task"], data["params"], datetime.fromisoformat(data["created_at"])
        )


@dataclass(frozen=True)
class JobState:
    status: JobStatus
    progress: Progress | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    error_type: str | None = None

    @property
    def finished(self) -> bool:
        return self.status in (JobStatus.succeeded, JobStatus.failed)


def describe_failure(exc: Any) -> tuple[str, str]:
    """A worker-side exception -> (type name, a message that says what to do)."""
    name = type(exc).__name__ if isinstance(exc, BaseException) else "Error"
    if name in ("SoftTimeLimitExceeded", "TimeLimitExceeded"):
        return (
            name,
            "the job ran past the worker's time limit: ask for fewer images or fewer steps (or raise TASK_SOFT_TIME_LIMIT)",
        )
    if name == "WorkerLostError":
        return name, "the worker process died while running the job (out of memory?): retry with fewer images"
    return name, f"{name}: {exc}"


def state_from_meta(meta: dict[str, Any]) -> JobState:
    status, info = meta.get("status"), meta.get("result")
    if status == "SUCCESS":
        return JobState(JobStatus.succeeded, result=info)
    if status == "PROGRESS" and isinstance(info, dict):
        return JobState(JobStatus.running, progress=Progress(step=int(info["step"]), total=int(info["total"])))
    if status == "STARTED":
        return JobState(JobStatus.running)
    if status == "FAILURE":
        kind, message = describe_failure(info)
        return JobState(JobStatus.failed, error=message, error_type=kind)
    if status == "REVOKED":
        return JobState(JobStatus.failed, error="the job was cancelled", error_type="Revoked")
    return JobState(JobStatus.queued)  # PENDING, RECEIVED, RETRY


def public_result(job_id: str, kind: JobKind, raw: dict[str, Any]) -> FacesResult | DigitsResult | ClassifyResult:
    """The worker's result (file names) -> the public result (with URLs)."""
    if kind is JobKind.faces:
        return FacesResult(
            **{k: raw[k] for k in ("model", "checkpoint", "n", "seed", "device", "compute_s")},
            grid=image_link(job_id, raw["grid"]),
            images=[image_link(job_id, name) for name in raw["images"]],
        )
    if kind is JobKind.digits:
        return DigitsResult(
            **{
                k: raw[k]
                for k in ("checkpoint", "labels", "n", "seed", "sampler", "steps", "guidance", "device", "compute_s")
            },
            guidance_interval=raw.get("guidance_interval"),
            nfe=raw.get("nfe"),
            grid=image_link(job_id, raw["grid"]),
            images=[image_link(job_id, name) for name in raw["images"]],
            frames=[FrameLink(t=int(t), **image_link(job_id, name).model_dump()) for t, name in raw["frames"].items()],
            frames_strip=image_link(job_id, raw["frames_strip"]) if raw.get("frames_strip") else None,
        )
    return ClassifyResult(
        **{k: raw[k] for k in ("target", "checkpoint", "device", "compute_s", "predictions")},
        csv_url=f"{job_url(job_id)}/predictions.csv",
    )


def to_public(record: JobRecord, state: JobState) -> JobPublic:
    return JobPublic(
        id=record.id,
        kind=record.kind,
        status=state.status,
        url=job_url(record.id),
        created_at=record.created_at,
        params=record.params,
        progress=state.progress,
        result=public_result(record.id, record.kind, state.result) if state.result is not None else None,
        error=state.error,
    )


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
        self, celery: Celery, redis: Redis, ttl_s: int, *, queue_bounds: dict[str, int] | None = None
    ) -> None:
        self.celery = celery
        self.redis = redis
        self.ttl_s = ttl_s
        self.queue_bounds = queue_bounds or {}
        self.results = ResultListener(redis, self._result_key("*"))

    async def submit(
        self, kind: JobKind, task: str, kwargs: dict[str, Any], params: dict[str, Any], *, job_id: str | None = None
    ) -> JobRecord:
        await self._check_room(task)
        record = JobRecord(job_id or new_job_id(), kind, task, params, datetime.now(UTC))
        # The record goes first: a worker may finish before send_task returns.
        await self.redis.set(job_key(record.id), record.to_json(), ex=self.ttl_s)
        try:
            await asyncio.to_thread(self.celery.send_task, task, kwargs=kwargs, task_id=record.id)
        except Exception as err:
            await self.redis.delete(job_key(record.id))
            raise BackendUnavailable(
                f"could not queue the job ({type(err).__name__}: {err}): check that Redis is up and REDIS_URL is right",
                headers={"Retry-After": "5"},
            ) from err
        return record

    async def _check_room(self, task: str) -> None:
        """429 before anything is created when the task's queue already holds its bound of jobs.

        A Celery queue on Redis is a list named after the queue, so its length is
        the number of jobs waiting (not those running). Two requests that race
        past the check may take a queue one or two over its bound; that is the
        price of not locking every submit.
        """
        queue = TASK_QUEUES[task]
        bound = self.queue_bounds.get(queue)
        if bound is None:
            return
        waiting = await self.redis.llen(queue)
        if waiting >= bound:
            retry_s = RETRY_AFTER_FULL_S[queue]
            raise QueueFull(
                f"the {queue!r} queue already holds {waiting} waiting jobs, its limit "
                f"(MAX_QUEUED_{queue.upper()}={bound}): nothing was created; retry after {retry_s} s",
                headers={"Retry-After": str(retry_s)},
            )

    async def get(self, job_id: str) -> JobRecord:
        raw = await self.redis.get(job_key(job_id)) if JOB_ID_RE.match(job_id) else None
        if raw is None:
            raise JobNotFound(
                f"no job {job_id!r}: it was never created here or has expired (jobs are kept {self.ttl_s} s). "
                "Start a new one with a POST to /generate/... or /classify/..."
            )
        return JobRecord.from_json(job_id, raw)

    async def state(self, job_id: str) -> JobState:
        # What ``backend.get_task_meta`` does, on the API's async Redis client:
        # no thread hop, no second connection pool per thread.
        return state_from_meta(self._decode(await self.redis.get(self._result_key(job_id))))

    async def wait(self, job_id: str, timeout_s: float) -> JobState:
        """The job's state once finished, or when ``timeout_s`` runs out.

        Celery's Redis backend publishes every state it stores, with the stored
        value as the message; this process's one subscription hands it to the
        waiting request (``api.results``), which sleeps until the worker writes
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

    def _decode(self, raw: bytes | str | None) -> dict[str, Any]:
        if not raw:
            return {"status": "PENDING", "result": None}
        return self.celery.backend.decode_result(raw)

    def _result_key(self, job_id: str) -> str:
        key = self.celery.backend.get_key_for_task(job_id)
        return key.decode() if isinstance(key, bytes) else key


def raise_if_failed(record: JobRecord, state: JobState) -> None:
    if state.status is not JobStatus.failed:
        return
    message = f"job {record.id} failed: {state.error}"
    if state.error_type == "ModelUnavailable":
        raise ModelUnavailable(message)
    raise JobFailed(message)


def job_response(
    record: JobRecord,
    state: JobState,
    *,
    results_dir: Path,
    representation: str = "json",
) -> Response:
    """200 with the result (JSON, the grid PNG or the CSV) when done; 202 with the job's URL otherwise."""
    raise_if_failed(record, state)
    public = to_public(record, state)
    if state.status is not JobStatus.succeeded:
        return JSONResponse(
            public.model_dump(mode="json"),
            status_code=202,
            headers={"Location": public.url, "Retry-After": "1"},
        )
    assert state.result is not None
    if representation == "png" and "grid" in state.result:
        return FileResponse(
            results_dir / record.id / state.result["grid"],
            media_type="image/png",
            headers={"X-Job-Id": record.id, "Content-Location": f"{public.url}/images/{state.result['grid']}"},
        )
    if representation == "csv" and record.kind is JobKind.classify:
        return Response(
            predictions_csv(state.result),
            media_type="text/csv",
            headers={"X-Job-Id": record.id, "Content-Location": f"{public.url}/predictions.csv"},
        )
    return JSONResponse(public.model_dump(mode="json"), headers={"X-Job-Id": record.id})
