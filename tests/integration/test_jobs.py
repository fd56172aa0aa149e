"""Jobs, their files and 404s; models, health, readiness and metrics."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from api.service.job_service import new_job_id
from contract.broker import api_celery
from contract.jobs import JobKind, JobRecord
from contract.keys import job_key
from contract.queues import TASK_DIGITS

from .helpers import poll
from .stack import Stack

pytestmark = pytest.mark.integration

UNKNOWN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "path",
    [
        f"/jobs/{UNKNOWN}",
        "/jobs/not-a-job-id",
        f"/jobs/{UNKNOWN}/images/grid.png",
        f"/jobs/{UNKNOWN}/predictions.csv",
    ],
)
def test_unknown_job_is_404_with_a_hint(service: Stack, path: str) -> None:
    response = service.client.get(path)
    assert response.status_code == 404
    detail = response.json()["detail"]
    assert "never created" in detail and "POST" in detail


def test_a_job_that_is_not_done_in_time_is_202_then_pollable(service: Stack) -> None:
    response = service.client.post("/generate/faces", params={"n": 2, "wait": 0})
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == job["url"] == f"/jobs/{job['id']}"
    assert response.headers["retry-after"] == "1"
    long_polled = service.client.get(job["url"], params={"wait": 30}).json()
    assert long_polled["status"] == "succeeded"
    again, _ = poll(service.client, job["url"])
    assert again["result"] == long_polled["result"]
    assert again["created_at"] == job["created_at"] and again["params"] == job["params"]


def test_files_of_a_finished_job(service: Stack) -> None:
    job = service.client.post("/generate/faces", params={"n": 1}).json()
    base = job["url"]
    assert service.client.get(f"{base}/images/face_000.png").status_code == 200
    for name in ("face_999.png", "..%2F..%2Fetc%2Fpasswd", ".hidden.png", "grid.jpg"):
        response = service.client.get(f"{base}/images/{name}")
        assert response.status_code == 404, name
        assert "detail" in response.json()
    inputs = service.client.get(f"{base}/images/inputs")
    assert inputs.status_code == 404
    not_classify = service.client.get(f"{base}/predictions.csv")
    assert not_classify.status_code == 404 and "only classification jobs" in not_classify.json()["detail"]


def test_models_lists_what_the_workers_loaded_from_the_cards(service: Stack) -> None:
    workers = {tuple(w["queues"]): w for w in service.client.get("/models").json()["workers"]}
    # One worker per queue, each holding only the models of its queue's jobs.
    assert set(workers) == {("small",), ("diffusion",)}
    for worker in workers.values():
        assert worker["device"] == "cpu" and worker["missing"] == []
        assert "checkpoint_dir" not in worker  # a path of the workers' machine (tests/integration/test_access.py)
    assert [m["role"] for m in workers[("diffusion",)]["models"]] == ["digits"]
    assert {m["role"] for m in workers[("small",)]["models"]} == {"faces:A", "faces:B", "classify:svhn", "classify:usps"}
    models = {m["role"]: m for w in workers.values() for m in w["models"]}
    assert set(models) == {"faces:A", "faces:B", "digits", "classify:svhn", "classify:usps"}
    assert models["faces:A"]["name"] == "dcgan-A" and models["faces:A"]["kind"] == "dcgan-generator"
    assert models["faces:A"]["hardware"] == "none (untrained)"
    assert models["classify:usps"]["metrics"] == {"target_accuracy": None}
    assert models["digits"]["num_train_timesteps"] == 40 and models["digits"]["guidance_scale"] == 1.0
    for model in models.values():
        assert model["parameters"] > 0 and model["dtype"] == "float32" and model["stored_dtype"] == "float16"


def test_health_readiness_and_metrics(service: Stack) -> None:
    assert service.client.get("/healthz").json() == {"status": "ok"}
    ready = service.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["ready"] is True
    assert {c["name"]: c["ok"] for c in ready.json()["checks"]} == {"store": True, "redis": True, "worker": True, "models": True}
    metrics = service.client.get("/metrics")
    assert metrics.status_code == 200
    assert 'http_requests_total{handler="/healthz"' in metrics.text


def test_job_records_expire_with_the_results(service: Stack) -> None:
    job = service.client.post("/generate/faces", params={"n": 1}).json()
    client = service.redis()
    ttl = client.ttl(f"genserve:job:{job['id']}")
    assert 0 < ttl <= 86_400
    assert 0 < client.ttl(f"celery-task-meta-{job['id']}") <= 86_400
    # Only file names are in Redis, never pixels.
    assert len(client.get(f"celery-task-meta-{job['id']}")) < 2_000


def test_a_job_that_fails_in_the_worker_reports_why(service: Stack) -> None:
    """The API never sends such a task; a raw message stands in for any failure in the worker."""
    job_id = new_job_id()
    record = JobRecord(job_id, JobKind.digits, TASK_DIGITS, {"labels": [3]}, datetime.now(UTC))
    service.redis().set(job_key(job_id), record.to_json(), ex=600)
    celery = api_celery(service.redis_url, 600)
    try:
        celery.send_task(TASK_DIGITS, kwargs={"labels": [3], "n": 1, "sampler": "ddim", "steps": 999}, task_id=job_id)
    finally:
        celery.close()
    job = service.client.get(f"/jobs/{job_id}", params={"wait": 60}).json()
    assert job["status"] == "failed" and job["result"] is None
    assert "ValueError" in job["error"] and "steps" in job["error"]
    assert service.client.get(f"/jobs/{job_id}/images/grid.png").status_code == 404
    # The worker is still there and serving.
    assert service.client.post("/generate/faces", params={"n": 1}).json()["status"] == "succeeded"
