"""Session fixtures: one redis-server on a free port and the service stacks on it (see ``stack.py``).

- ``service``: the workers (one per queue) on freshly initialised small networks in
  a tmp checkpoint folder: every route, job and error path, without trained weights;
- ``trained_service``: the workers on the shipped ``checkpoints/`` (or
  ``$SERVICE_CHECKPOINT_DIR``) for the content checks; skipped when they are absent.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

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

# Databases 0-15 are named by hand in older modules; ``redis_db`` hands out the rest.
_FREE_DBS = itertools.count(16)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis"), databases=256) as server:
        yield server


@pytest.fixture(scope="module")
def redis_db(redis_server: RedisServer) -> str:
    """The URL of a Redis database no other module of this session uses."""
    return f"redis://127.0.0.1:{redis_server.port}/{next(_FREE_DBS)}"


@pytest.fixture(scope="session")
def plumbing_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_plumbing_checkpoints(tmp_path_factory.mktemp("checkpoints"))


@pytest.fixture(scope="session")
def service(
    redis_server: RedisServer, plumbing_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    yield from start_stack(
        redis_server,
        0,
        plumbing_checkpoints,
        tmp_path_factory.mktemp("plumbing"),
        worker_env=PLUMBING_WORKER_ENV,
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
    redis_server: RedisServer, trained_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    yield from start_stack(
        redis_server, 1, trained_checkpoints, tmp_path_factory.mktemp("trained"), default_wait_s=120.0, max_wait_s=120.0
    )
