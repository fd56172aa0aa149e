"""The results store stays bounded: expired jobs go, and past RESULTS_MAX_BYTES the oldest whole jobs go first
(here on the local store; tests/integration/test_s3_store.py runs the same rules on an S3 server)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from api.config import Settings
from api.operations.retention import ResultsJanitor, prune_expired, trim_to_quota
from contract.files import INPUTS_DIR
from contract.store import LocalStore

HOUR = 3600.0


def job(root: Path, n: int, *, bytes_: int, age_s: float, inputs: bool = False) -> Path:
    """A job folder ``n`` holding ``bytes_`` bytes (some in inputs/), last changed ``age_s`` ago."""
    folder = root / f"{n:032x}"
    target = folder / INPUTS_DIR if inputs else folder
    target.mkdir(parents=True)
    (target / "file.bin").write_bytes(b"x" * bytes_)
    when = time.time() - age_s
    for path in (target, folder):
        os.utime(path, (when, when))
    return folder


def test_over_the_quota_the_oldest_whole_folders_go_first(tmp_path: Path) -> None:
    folders = [job(tmp_path, n, bytes_=1000, age_s=(10 - n) * HOUR, inputs=n % 2 == 0) for n in range(6)]
    stranger = tmp_path / "not-a-job"
    stranger.mkdir()
    (stranger / "keep.bin").write_bytes(b"x" * 10_000)

    trimmed = trim_to_quota(LocalStore(tmp_path), 3500)
    assert (trimmed.removed, trimmed.freed, trimmed.total, trimmed.over) == (3, 3000, 3000, False)
    assert [f.exists() for f in folders] == [False, False, False, True, True, True]
    assert (stranger / "keep.bin").exists()  # only job folders are counted and removed
    assert trim_to_quota(LocalStore(tmp_path), 3500).removed == 0  # under the quota: nothing more


def test_folders_younger_than_the_grace_period_stay_even_over_the_quota(tmp_path: Path) -> None:
    old = job(tmp_path, 1, bytes_=1000, age_s=2 * HOUR)
    young = [job(tmp_path, n, bytes_=1000, age_s=60) for n in (2, 3)]
    trimmed = trim_to_quota(LocalStore(tmp_path), 500, keep_younger_than_s=600)
    assert not old.exists() and all(f.exists() for f in young)
    assert trimmed.over and trimmed.total == 2000


def test_a_worker_trims_only_finished_jobs_and_never_the_one_it_just_wrote(tmp_path: Path) -> None:
    queued = job(tmp_path, 1, bytes_=1000, age_s=3 * HOUR, inputs=True)  # a classify job waiting: its inputs alone
    finished = job(tmp_path, 2, bytes_=1000, age_s=2 * HOUR)
    just_written = job(tmp_path, 3, bytes_=1000, age_s=HOUR)
    store = LocalStore(tmp_path)
    assert [j.results for j in store.jobs()] == [False, True, True]
    trimmed = trim_to_quota(store, 500, keep=(just_written.name,), finished_only=True)
    assert (queued.exists(), finished.exists(), just_written.exists()) == (True, False, True)
    assert trimmed.removed == 1 and trimmed.over  # what is left is protected, and the API's sweep may take it later


def test_a_finished_job_enforces_the_quota_in_its_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """RESULTS_MAX_BYTES holds as results are written, not only at the API's next sweep (a 5 MiB quota took
    352 MiB in 66 s of face jobs, between sweeps and under the sweep's grace period)."""
    from workers import lifecycle, tasks
    from workers.config import WorkerSettings

    older = [job(tmp_path, n, bytes_=1000, age_s=60 - n) for n in range(1, 5)]  # all younger than the sweep's grace
    newest = job(tmp_path, 9, bytes_=1000, age_s=1)
    monkeypatch.setattr(lifecycle, "_store", LocalStore(tmp_path))
    monkeypatch.setattr(tasks, "get_settings", lambda: WorkerSettings(_env_file=None, results_max_bytes=2500))
    tasks.JobTask._enforce_quota(newest.name)
    assert [f.exists() for f in older] == [False, False, False, True] and newest.exists()


def test_sizes_are_measured_again_when_a_folder_changes(tmp_path: Path) -> None:
    folder = job(tmp_path, 1, bytes_=100, age_s=HOUR)
    store = LocalStore(tmp_path)
    assert [j.bytes for j in store.jobs()] == [100]
    (folder / INPUTS_DIR).mkdir()
    (folder / INPUTS_DIR / "digits.npy").write_bytes(b"x" * 50)
    assert [j.bytes for j in store.jobs()] == [150]


def test_the_janitor_expires_and_trims_in_one_sweep(tmp_path: Path) -> None:
    expired = job(tmp_path, 1, bytes_=10, age_s=30 * HOUR)
    old, new = job(tmp_path, 2, bytes_=800, age_s=5 * HOUR), job(tmp_path, 3, bytes_=800, age_s=2 * HOUR)
    sweep = ResultsJanitor(LocalStore(tmp_path), ttl_s=24 * HOUR, max_bytes=1000, every_s=60, grace_s=600).sweep()
    assert (sweep.expired, sweep.trimmed, sweep.freed, sweep.total) == (1, 1, 800, 800)
    assert not expired.exists() and not old.exists() and new.exists()


def test_the_api_sweeps_in_the_background_with_no_worker_up(tmp_path: Path) -> None:
    """The app's lifespan starts the sweeps: a tiny quota empties the results folder of old jobs within a moment."""
    from fastapi.testclient import TestClient

    from api.main import create_app

    folders = [job(tmp_path, n, bytes_=4096, age_s=2 * HOUR) for n in range(3)]
    settings = Settings(
        _env_file=None,
        results_dir=tmp_path,
        results_max_bytes=1,
        results_sweep_seconds=0.05,
        redis_url="redis://127.0.0.1:1/0",  # nothing listens: the sweeps need neither Redis nor a worker
    )
    with TestClient(create_app(settings)):
        deadline = time.monotonic() + 10
        while any(f.exists() for f in folders) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(f.exists() for f in folders)
        job(tmp_path, 9, bytes_=4096, age_s=2 * HOUR)  # and again, on the next sweep
        while (tmp_path / f"{9:032x}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not (tmp_path / f"{9:032x}").exists()


def test_a_failing_sweep_does_not_stop_the_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    janitor = ResultsJanitor(LocalStore(tmp_path), ttl_s=HOUR, max_bytes=1, every_s=0.01)
    calls = []

    def flaky() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("disk went away")

    monkeypatch.setattr(janitor, "sweep", flaky)

    async def two_sweeps() -> None:
        task = asyncio.create_task(janitor.run())
        while len(calls) < 2:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(asyncio.wait_for(two_sweeps(), 5))
    assert len(calls) >= 2


def test_the_quota_setting_has_a_sensible_default() -> None:
    assert Settings(_env_file=None).results_max_bytes == 2 * 2**30
    with pytest.raises(ValueError):
        Settings(_env_file=None, results_max_bytes=0)


def test_prune_removes_expired_job_folders_only(tmp_path: Path) -> None:
    old, new, other = tmp_path / ("a" * 32), tmp_path / ("b" * 32), tmp_path / "keep-me"
    for folder in (old, new, other):
        folder.mkdir()
    past = time.time() - 7200
    os.utime(old, (past, past))
    os.utime(other, (past, past))
    assert prune_expired(LocalStore(tmp_path), older_than_s=3600) == 1
    assert not old.exists() and new.exists() and other.exists()
