"""A stopped worker gives its jobs back at once: SIGTERM mid-diffusion, a new worker, the jobs complete.

Without the soft shutdown the running job's message would sit in kombu's unacked
hash until the Redis visibility timeout (TASK_TIME_LIMIT + 300 s) ran out.
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from contract.keys import deliveries_key
from contract.queues import QUEUE_DIFFUSION, QUEUE_SMALL
from stack.requeue import reap_worker_group, requeue_unacked

from .helpers import poll
from .stack import PLUMBING_LIMITS, Stack, start_stack

pytestmark = pytest.mark.integration

GRACE_S = 1.0
# A job of 20 images x 40 ddpm steps runs for many seconds on one CPU thread: far past the grace.
LONG_JOB = {"label": 4, "n": 20, "sampler": "ddpm", "seed": 11, "wait": 0}


@pytest.fixture(scope="module")
def diffusion_only(
    redis_db: str, plumbing_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    # A stack of its own: its diffusion worker is killed, and runs with a short SHUTDOWN_GRACE_S.
    yield from start_stack(
        redis_db,
        plumbing_checkpoints,
        tmp_path_factory.mktemp("shutdown"),
        queues=(QUEUE_DIFFUSION,),
        worker_env={"SHUTDOWN_GRACE_S": str(GRACE_S)},
        webhooks=False,
        **PLUMBING_LIMITS,
    )


def _queued_ids(stack: Stack, queue: str = QUEUE_DIFFUSION) -> list[str]:
    return [json.loads(raw)["headers"]["id"] for raw in stack.redis().lrange(queue, 0, -1)]


def test_sigterm_mid_job_puts_it_back_on_its_queue_at_once_and_a_new_worker_completes_it(
    diffusion_only: Stack,
) -> None:
    stack = diffusion_only
    running = stack.client.post("/generate/digits", params=LONG_JOB)
    waiting = stack.client.post("/generate/digits", params={**LONG_JOB, "seed": 12})
    assert running.status_code == waiting.status_code == 202, (running.text, waiting.text)
    running_id, waiting_id = running.json()["id"], waiting.json()["id"]
    deadline = time.monotonic() + 60
    while (job := stack.client.get(f"/jobs/{running_id}").json())["progress"] is None:
        assert job["status"] != "succeeded", "the job finished before it could be interrupted: make it longer"
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert _queued_ids(stack) == [waiting_id]  # one job at a time: the other one waits in Redis

    worker = stack.workers[QUEUE_DIFFUSION]
    stopped_at = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    worker.wait(stack.processes.shutdown_wait_s())
    took = time.monotonic() - stopped_at
    assert took < stack.processes.shutdown_wait_s(), took

    # Both are in the queue now, the interrupted one first in line (Redis pops from the right),
    # and none is left unacknowledged to wait for the visibility timeout.
    client = stack.redis()
    assert _queued_ids(stack) == [waiting_id, running_id]
    assert client.hlen("unacked") == 0
    assert int(client.get(deliveries_key(running_id))) == 0, "a graceful stop is not counted as a lost run"
    assert stack.client.get(f"/jobs/{running_id}").json()["status"] == "queued"

    restarted_at = time.monotonic()
    stack.processes.start_worker(stack.processes.specs[QUEUE_DIFFUSION])
    for job_id in (running_id, waiting_id):
        done, _ = poll(stack.client, f"/jobs/{job_id}", timeout=240)
        assert done["status"] == "succeeded", done
        assert len(done["result"]["images"]) == LONG_JOB["n"]
    assert int(client.get(deliveries_key(running_id))) == 1
    # Seconds of start-up and two jobs on a shared CPU, not the visibility timeout (TASK_TIME_LIMIT + 300 s).
    assert time.monotonic() - restarted_at < 240


def test_kill_9_mid_job_then_the_launchers_requeue_and_a_new_worker_complete_every_accepted_job(
    diffusion_only: Stack,
) -> None:
    """What `make run` does when a worker dies outright: reap its pool, requeue its unacked jobs, restart it."""
    stack = diffusion_only
    running = stack.client.post("/generate/digits", params={**LONG_JOB, "seed": 21})
    waiting = stack.client.post("/generate/digits", params={**LONG_JOB, "seed": 22})
    assert running.status_code == waiting.status_code == 202, (running.text, waiting.text)
    running_id, waiting_id = running.json()["id"], waiting.json()["id"]
    deadline = time.monotonic() + 60
    while (job := stack.client.get(f"/jobs/{running_id}").json())["progress"] is None:
        assert job["status"] != "succeeded", "the job finished before it could be interrupted: make it longer"
        assert time.monotonic() < deadline, job
        time.sleep(0.05)

    worker = stack.workers[QUEUE_DIFFUSION]
    worker.send_signal(signal.SIGKILL)
    worker.wait(10)
    reap_worker_group(worker.pid)
    client = stack.redis()
    # Killed outright, the worker gave nothing back: the running job would wait for the visibility timeout.
    assert client.hlen("unacked") == 1 and _queued_ids(stack) == [waiting_id]
    assert requeue_unacked(stack.redis_url, [QUEUE_DIFFUSION]) == [running_id]
    assert client.hlen("unacked") == 0 and _queued_ids(stack) == [waiting_id, running_id]

    restarted_at = time.monotonic()
    stack.processes.start_worker(stack.processes.specs[QUEUE_DIFFUSION])
    for job_id in (running_id, waiting_id):
        done, _ = poll(stack.client, f"/jobs/{job_id}", timeout=240)
        assert done["status"] == "succeeded", done
        assert len(done["result"]["images"]) == LONG_JOB["n"]
    assert int(client.get(deliveries_key(running_id))) == 2, "the run that died counts towards MAX_DELIVERIES"
    assert time.monotonic() - restarted_at < 240


def test_sigterm_to_the_small_worker_under_load_loses_and_strands_nothing(small_only: Stack) -> None:
    """Warm shutdown of the threads pool: jobs it started finish, the rest stay (or go back) on the queue."""
    stack = small_only
    ids = []
    for seed in range(120):
        response = stack.client.post("/generate/faces", params={"n": 64, "model": "B", "seed": seed, "wait": 0})
        assert response.status_code in (200, 202), response.text
        ids.append(response.json()["id"])
    worker = stack.workers[QUEUE_SMALL]
    try:
        worker.send_signal(signal.SIGTERM)
        worker.wait(stack.processes.shutdown_wait_s())
        client = stack.redis()
        assert client.hlen("unacked") == 0  # nothing waits for the visibility timeout
        finished = {job_id for job_id in ids if stack.client.get(f"/jobs/{job_id}").json()["status"] == "succeeded"}
        assert finished | set(_queued_ids(stack, QUEUE_SMALL)) == set(ids)  # each job done or waiting
    finally:
        # The stack is the session's (test_batching, test_queues use it too): it gets its small worker back.
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
        stack.processes.start_worker(stack.processes.specs[QUEUE_SMALL])
    for job_id in ids:
        done, _ = poll(stack.client, f"/jobs/{job_id}", timeout=120)
        assert done["status"] == "succeeded", done
