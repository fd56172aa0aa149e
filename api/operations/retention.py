"""How long a job's files stay and how much room they take in the results store: one owner, the API.

Two rules, both removing whole jobs: a job whose files were last written more than
``JOB_TTL_SECONDS`` ago has expired (its metadata in Redis is gone too), and when
all jobs together pass ``RESULTS_MAX_BYTES`` the oldest go first. Every
``RESULTS_SWEEP_SECONDS`` (and once at start-up) the API's ``ResultsJanitor``
applies both, to a local folder or an S3 bucket alike (``contract.store``), whether
or not a worker is up; with several API processes each sweeps, and a job one of
them removed is simply gone for the others. A job written within the last
``QUOTA_GRACE_S`` stays even above the quota: it may still be queued and need its
inputs. The sweep is the backstop of the quota: each worker enforces it as it
writes (``contract.quota``), so between two sweeps the store grows past it only by
the jobs being written at that moment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from contract.quota import trim_to_quota
from contract.store import ResultStore

log = logging.getLogger(__name__)

QUOTA_GRACE_S = 600.0


def prune_expired(store: ResultStore, older_than_s: float) -> int:
    """Delete the jobs last written more than ``older_than_s`` ago; returns how many."""
    cutoff = time.time() - older_than_s
    return sum(1 for job in store.jobs() if job.modified < cutoff and store.delete_job(job.job_id))


@dataclass(frozen=True)
class Sweep:
    expired: int  # jobs past their TTL, removed
    trimmed: int  # jobs removed for the quota
    freed: int  # bytes the quota removals freed
    total: int  # bytes of the jobs left
    over: bool  # still above the quota (every job left is younger than the grace period)


class ResultsJanitor:
    """TTL expiry and the size quota of the results store, one sweep at a time."""

    def __init__(
        self, store: ResultStore, *, ttl_s: float, max_bytes: int, every_s: float, grace_s: float = QUOTA_GRACE_S
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.every_s = every_s
        self.grace_s = grace_s

    def sweep(self) -> Sweep:
        """One pass (blocking I/O: run it in a thread)."""
        expired = prune_expired(self.store, self.ttl_s)
        trimmed = trim_to_quota(self.store, self.max_bytes, keep_younger_than_s=self.grace_s)
        if expired or trimmed.removed:
            log.info(
                "results: %d expired jobs removed, %d more (%d bytes) for RESULTS_MAX_BYTES=%d; %d bytes left",
                expired,
                trimmed.removed,
                trimmed.freed,
                self.max_bytes,
                trimmed.total,
            )
        if trimmed.over:
            log.warning(
                "results: %d bytes of jobs, above RESULTS_MAX_BYTES=%d, all written within the last %.0f s",
                trimmed.total,
                self.max_bytes,
                self.grace_s,
            )
        return Sweep(expired, trimmed.removed, trimmed.freed, trimmed.total, trimmed.over)

    async def run(self) -> None:
        """Sweep now and then every ``every_s`` seconds, until cancelled; a failing sweep is logged, not fatal."""
        while True:
            try:
                await asyncio.to_thread(self.sweep)
            except Exception as err:  # noqa: BLE001 - an OSError, or any of botocore's errors: retried next time
                log.warning("results: sweep of the %s failed: %s", self.store.describe(), err)
            await asyncio.sleep(self.every_s)
