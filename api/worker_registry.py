"""Reads what the live workers have loaded (they register themselves in Redis)."""

from __future__ import annotations

import json
import re
import time

from pydantic import ValidationError
from redis.asyncio import Redis

from workers.protocol import ROLE_QUEUES, WORKERS_INDEX_KEY, worker_key

from .errors import ModelUnavailable
from .schemas import ModelInfo, WorkerPublic

# An absolute path (POSIX or Windows) with at least one folder; group 1 is its last part.
# Not after a word character, "/" or ":", so URLs (redis://host/0) and relative paths are left alone.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/\\~-])(?:/|[A-Za-z]:\\)(?:[^\s/\\'\"]+[/\\])+([^\s/\\'\"]*)")

# How long ``require`` trusts what it read: a POST checks the workers' models on
# every request, and this keeps that to one Redis read per second under load.
REQUIRE_CACHE_S = 1.0


def without_paths(text: str) -> str:
    """``text`` with each absolute path cut to its last part (a file name).

    Workers already name their checkpoint files relatively (``workers.registry.public_reason``);
    this keeps any other path of their machine (an OSError's, an older worker's) out of
    GET /models and /readyz too.
    """
    return _ABSOLUTE_PATH.sub(r"\1", text)


class WorkerRegistry:
    def __init__(self, redis: Redis, *, cache_s: float = REQUIRE_CACHE_S) -> None:
        self.redis = redis
        self.cache_s = cache_s
        self._cached: tuple[float, list[WorkerPublic]] | None = None

    async def live(self) -> list[WorkerPublic]:
        """Workers whose registration has not expired, oldest first."""
        ids = await self.redis.zrangebyscore(WORKERS_INDEX_KEY, time.time(), "+inf")
        if not ids:
            return []
        raw = await self.redis.mget([worker_key(i.decode() if isinstance(i, bytes) else i) for i in ids])
        workers = []
        for item in raw:
            if item is None:  # expired between the two reads
                continue
            try:
                worker = WorkerPublic.model_validate(json.loads(item))
            except (ValueError, ValidationError):
                continue  # a worker of another version; it is not ours to judge
            for missing in worker.missing:
                missing.reason = without_paths(missing.reason)
            workers.append(worker)
        return sorted(workers, key=lambda w: w.started_at)

    async def require(self, role: str) -> ModelInfo | None:
        """The loaded model for ``role``; refuses a job no live worker can run.

        Only workers that consume the role's queue count. With none of them
        live the job may queue (its worker may be starting): None.
        """
        queue = ROLE_QUEUES.get(role)
        workers = [w for w in await self._recent() if not w.queues or queue in w.queues]
        if not workers:
            return None
        for model in (model for w in workers for model in w.models):
            if model.role == role:
                return model
        reasons = {m.name: m.reason for w in workers for m in w.missing if m.role == role}
        why = "; ".join(f"{name}: {reason}" for name, reason in reasons.items()) or "not served"
        raise ModelUnavailable(
            f"no worker has the model for {role!r} loaded ({why}). Train it, or point the worker's "
            "CHECKPOINT_DIR at a folder that has it; GET /models lists what is loaded.",
            headers={"Retry-After": "30"},
        )

    async def _recent(self) -> list[WorkerPublic]:
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > self.cache_s:
            self._cached = (now, await self.live())
        return self._cached[1]
