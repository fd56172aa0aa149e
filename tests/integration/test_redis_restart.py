"""A Redis restart mid-job: the running digit job rides it out and succeeds once Redis is back."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.queues import QUEUE_DIFFUSION
from stack.processes import RedisServer

from .helpers import poll
from .stack import PLUMBING_LIMITS, Stack, start_stack

pytestmark = pytest.mark.integration

# Long enough on one CPU thread that Redis is killed and back while it runs.
LONG_JOB = {"label": 7, "n": 20, "sampler": "ddpm", "seed": 5, "wait": 0}
DOWN_S = 2.0


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    # A persistent server of this module's own, as `make run` starts: it is killed mid-job, then restarted.
    server = RedisServer(tmp_path_factory.mktemp("restarted-redis"), persist=True).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def stack_on_own_redis(
    own_redis: RedisServer, plumbing_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    yield from start_stack(
        own_redis.url, plumbing_checkpoints, tmp_path_factory.mktemp("restart"),
        queues=(QUEUE_DIFFUSION,), webhooks=False, **PLUMBING_LIMITS,
    )  # fmt: skip


def test_kill_9_of_redis_mid_digit_job_then_the_job_succeeds_once_redis_is_back(
    own_redis: RedisServer, stack_on_own_redis: Stack
) -> None:
    stack = stack_on_own_redis
    created = stack.client.post("/generate/digits", params=LONG_JOB)
    assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    deadline = time.monotonic() + 60
    while (job := stack.client.get(f"/jobs/{job_id}").json())["progress"] is None:
        assert job["status"] != "succeeded", "the job finished before Redis could be killed: make it longer"
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    time.sleep(1.1)  # appendfsync everysec: the job's message and record are on disk

    assert own_redis.process is not None
    own_redis.process.send_signal(signal.SIGKILL)
    own_redis.process.wait(10)
    time.sleep(DOWN_S)
    own_redis.start()  # same port, same data: what the launcher's supervisor does

    done, _ = poll(stack.client, f"/jobs/{job_id}", timeout=240)
    assert done["status"] == "succeeded", done
    assert len(done["result"]["images"]) == LONG_JOB["n"]
    for image in done["result"]["images"][:2]:
        assert stack.client.get(image["url"]).status_code == 200
