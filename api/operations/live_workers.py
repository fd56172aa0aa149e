"""Reads what the live workers have loaded (they register themselves in Redis)."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from api.errors import ModelUnavailable
from contract import registration
from contract.registration import ModelInfo, WorkerRegistration
from contract.roles import ROLE_QUEUES

# How long ``require`` trusts what it read: a POST checks the workers' models on
# every request, and this keeps that to one Redis read per second under load.
REQUIRE_CACHE_S = 1.0


class LiveWorkers:
    def __init__(self, redis: Redis, *, cache_s: float = REQUIRE_CACHE_S) -> None:
        self.redis = redis
        self.cache_s = cache_s
        self._cached: tuple[float, list[WorkerRegistration]] | None = None

    async def live(self) -> list[WorkerRegistration]:
        """Workers whose registration has not expired, oldest first."""
        ids = await self.redis.zrangebyscore(*registration.live_query())
        if not ids:
            return []
        return registration.decode(await self.redis.mget(registration.keys_of(ids)))

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

    async def _recent(self) -> list[WorkerRegistration]:
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] > self.cache_s:
            self._cached = (now, await self.live())
        return self._cached[1]
