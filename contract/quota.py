"""``RESULTS_MAX_BYTES``: whole jobs removed, oldest first, until the results store is back under the quota.

Two callers: each worker right after a job has written its results (so the store
never grows past the quota by more than the jobs being written at that moment),
and the API's periodic sweep (``api.operations.retention``), the backstop. A
worker removes only jobs that have results (a queued classification job has its
inputs alone, and needs them when it runs) and never the job it has just written.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from dataclasses import dataclass

from contract.store import ResultStore


@dataclass(frozen=True)
class Trimmed:
    removed: int  # jobs deleted
    freed: int  # their bytes
    total: int  # bytes of the jobs left
    over: bool  # still above the quota: every job left is protected


def trim_to_quota(
    store: ResultStore,
    max_bytes: int,
    *,
    keep_younger_than_s: float = 0.0,
    keep: Collection[str] = (),
    finished_only: bool = False,
) -> Trimmed:
    """Delete whole jobs, oldest first, until they hold at most ``max_bytes`` together.

    Kept even above the quota: jobs written within the last ``keep_younger_than_s`` seconds,
    the jobs in ``keep``, and with ``finished_only`` the jobs without results yet.
    """
    jobs = store.jobs()
    total = sum(job.bytes for job in jobs)
    removed = freed = 0
    young = time.time() - keep_younger_than_s
    for job in jobs:
        if total <= max_bytes:
            break
        if job.modified >= young or job.job_id in keep or (finished_only and not job.results):
            continue
        if store.delete_job(job.job_id):
            removed, freed, total = removed + 1, freed + job.bytes, total - job.bytes
    return Trimmed(removed, freed, total, total > max_bytes)
