"""Reads what the live workers have loaded (they register themselves in Redis)."""

from __future__ import annotations

import json
import time

from pydantic import ValidationError
from redis.asyncio import Redis

from workers.protocol import WORKERS_INDEX_KEY, worker_key

from .errors import ModelUnavailable
from .schemas import ModelInfo, WorkerPublic


class WorkerRegistry:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

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
                workers.append(WorkerPublic.model_validate(json.loads(item)))
            except (ValueError, ValidationError):
                continue  # a worker of another version; it is not ours to judge
        return sorted(workers, key=lambda w: w.started_at)

    async def require(self, role: str) -> ModelInfo | None:
        """The loaded model for ``role``; refuses a job no live worker can run.

        With no worker at all the job may queue (a worker may be starting): None.
        """
        workers = await self.live()
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
