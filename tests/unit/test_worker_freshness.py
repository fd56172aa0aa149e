"""A worker counts (in /readyz, /models, the metrics) only while its heartbeat is fresh, and a prefork pool child
whose Celery parent is gone stops claiming to be one (contract.registration, workers.heartbeat).

The API runs in process (TestClient) on a real ``redis-server``; no worker process is started: registrations
are written as a worker's heartbeat writes them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from api.config import Settings
from api.main import create_app
from contract import registration
from contract.registration import ModelInfo, WorkerRegistration
from contract.roles import SERVED
from stack.processes import RedisServer
from workers.config import WorkerSettings
from workers.heartbeat import Heartbeat


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    url = f"redis://127.0.0.1:{redis_server.port}/5"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.flushdb()
    client.close()


def _worker(heartbeat_at: float, heartbeat_s: float | None = 10.0, name: str = "h:1") -> WorkerRegistration:
    models = [ModelInfo(role=role, name=checkpoint, dtype="float32", device="cpu", warm=True)
              for role, checkpoint in SERVED.items()]  # fmt: skip
    return WorkerRegistration(
        worker=name, device="cpu", queues=["small", "diffusion"], started_at=heartbeat_at - 60,
        heartbeat_at=heartbeat_at, heartbeat_s=heartbeat_s, models=models, missing=[],
    )  # fmt: skip


def _register(url: str, worker: WorkerRegistration, ttl_s: float) -> None:
    client = redis.Redis.from_url(url)
    try:
        pipe = client.pipeline()
        registration.register(pipe, worker, ttl_s, time.time())
        pipe.execute()
    finally:
        client.close()


def _registered(url: str) -> list[str]:
    client = redis.Redis.from_url(url)
    try:
        ids = client.zrangebyscore(*registration.live_query())
        return [w.worker for w in registration.decode(client.mget(registration.keys_of(ids)))] if ids else []
    finally:
        client.close()


def test_a_registration_whose_last_beat_is_older_than_two_intervals_is_not_a_worker() -> None:
    now = time.time()
    raw = [
        _worker(now - 5).model_dump_json(),  # half an interval ago
        _worker(now - 35, name="stale").model_dump_json(),  # three intervals ago: its key should have gone
        _worker(now - 35, heartbeat_s=None, name="older-version").model_dump_json(),  # judged by its TTL alone
    ]
    assert [w.worker for w in registration.decode(raw, now=now)] == ["older-version", "h:1"]
    assert registration.is_fresh(_worker(now - 20), now) and not registration.is_fresh(_worker(now - 22), now)


def test_readyz_is_503_while_the_only_registration_is_stale(redis_url: str, tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, redis_url=redis_url, results_dir=tmp_path, rate_limit="off", rate_limit_reads="off"
    )
    with TestClient(create_app(settings)) as api:
        _register(redis_url, _worker(time.time()), ttl_s=3600)
        fresh = api.get("/readyz")
        assert fresh.status_code == 200, fresh.text
        # The same worker, its last beat a minute old, under a key that has not expired yet.
        _register(redis_url, _worker(time.time() - 60), ttl_s=3600)
        stale = api.get("/readyz")
        models = api.get("/models").json()["workers"]
    assert stale.status_code == 503, stale.text
    (worker,) = [check for check in stale.json()["checks"] if check["name"] == "worker"]
    assert not worker["ok"] and "no worker is reporting" in worker["detail"]
    assert models == []


class _Registry:
    """What a heartbeat publishes of a registry: here, no model."""

    def describe(self) -> dict[str, Any]:
        return {"device": "cpu", "queues": ["diffusion"], "models": [], "missing": []}


def test_a_heartbeat_publishes_its_interval(redis_url: str) -> None:
    settings = WorkerSettings(_env_file=None, redis_url=redis_url, heartbeat_seconds=0.2)
    heartbeat = Heartbeat(_Registry(), settings)  # type: ignore[arg-type]
    try:
        heartbeat.beat()
        client = redis.Redis.from_url(redis_url)
        (raw,) = client.mget(registration.keys_of([heartbeat.worker_id]))
        client.close()
        assert WorkerRegistration.model_validate_json(raw).heartbeat_s == 0.2
    finally:
        heartbeat.stop()


def test_a_pool_child_whose_parent_is_gone_deregisters_and_stops_beating(redis_url: str) -> None:
    settings = WorkerSettings(_env_file=None, redis_url=redis_url, heartbeat_seconds=0.2)
    alive = Heartbeat(_Registry(), settings, parent_pid=os.getppid())  # type: ignore[arg-type]
    # Its "parent" is this process itself, which is never its own parent: as if the real one had died.
    orphan = Heartbeat(_Registry(), settings, parent_pid=os.getpid())  # type: ignore[arg-type]
    orphan.worker_id = "orphan:1"
    try:
        orphan.beat()  # registered while its parent lived
        alive.start()
        time.sleep(0.3)
        assert sorted(_registered(redis_url)) == sorted([alive.worker_id, "orphan:1"])
        orphan.start()
        orphan.join(timeout=5)
        assert not orphan.is_alive()
        time.sleep(0.5)  # two more beats of the other one
        assert _registered(redis_url) == [alive.worker_id]
    finally:
        alive.stop()
        orphan.stop()
