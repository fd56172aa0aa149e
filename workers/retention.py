"""How long job folders stay and how much room they may take under ``RESULTS_DIR``.

Two rules, both removing whole job folders: a folder last modified more than
``JOB_TTL_SECONDS`` ago has expired (its job's metadata in Redis is gone too),
and when all folders together pass ``RESULTS_MAX_BYTES`` the oldest go first.
Torch-free: the API runs both on a timer (``api.cleanup``), so they hold when no
worker is up; the workers prune expired folders too.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .protocol import INPUTS_DIR, JOB_ID_RE

log = logging.getLogger(__name__)


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
