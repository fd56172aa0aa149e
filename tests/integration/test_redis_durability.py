"""The embedded redis-server that `make run` starts keeps accepted jobs across a crash."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import redis

from stack.processes import RedisServer

pytestmark = pytest.mark.integration


def test_a_queued_message_survives_kill_9_of_a_persistent_server(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", persist=True).start()
    client = redis.Redis.from_url(server.url)
    client.lpush("diffusion", b"a queued job")  # what a Celery queue is: a Redis list
    client.set("genserve:job:abc", b"{}")
    time.sleep(1.5)  # appendfsync everysec: at most the last second is at risk
    assert server.process is not None
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(10)

    again = RedisServer(tmp_path / "redis", port=server.port, persist=True).start()
    try:
        client = redis.Redis.from_url(again.url)
        assert client.lrange("diffusion", 0, -1) == [b"a queued job"]
        assert client.get("genserve:job:abc") == b"{}"
    finally:
        again.stop()


def test_without_persistence_nothing_is_written(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "redis") as server:
        redis.Redis.from_url(server.url).lpush("small", b"x")
    assert not list((tmp_path / "redis").glob("appendonly*"))
