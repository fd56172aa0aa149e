"""The API's Redis pool under a crowd: requests wait for a connection; a pool that stays full is "busy", not "down"."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.config import Settings
from api.main import create_app

pytestmark = pytest.mark.integration

UNKNOWN_JOB = "/jobs/" + "0" * 32


def _settings(redis_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        _env_file=None, redis_url=redis_url, results_dir=tmp_path, checkpoint_dir=tmp_path, **overrides
    )  # fmt: skip


def test_more_concurrent_requests_than_connections_all_get_their_answer(empty_redis_db: str, tmp_path: Path) -> None:
    # 4 connections (2 held by the subscriptions) for 96 requests at once: a pool that refused past its size
    # answered most of these 503 "Redis is unreachable".
    settings = _settings(empty_redis_db, tmp_path, redis_max_connections=4, redis_pool_wait_s=10)
    with TestClient(create_app(settings)) as api, ThreadPoolExecutor(32) as threads:
        codes = list(threads.map(lambda _: api.get(UNKNOWN_JOB).status_code, range(96)))
    assert codes == [404] * 96


def test_a_pool_that_stays_full_answers_busy_with_retry_after_and_recovers(empty_redis_db: str, tmp_path: Path) -> None:
    settings = _settings(empty_redis_db, tmp_path, redis_max_connections=4, redis_pool_wait_s=0.3)
    with TestClient(create_app(settings)) as api:
        api.get(UNKNOWN_JOB)  # the subscriptions are up
        pool = api.app.state.redis.connection_pool

        async def take_all() -> list[Any]:
            taken = []
            while pool.can_get_connection():
                taken.append(await pool.get_connection())
            return taken

        async def give_back(taken: list[Any]) -> None:
            for connection in taken:
                await pool.release(connection)

        taken = api.portal.call(take_all)
        try:
            busy = api.get(UNKNOWN_JOB)
        finally:
            api.portal.call(give_back, taken)
        assert busy.status_code == 503, busy.text
        assert busy.headers["retry-after"] == "1"
        assert "busy" in busy.json()["detail"] and "REDIS_MAX_CONNECTIONS" in busy.json()["detail"]
        assert "unreachable" not in busy.json()["detail"]
        assert api.get(UNKNOWN_JOB).status_code == 404
