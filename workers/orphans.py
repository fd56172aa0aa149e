"""A worker whose parent is gone does not linger.

``make run`` starts each worker with a parent-death signal (SIGTERM), but a worker
told to stop while Redis is gone too (the launcher's redis-server dies with it)
retried the dead Redis for many minutes and ignored further SIGTERMs, holding
800 MB with parent pid 1. So:

- the Celery main process watches its parent: once it is gone, the usual shutdown
  has ``SHUTDOWN_GRACE_S`` plus ``EXIT_MARGIN_S`` to finish (putting a running job
  back on its queue when Redis allows), then the process exits at once. A job
  it could not give back stays in kombu's unacked hash, and the next launcher
  gives it back at start-up (``stack.requeue.requeue_orphaned``);
- a prefork pool child asks the kernel to SIGKILL it when its Celery parent dies,
  so a killed worker leaves no pool process behind to finish a job that is about to
  run again.

The watch is on where the launcher asks for it (``EXIT_WITH_PARENT``): a worker
started under ``nohup`` or a service manager outlives its starter on purpose. A
worker whose parent is pid 1 from the start has nothing to watch.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from typing import Any

from celery.signals import worker_init, worker_process_init

from contract.lifetime import die_with_parent

from .config import get_settings

log = logging.getLogger(__name__)

POLL_S = 0.5
EXIT_MARGIN_S = 5.0


def watch_parent(grace_s: float, *, poll_s: float = POLL_S, exit: Any = os._exit) -> threading.Thread | None:
    """A daemon thread that ends this process ``grace_s`` after its parent is gone; None when there is no parent
    to watch (pid 1)."""
    parent = os.getppid()
    if parent <= 1:
        return None

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.warning("the worker's parent (pid %d) is gone: stopping, and exiting in at most %.0f s", parent, grace_s)
        os.kill(os.getpid(), signal.SIGTERM)  # the usual shutdown, in case no parent-death signal was set
        time.sleep(grace_s)
        log.error("the worker did not stop within %.0f s of its parent's death: exiting now", grace_s)
        logging.shutdown()
        exit(1)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread


@worker_init.connect
def _watch_the_launcher(**_: Any) -> None:
    settings = get_settings()
    if settings.exit_with_parent:
        watch_parent(settings.shutdown_grace_s + EXIT_MARGIN_S)


@worker_process_init.connect
def _die_with_the_worker(**_: Any) -> None:
    die_with_parent(signal.SIGKILL)
