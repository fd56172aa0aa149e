"""Stopping the workers: SIGTERM starts a bounded shutdown, and SIGKILL waits past its bound."""

from __future__ import annotations

import subprocess
import sys
import time

from stack.processes import stop_all
from stack.services import SHUTDOWN_MARGIN_S, LocalStack, worker_specs
from workers.config import WorkerSettings

IGNORES_SIGTERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
OBEYS_SIGTERM = "import time; print('up', flush=True); time.sleep(60)"


def test_only_the_prefork_worker_turns_sigterm_into_a_soft_shutdown() -> None:
    specs = {spec.pool: spec for spec in worker_specs(cpus=8)}
    assert specs["prefork"].env()["REMAP_SIGTERM"] == "SIGQUIT"
    # A threads pool cannot cancel a running job; its jobs take milliseconds, so it keeps the warm shutdown.
    assert "REMAP_SIGTERM" not in specs["threads"].env()


def test_the_workers_soft_shutdown_lasts_the_grace_setting() -> None:
    from workers.celery_app import app, settings

    assert app.conf.worker_soft_shutdown_timeout == settings.shutdown_grace_s
    assert WorkerSettings(_env_file=None, shutdown_grace_s=0).shutdown_grace_s == 0  # 0: requeue at once


def test_the_launcher_waits_the_grace_and_a_margin_before_sigkill() -> None:
    default = WorkerSettings.model_fields["shutdown_grace_s"].default
    assert LocalStack({"REDIS_URL": "redis://x"}).shutdown_wait_s() == default + SHUTDOWN_MARGIN_S
    assert LocalStack({"REDIS_URL": "redis://x", "SHUTDOWN_GRACE_S": "3"}).shutdown_wait_s() == 3 + SHUTDOWN_MARGIN_S


def _start(code: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "up"  # its handlers are set
    return process


def test_stop_all_signals_every_process_at_once_and_kills_only_past_the_timeout() -> None:
    stubborn = [_start(IGNORES_SIGTERM) for _ in range(2)]
    polite = _start(OBEYS_SIGTERM)
    started = time.monotonic()
    stop_all([*stubborn, polite, None], timeout=2.0)
    took = time.monotonic() - started
    assert polite.returncode == -15  # SIGTERM
    assert [p.returncode for p in stubborn] == [-9, -9]  # SIGKILL, after the timeout
    assert 2.0 <= took < 3.9, took  # the waits overlapped: not 2 s per process
    for process in (*stubborn, polite):
        process.stdout.close()  # type: ignore[union-attr]
