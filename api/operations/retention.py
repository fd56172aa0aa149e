"""How long a job's files stay and how much room they take in the results store: one owner, the API.

Two rules, both removing whole jobs: a job whose files were last written more than
``JOB_TTL_SECONDS`` ago has expired (its metadata in Redis is gone too), and when
all jobs together pass ``RESULTS_MAX_BYTES`` the oldest go first. Every
``RESULTS_SWEEP_SECONDS`` (and once at start-up) the API's ``ResultsJanitor``
applies both, to a local folder or an S3 bucket alike (``contract.store``), whether
or not a worker is up; with several API processes each sweeps, and a job one of
them removed is simply gone for the others. A job written within the last
``QUOTA_GRACE_S`` stays even above the quota: it may still be queued and need its
inputs. Between two sweeps the store may grow past the quota by what that
interval's jobs write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from contract.store import ResultStore

log = logging.getLogger(__name__)

QUOTA_GRACE_S = 600.0


def prune_expired(store: ResultStore, older_than_s: float) -> int:
    """Delete the jobs last written more than ``older_than_s`` ago; returns how many."""
    cutoff = time.time() - older_than_s
    return sum(1 for job in store.jobs() if job.modified < cutoff and store.delete_job(job.job_id))


@dataclass(frozen=True)
class Trimmed:
    removed: int  # jobs deleted
    freed: int  # their bytes
    total: int  # bytes of the jobs left
    over: bool  # still above the quota: every job left is too young to remove


def trim_to_quota(store: ResultStore, max_bytes: int, *, keep_younger_than_s: float = 0.0) -> Trimmed:
    """Delete whole jobs, oldest first, until they hold at most ``max_bytes`` together.

    Jobs written within the last ``keep_younger_than_s`` seconds stay even
    above the quota: they may still be queued and need their inputs.
    """
    jobs = store.jobs()
    total = sum(job.bytes for job in jobs)
    removed = freed = 0
    young = time.time() - keep_younger_than_s
    for job in jobs:
        if total <= max_bytes or job.modified >= young:
            break
        if store.delete_job(job.job_id):
            removed, freed, total = removed + 1, freed + job.bytes, total - job.bytes
    return Trimmed(removed, freed, total, total > max_bytes)


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
