"""A job whose worker process dies runs again and completes; one that keeps killing it stops, saying why."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from api.service.job_service import new_job_id
from contract.broker import api_celery
from contract.jobs import JobKind, JobRecord
from contract.keys import deliveries_key, job_key
from contract.queues import QUEUE_DIFFUSION, TASK_FACES

from .helpers import poll
from .stack import Stack

pytestmark = pytest.mark.integration


def _pool_children(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in children.read_text().split()] if children.is_file() else []


def test_a_job_whose_pool_process_is_killed_mid_diffusion_runs_again_and_completes(service: Stack) -> None:
    worker = service.workers[QUEUE_DIFFUSION]
    response = service.client.post("/generate/digits", params={"label": 2, "n": 10, "sampler": "ddpm", "seed": 3, "wait": 0})
    assert response.status_code == 202, response.text
    url = response.json()["url"]
    deadline = time.monotonic() + 60
    while (job := service.client.get(url).json())["progress"] is None and job["status"] != "succeeded":
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    assert job["status"] == "running", "the job finished before it could be interrupted: make it longer"
    children = _pool_children(worker.pid)
    assert len(children) == 1, children  # prefork, one job at a time
    os.kill(children[0], signal.SIGKILL)

    done, _ = poll(service.client, url, timeout=180)
    assert done["status"] == "succeeded", done
    assert done["result"]["seed"] == 3 and len(done["result"]["images"]) == 10
    assert int(service.redis().get(deliveries_key(done["id"]))) == 2  # killed once, run again once
    assert _pool_children(worker.pid) != children, "the pool replaced its dead process"


def test_a_job_that_keeps_killing_its_worker_is_failed_with_the_reason(service: Stack) -> None:
    job_id = new_job_id()
    record = JobRecord(job_id, JobKind.faces, TASK_FACES, {"n": 1}, datetime.now(UTC))
    client = service.redis()
    client.set(job_key(job_id), record.to_json(), ex=600)
    client.set(deliveries_key(job_id), 3, ex=600)  # as if its worker had died on three runs already
    celery = api_celery(service.redis_url, 600)
    try:
        celery.send_task(TASK_FACES, kwargs={"model": "B", "n": 1, "seed": 1}, task_id=job_id, queue="small")
    finally:
        celery.close()
    job = service.client.get(f"/jobs/{job_id}", params={"wait": 60}).json()
    assert job["status"] == "failed", job
    assert "died on each of this job's 3 runs" in job["error"] and "MAX_DELIVERIES" in job["error"]
