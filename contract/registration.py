"""A worker's registration in Redis: what it consumes and has loaded, written by its heartbeat, read by the API.

Layout: ``keys.WORKERS_INDEX_KEY`` is a sorted set of worker ids scored by the
unix time their registration expires; ``keys.worker_key(id)`` holds the JSON of
a ``WorkerRegistration`` with the same TTL. Readers take the ids whose score is
in the future, then the keys (``live_query`` and ``decode``), and so never SCAN.

The key's TTL (three heartbeats) is the backstop; readers also judge the beat
itself (``is_fresh``): a registration whose last beat is older than
``STALE_AFTER_BEATS`` intervals is not a live worker, even before its key expires.
A worker stops beating when it can no longer take jobs (``workers.heartbeat``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from .keys import WORKERS_INDEX_KEY, worker_key

# An absolute path (POSIX or Windows) with at least one folder; group 1 is its last part.
# Not after a word character, "/" or ":", so URLs (redis://host/0) and relative paths are left alone.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/\\~-])(?:/|[A-Za-z]:\\)(?:[^\s/\\'\"]+[/\\])+([^\s/\\'\"]*)")
# Beats a worker may miss before readers count it gone, and the clock difference between hosts they forgive.
STALE_AFTER_BEATS = 2
CLOCK_SLACK_S = 1.0


class StudentInfo(BaseModel):
    name: str | None = Field(description="The student's checkpoint.")
    engine: str = Field(description="What runs it (as `engine` of its teacher).")
    precision: str = Field(description="The engine's arithmetic.")
    guided_sampling: dict[str, Any] = Field(
        description="The guided configuration it was distilled from, where requests naming a sampler, steps or "
        "guidance start."
    )


class ModelInfo(BaseModel):
    role: str = Field(
        description="What the model serves: `faces:A`, `faces:B`, `digits`, `classify:svhn`, `classify:usps`."
    )
    name: str = Field(description="The checkpoint's name.")
    warm: bool = Field(
        False,
        description="Whether its first forward pass is done (at load): until then `/readyz` does not count it.",
    )
    kind: str | None = Field(None, description="The model card's kind.")
    parameters: int | None = None
    dtype: str = Field(description="The dtype it runs in.")
    engine: str | None = Field(
        None, description="What runs it: `torch`, or for the diffusion UNet on a CPU `openvino` / `onnxruntime`."
    )
    precision: str | None = Field(None, description="The engine's arithmetic: `fp32`, `bf16` or `fp16`.")
    stored_dtype: str | None = Field(None, description="The dtype its weights are stored in.")
    device: str
    metrics: dict[str, Any] = Field(default_factory=dict, description="From the model card.")
    hardware: Any = Field(None, description="What it was trained on, from the model card.")
    num_train_timesteps: int | None = None
    guidance_scale: float | None = Field(None, description="Default classifier-free guidance (diffusion only).")
    sampling: dict[str, Any] | None = Field(
        None,
        description="The recommended sampling configuration that a digits request gets by default (diffusion only).",
        examples=[{"sampler": "unipc", "steps": 5, "guidance_scale": 5.0, "guidance_interval": [55, 370]}],
    )
    student: StudentInfo | None = Field(
        None, description="The distilled student that serves `sampler=distilled` (diffusion only, when loaded)."
    )


class MissingModel(BaseModel):
    role: str
    name: str = Field(description="The checkpoint's name.")
    reason: str = Field(description="Why it is not loaded (files named relative to the worker's checkpoint folder).")


class WorkerRegistration(BaseModel):
    worker: str = Field(description="hostname:pid of the worker process.")
    device: str | None
    queues: list[str] = Field(
        default_factory=list, description="The job queues it consumes: `small` (faces, classify), `diffusion` (digits)."
    )
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_s: float | None = Field(
        None,
        description="How often it re-registers; a registration whose last beat is older than two of these is stale "
        "and not counted (by `/readyz` either).",
    )
    models: list[ModelInfo]
    missing: list[MissingModel] = Field(description="Checkpoints this worker could not load, and why.")


def without_paths(text: str) -> str:
    """``text`` with each absolute path cut to its last part (a file name).

    Workers name their checkpoint files relatively (``workers.models_loaded.public_reason``);
    this keeps any other path of their machine (an OSError's, an older worker's) out of
    what the API publishes too.
    """
    return _ABSOLUTE_PATH.sub(r"\1", text)


def live_query(now: float | None = None) -> tuple[str, float, str]:
    """The ``ZRANGEBYSCORE`` arguments that list the workers whose registration has not expired."""
    return WORKERS_INDEX_KEY, time.time() if now is None else now, "+inf"


def keys_of(ids: Iterable[bytes | str]) -> list[str]:
    return [worker_key(i.decode() if isinstance(i, bytes) else i) for i in ids]


def is_fresh(worker: WorkerRegistration, now: float | None = None) -> bool:
    """Whether ``worker`` beat within the last ``STALE_AFTER_BEATS`` intervals (one that does not say its
    interval, an older worker's, is judged by its key's TTL alone)."""
    if worker.heartbeat_s is None:
        return True
    age = (time.time() if now is None else now) - worker.heartbeat_at.timestamp()
    return age <= STALE_AFTER_BEATS * worker.heartbeat_s + CLOCK_SLACK_S


def decode(raw: Iterable[bytes | str | None], now: float | None = None) -> list[WorkerRegistration]:
    """``MGET`` of the registration keys -> the registrations of live workers, oldest worker first.

    A key that expired between the two reads, or that a worker of another version
    wrote, is skipped: it is not ours to judge. A stale one (``is_fresh``) is skipped too.
    """
    workers = []
    for item in raw:
        if item is None:
            continue
        try:
            worker = WorkerRegistration.model_validate_json(item)
        except (ValueError, ValidationError):
            continue
        if not is_fresh(worker, now):
            continue
        for missing in worker.missing:
            missing.reason = without_paths(missing.reason)
        workers.append(worker)
    return sorted(workers, key=lambda w: w.started_at)


def read_live(client: Any) -> list[WorkerRegistration]:
    """The live workers' registrations, read with a synchronous redis-py ``client``."""
    ids = client.zrangebyscore(*live_query())
    return decode(client.mget(keys_of(ids))) if ids else []


def register(pipe: Any, registration: WorkerRegistration, ttl_s: float, now: float) -> None:
    """Queue the writes that (re)register a worker for ``ttl_s`` on a Redis pipeline."""
    pipe.set(worker_key(registration.worker), registration.model_dump_json(), px=int(ttl_s * 1000))
    pipe.zadd(WORKERS_INDEX_KEY, {registration.worker: now + ttl_s})
    pipe.zremrangebyscore(WORKERS_INDEX_KEY, "-inf", now)


def deregister(pipe: Any, worker_id: str) -> None:
    pipe.delete(worker_key(worker_id))
    pipe.zrem(WORKERS_INDEX_KEY, worker_id)
