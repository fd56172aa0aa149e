"""Backpressure: past its queue's bound a POST gets 429 with Retry-After, and nothing of it is created."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from api.config import Settings
from api.main import create_app

pytestmark = pytest.mark.integration


def test_a_full_queue_refuses_before_creating_anything(empty_redis_db: str, tmp_path: Path) -> None:
    """No worker consumes: jobs stay queued, so the bounds are reached for sure."""
    settings = Settings(
        _env_file=None, redis_url=empty_redis_db, results_dir=tmp_path, checkpoint_dir=tmp_path,
        max_queued_diffusion=2, max_queued_small=1,
    )  # fmt: skip
    client = redis.Redis.from_url(empty_redis_db)
    try:
        with TestClient(create_app(settings)) as api:
            digits = [api.post("/generate/digits", params={"label": 1, "n": 1, "wait": 0}) for _ in range(3)]
            faces = [api.post("/generate/faces", params={"n": 1, "wait": 0}) for _ in range(2)]
        assert [r.status_code for r in digits] == [202, 202, 429]
        assert [r.status_code for r in faces] == [202, 429]
        refused = digits[2]
        assert refused.headers["retry-after"] == "10" and faces[1].headers["retry-after"] == "1"
        assert "MAX_QUEUED_DIFFUSION=2" in refused.json()["detail"] and "nothing was created" in refused.json()["detail"]
        assert client.llen("diffusion") == 2 and client.llen("small") == 1
        assert len(client.keys("genserve:job:*")) == 3  # the refused requests left no job behind
    finally:
        client.close()
