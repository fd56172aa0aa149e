"""Session fixtures: one redis-server on a free port and the service stacks on it (see ``stack.py``).

Each stack, and each test that needs a Redis of its own, gets a database of that server that nothing else of
the session uses: ``redis_dbs`` hands them out (``redis_db`` per module, ``empty_redis_db`` per test).

- ``service``: the workers (one per queue) on freshly initialised small networks in
  a tmp checkpoint folder: every route, job and error path, without trained weights;
  a module that needs other API settings (keys, CORS) puts ``stack.another_api`` in front of its workers;
- ``small_only``: a small-model worker alone (no diffusion worker), whose micro-batches always wait
  300 ms for company; ``test_queues``, ``test_batching`` and ``test_graceful_shutdown`` share it;
- ``trained_service``: the workers on the shipped ``checkpoints/`` (or
  ``$SERVICE_CHECKPOINT_DIR``) for the content checks; skipped when they are absent.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from contract.queues import QUEUE_SMALL
from stack.processes import RedisServer

from .stack import (
    PLUMBING_LIMITS,
    PLUMBING_WORKER_ENV,
    REPO,
    SERVED,
    Stack,
    start_stack,
    write_plumbing_checkpoints,
)

# The small_only stack's batches: a burst shares forward passes whatever its timing (test_batching.py).
SMALL_ONLY_WORKER_ENV = {"BATCH_WAIT_MS": "300", "BATCH_WAIT_ALWAYS": "true"}


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis"), databases=256) as server:
        yield server


@pytest.fixture(scope="session")
def redis_dbs(redis_server: RedisServer) -> Callable[[], str]:
    """Call it for the URL of a database of ``redis_server`` that nothing else of this session uses."""
    numbers = itertools.count(1)  # 0 is where a URL without a database lands: left alone

    def take() -> str:
        number = next(numbers)
        if number >= redis_server.databases:
            raise RuntimeError(f"the session's redis-server has only {redis_server.databases} databases")
        return f"redis://127.0.0.1:{redis_server.port}/{number}"

    return take


@pytest.fixture(scope="module")
def redis_db(redis_dbs: Callable[[], str]) -> str:
    """The URL of a Redis database no other module of this session uses."""
    return redis_dbs()


@pytest.fixture
def empty_redis_db(redis_dbs: Callable[[], str]) -> Iterator[str]:
    """The URL of a Redis database of this test alone (no worker, no other test's jobs), emptied after it."""
    url = redis_dbs()
    yield url
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture(scope="session")
def plumbing_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_plumbing_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def service(
    redis_dbs: Callable[[], str], plumbing_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    yield from start_stack(
        redis_dbs(),
        plumbing_checkpoints,
        tmp_path_factory.mktemp("plumbing"),
        worker_env=PLUMBING_WORKER_ENV,
        **PLUMBING_LIMITS,
    )


@pytest.fixture(scope="session")
def small_only(
    redis_dbs: Callable[[], str], plumbing_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    # A stack of its own: a worker set without the diffusion worker, and a small worker that tests may stop.
    yield from start_stack(
        redis_dbs(),
        plumbing_checkpoints,
        tmp_path_factory.mktemp("small-only"),
        queues=(QUEUE_SMALL,),
        worker_env=SMALL_ONLY_WORKER_ENV,
        webhooks=False,
        **PLUMBING_LIMITS,
    )


@pytest.fixture(scope="session")
def trained_checkpoints() -> Path:
    directory = Path(os.environ.get("SERVICE_CHECKPOINT_DIR") or REPO / "checkpoints")
    if not any((directory / f"{name}.json").is_file() for name in SERVED):
        pytest.skip(f"no trained checkpoints in {directory}: train them (see README) for the content checks")
    return directory


@pytest.fixture(scope="session")
def trained_service(
    redis_dbs: Callable[[], str], trained_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    # A stack of its own: other checkpoints, so other worker processes.
    yield from start_stack(
        redis_dbs(), trained_checkpoints, tmp_path_factory.mktemp("trained"), default_wait_s=120.0, max_wait_s=120.0
    )
