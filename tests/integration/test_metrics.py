"""/metrics against the real stack: queue lengths, live workers, and the workers' task counters."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from api.config import Settings
from api.main import create_app
from api.service.job_service import new_job_id
from contract.broker import api_celery
from contract.jobs import JobKind, JobRecord
from contract.keys import deliveries_key, job_key
from contract.queues import QUEUE_SMALL, QUEUES, TASK_FACES

from .stack import OPEN_ACCESS, Stack

pytestmark = pytest.mark.integration

FACES = {"task": "generate_faces", "model": "dcgan-B"}


def _samples(client: httpx.Client | TestClient) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def _value(samples: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_a_faces_job_shows_in_the_task_counters_with_queues_and_workers(service: Stack) -> None:
    before = _samples(service.client)
    response = service.client.post("/generate/faces", params={"n": 2, "model": "B", "seed": 5, "wait": 60})
    assert response.status_code == 200, response.text
    after = _samples(service.client)

    assert _value(after, "genserve_redis_up") == 1
    for queue in QUEUES:
        assert ("genserve_queue_length", frozenset({"queue": queue}.items())) in after
        assert _value(after, "genserve_workers_up", queue=queue) >= 1
    succeeded = {**FACES, "state": "succeeded"}
    assert _value(after, "genserve_tasks_total", **succeeded) == _value(before, "genserve_tasks_total", **succeeded) + 1
    count = _value(after, "genserve_task_duration_seconds_count", **FACES)
    assert count == _value(before, "genserve_task_duration_seconds_count", **FACES) + 1
    # The histogram is cumulative: +Inf holds every run, and some bucket of seconds holds this one.
    assert _value(after, "genserve_task_duration_seconds_bucket", **FACES, le="+Inf") == count
    assert _value(after, "genserve_task_duration_seconds_bucket", **FACES, le="10.0") == count
    assert _value(after, "genserve_task_duration_seconds_sum", **FACES) > 0
    assert _value(after, "genserve_model_warm_workers", model="dcgan-B", role="faces:B") >= 1


def test_a_failing_job_counts_as_a_failure(service: Stack) -> None:
    failed = {**FACES, "state": "failed"}
    before = _value(_samples(service.client), "genserve_tasks_total", **failed)
    job_id = new_job_id()
    client = service.redis()
    record = JobRecord(job_id, JobKind.faces, TASK_FACES, {"n": 1}, datetime.now(UTC))
    client.set(job_key(job_id), record.to_json(), ex=600)
    client.set(deliveries_key(job_id), 3, ex=600)  # as if its worker had died on three runs: it fails at once
    celery = api_celery(service.redis_url, 600)
    try:
        celery.send_task(TASK_FACES, kwargs={"model": "B", "n": 1, "seed": 1}, task_id=job_id, queue=QUEUE_SMALL)
    finally:
        celery.close()
    job = service.client.get(f"/jobs/{job_id}", params={"wait": 60}).json()
    assert job["status"] == "failed", job
    assert _value(_samples(service.client), "genserve_tasks_total", **failed) == before + 1


def test_queue_lengths_and_no_workers_when_nothing_consumes(empty_redis_db: str, tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, redis_url=empty_redis_db, results_dir=tmp_path, checkpoint_dir=tmp_path, **OPEN_ACCESS
    )
    with TestClient(create_app(settings)) as api:
        for seed in (1, 2):
            assert api.post("/generate/faces", params={"n": 1, "seed": seed, "wait": 0}).status_code == 202
        samples = _samples(api)
    assert _value(samples, "genserve_queue_length", queue=QUEUE_SMALL) == 2
    assert _value(samples, "genserve_queue_length", queue="diffusion") == 0
    assert _value(samples, "genserve_workers_up", queue=QUEUE_SMALL) == 0
