"""Keeping ``RESULTS_DIR`` bounded from the API process, whether or not a worker is up.

Every ``RESULTS_SWEEP_SECONDS`` (and once at start-up) the API removes expired
job folders (``JOB_TTL_SECONDS``), then, while the job folders together hold
more than ``RESULTS_MAX_BYTES``, the oldest folders. A folder changed within the
last ``QUOTA_GRACE_S`` stays even above the quota: its job may still be queued
and need its inputs. Between two sweeps the folders may grow past the quota by
what that interval's jobs write.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from workers.retention import FolderSizes, prune_expired, trim_to_quota

log = logging.getLogger(__name__)

QUOTA_GRACE_S = 600.0


@dataclass(frozen=True)
class Sweep:
    expired: int  # folders past their TTL, removed
    trimmed: int  # folders removed for the quota
    freed: int  # bytes the quota removals freed
    total: int  # bytes of the job folders left
    over: bool  # still above the quota (every folder left is younger than the grace period)


class ResultsJanitor:
    """TTL expiry and the size quota of ``results_dir``, one sweep at a time."""

    def __init__(
        self,
        results_dir: Path,
        *,
        ttl_s: float,
        max_bytes: int,
        every_s: float,
        grace_s: float = QUOTA_GRACE_S,
    ) -> None:
        self.results_dir = Path(results_dir)
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self.every_s = every_s
        self.grace_s = grace_s
        self._sizes = FolderSizes()  # folder sizes are measured again only when a folder changes

    def sweep(self) -> Sweep:
        """One pass (blocking file-system work: run it in a thread)."""
        expired = prune_expired(self.results_dir, self.ttl_s)
        trimmed = trim_to_quota(self.results_dir, self.max_bytes, keep_younger_than_s=self.grace_s, sizes=self._sizes)
        if expired or trimmed.removed:
            log.info(
                "results: %d expired job folders removed, %d more (%d bytes) for RESULTS_MAX_BYTES=%d; %d bytes left",
                expired,
                trimmed.removed,
                trimmed.freed,
                self.max_bytes,
                trimmed.total,
            )
        if trimmed.over:
            log.warning(
                "results: %d bytes of job folders, above RESULTS_MAX_BYTES=%d, all changed within the last %.0f s",
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
            except OSError as err:
                log.warning("results: sweep of %s failed: %s", self.results_dir, err)
            await asyncio.sleep(self.every_s)
