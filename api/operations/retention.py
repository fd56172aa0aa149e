"""How long job folders stay and how much room they take under ``RESULTS_DIR``: one owner, the API.

Two rules, both removing whole job folders: a folder last modified more than
``JOB_TTL_SECONDS`` ago has expired (its job's metadata in Redis is gone too),
and when all folders together pass ``RESULTS_MAX_BYTES`` the oldest go first.
Every ``RESULTS_SWEEP_SECONDS`` (and once at start-up) the API's ``ResultsJanitor``
applies both, whether or not a worker is up. A folder changed within the
last ``QUOTA_GRACE_S`` stays even above the quota: its job may still be queued
and need its inputs. Between two sweeps the folders may grow past the quota by
what that interval's jobs write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from contract.files import INPUTS_DIR, JOB_ID_RE

log = logging.getLogger(__name__)

QUOTA_GRACE_S = 600.0


@dataclass(frozen=True)
class JobFolder:
    path: Path
    modified: float  # unix time of the folder's last change
    bytes: int


def _signature(folder: Path) -> tuple[int, int]:
    # A job's files are written to a temporary name and renamed into its folder or
    # its inputs/ folder, so each write changes one of these two times.
    inputs = folder / INPUTS_DIR
    try:
        inputs_ns = inputs.stat().st_mtime_ns
    except FileNotFoundError:
        inputs_ns = 0
    return folder.stat().st_mtime_ns, inputs_ns


def _measure(folder: Path) -> int:
    total = 0
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                total += _measure(Path(entry.path))
            else:
                total += entry.stat(follow_symlinks=False).st_size
    return total


class FolderSizes:
    """Bytes per job folder, measured again only when the folder has changed since the last look."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[tuple[int, int], int]] = {}

    def __call__(self, folder: Path) -> int:
        signature = _signature(folder)
        known = self._known.get(folder.name)
        if known is None or known[0] != signature:
            known = self._known[folder.name] = (signature, _measure(folder))
        return known[1]

    def forget_missing(self, names: set[str]) -> None:
        for name in set(self._known) - names:
            del self._known[name]


def job_folders(results_dir: Path, sizes: FolderSizes | None = None) -> list[JobFolder]:
    """The job folders under ``results_dir``, oldest first (other files and folders are never touched)."""
    root = Path(results_dir)
    if not root.is_dir():
        return []
    measure = sizes or FolderSizes()
    found = []
    for folder in root.iterdir():
        if not (JOB_ID_RE.match(folder.name) and folder.is_dir()):
            continue
        try:
            found.append(JobFolder(folder, folder.stat().st_mtime, measure(folder)))
        except OSError as err:  # removed meanwhile, by a worker or another API process
            log.debug("could not measure %s: %s", folder, err)
    if sizes is not None:
        sizes.forget_missing({job.path.name for job in found})
    return sorted(found, key=lambda job: job.modified)


def _remove(folder: Path) -> bool:
    """Whether ``folder`` is gone afterwards (another process may be removing it at the same time)."""
    try:
        shutil.rmtree(folder)
    except OSError as err:
        log.debug("could not remove %s: %s", folder, err)
    return not folder.exists()


def prune_expired(results_dir: Path, older_than_s: float) -> int:
    """Delete job folders last modified more than ``older_than_s`` ago; returns how many."""
    root = Path(results_dir)
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for folder in root.iterdir():
        if not (folder.is_dir() and JOB_ID_RE.match(folder.name)):
            continue
        try:
            expired = folder.stat().st_mtime < cutoff
        except OSError:
            continue
        if expired and _remove(folder):
            removed += 1
    return removed


@dataclass(frozen=True)
class Trimmed:
    removed: int  # folders deleted
    freed: int  # their bytes
    total: int  # bytes of the job folders left
    over: bool  # still above the quota: every folder left is too young to remove


def trim_to_quota(
    results_dir: Path, max_bytes: int, *, keep_younger_than_s: float = 0.0, sizes: FolderSizes | None = None
) -> Trimmed:
    """Delete whole job folders, oldest first, until they hold at most ``max_bytes`` together.

    Folders changed within the last ``keep_younger_than_s`` seconds stay even
    above the quota: their jobs may still be queued and need their inputs.
    """
    folders = job_folders(results_dir, sizes)
    total = sum(job.bytes for job in folders)
    removed = freed = 0
    young = time.time() - keep_younger_than_s
    for job in folders:
        if total <= max_bytes or job.modified >= young:
            break
        if _remove(job.path):
            removed, freed, total = removed + 1, freed + job.bytes, total - job.bytes
    return Trimmed(removed, freed, total, total > max_bytes)


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
