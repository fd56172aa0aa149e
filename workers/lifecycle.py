"""One worker process's singletons (its models, heartbeat and micro-batcher) and the Celery signals that start them.

``worker_process_init`` loads every served checkpoint in each pool child (after
the fork, so CUDA is only ever initialised in the child), then a heartbeat thread
keeps the process's registration alive. The queues are read from the worker
itself at ``worker_init`` (after ``-Q`` is applied), so the models always match
what it consumes; outside a worker they come from ``WORKER_QUEUES``.
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from celery.signals import worker_init, worker_process_init, worker_process_shutdown, worker_shutdown

from contract.store import ResultStore, make_store

from .batching import MicroBatcher
from .config import get_settings

if TYPE_CHECKING:
    from .heartbeat import Heartbeat
    from .registry import Registry

_registry: Registry | None = None
_heartbeat: Heartbeat | None = None
_batcher: MicroBatcher | None = None
_store: ResultStore | None = None
_consumed_queues: tuple[str, ...] = ()  # set at worker_init, inherited by forked pool children
_parent_pid: int | None = None  # a prefork pool child's Celery parent, which hands it its jobs
_lock = threading.Lock()


def get_registry() -> Registry:
    """This process's registry, loading it on first use (the solo pool has no process init)."""
    global _registry, _heartbeat
    with _lock:
        if _registry is None:
            # Imported here, in the process that serves: a Celery parent imports this module but never runs
            # a model, and without torch it forks lighter children and exits without torch's exit handlers.
            from .heartbeat import Heartbeat
            from .registry import Registry

            settings = get_settings()
            registry = Registry(settings, queues=_consumed_queues)
            registry.load()
            _registry = registry
            # Registered while warming up, so /readyz can say which models are not warm yet;
            # each model is published as soon as it is. Jobs wait: this runs before the pool takes any.
            heartbeat = _heartbeat = Heartbeat(registry, settings, parent_pid=_parent_pid)
            heartbeat.start()
            registry.warm_up(on_warm=heartbeat.beat_soon)
        return _registry


def get_store() -> ResultStore:
    """This process's results store (an S3 client holds its connection pool, so one per process)."""
    global _store
    with _lock:
        if _store is None:
            _store = make_store(get_settings())
        return _store


def get_batcher() -> MicroBatcher:
    """This process's micro-batcher (one inference thread); batches of one when MICRO_BATCH is off."""
    global _batcher
    with _lock:
        if _batcher is None:
            settings = get_settings()
            wait_s = settings.batch_wait_ms / 1000 if settings.micro_batch else 0.0
            _batcher = MicroBatcher(wait_s, wait_alone=settings.batch_wait_always, name="micro-batcher")
        return _batcher


def batch_limit(kind: str) -> int:
    """Rows per batched forward pass for ``kind`` ("faces" or "classify"); 1 when batching is off."""
    settings = get_settings()
    if not settings.micro_batch:
        return 1
    return settings.batch_max_faces if kind == "faces" else settings.batch_max_classify


def consumed_queues(worker: Any) -> tuple[str, ...]:
    """The queues a Celery worker consumes, once ``-Q`` has been applied."""
    try:
        return tuple(sorted(worker.app.amqp.queues.consume_from))
    except AttributeError:  # not a worker (a test, or another sender)
        return ()


@worker_process_init.connect
def _load_in_child(**_: Any) -> None:
    global _parent_pid
    _parent_pid = os.getppid()
    get_registry()


@worker_init.connect
def _load_without_fork(sender: Any = None, **_: Any) -> None:
    global _consumed_queues
    _consumed_queues = consumed_queues(sender)
    # Pools that do not fork (solo, threads) never send worker_process_init.
    pool = getattr(sender, "pool_cls", None)
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    if name and not any(kind in name for kind in ("prefork", "processes")):
        get_registry()


@worker_process_shutdown.connect
@worker_shutdown.connect  # the solo pool's only process
def _deregister(**_: Any) -> None:
    if _heartbeat is not None:
        _heartbeat.stop()
    if _batcher is not None:
        _batcher.close()
