"""Queues end to end: digits go to the diffusion queue, faces and classification to the small one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import redis
from fastapi.testclient import TestClient

from api.config import Settings
from api.main import create_app

from .helpers import files_field, png_bytes
from .stack import Stack

pytestmark = pytest.mark.integration

DIGIT = [("7.png", png_bytes(np.random.default_rng(7).integers(0, 256, (28, 28), dtype=np.uint8)), "image/png")]


def _post_all(client: TestClient | object, wait: float) -> dict[str, dict]:
    """One job of each kind; returns kind -> the job as the POST answered."""
    post = client.post  # type: ignore[attr-defined]
    return {
        "faces": post("/generate/faces", params={"n": 1, "seed": 1, "wait": wait}).json(),
        "digits": post("/generate/digits", params={"label": 3, "n": 1, "seed": 1, "wait": wait}).json(),
        "classify": post(
            "/classify/target-domain", params={"target": "svhn", "wait": wait}, files=files_field(DIGIT)
        ).json(),
    }


def _queued(client: redis.Redis, queue: str) -> list[str]:
    """Ids of the task messages waiting in ``queue`` (kombu keeps a Redis list per queue)."""
    return [json.loads(raw)["headers"]["id"] for raw in client.lrange(queue, 0, -1)]


def test_each_kind_of_job_is_published_to_its_queue(empty_redis_db: str, tmp_path: Path) -> None:
    """No worker at all: the messages stay where the API put them."""
    settings = Settings(_env_file=None, redis_url=empty_redis_db, results_dir=tmp_path, checkpoint_dir=tmp_path)
    client = redis.Redis.from_url(empty_redis_db)
    try:
        with TestClient(create_app(settings)) as api:
            jobs = _post_all(api, wait=0)
        assert all(job["status"] == "queued" for job in jobs.values()), jobs
        assert _queued(client, "diffusion") == [jobs["digits"]["id"]]
        assert sorted(_queued(client, "small")) == sorted([jobs["faces"]["id"], jobs["classify"]["id"]])
        assert client.llen("celery") == 0  # nothing left on Celery's default queue
    finally:
        client.close()


def test_a_worker_on_the_small_queue_runs_only_small_jobs(small_only: Stack) -> None:
    jobs = _post_all(small_only.client, wait=5)
    assert jobs["faces"]["status"] == jobs["classify"]["status"] == "succeeded"
    # No diffusion worker: the digits job waits in its queue (not a 503; its worker may be starting).
    assert jobs["digits"]["status"] == "queued"
    assert _queued(small_only.redis(), "diffusion") == [jobs["digits"]["id"]]
    workers = small_only.client.get("/models").json()["workers"]
    assert [w["queues"] for w in workers] == [["small"]]
    roles = {m["role"] for m in workers[0]["models"]}
    assert roles == {"faces:A", "faces:B", "classify:svhn", "classify:usps"} and workers[0]["missing"] == []
    ready = small_only.client.get("/readyz")
    assert ready.status_code == 503
    models = next(check for check in ready.json()["checks"] if check["name"] == "models")
    assert not models["ok"] and "digits" in models["detail"]


def test_each_job_ran_on_the_worker_of_its_queue(service: Stack) -> None:
    jobs = _post_all(service.client, wait=60)
    assert all(job["status"] == "succeeded" for job in jobs.values()), jobs
    logs = {queue: path.read_text(errors="replace") for queue, path in service.logs.items()}
    for kind, queue in (("faces", "small"), ("classify", "small"), ("digits", "diffusion")):
        other = "diffusion" if queue == "small" else "small"
        assert f"[{jobs[kind]['id']}] received" in logs[queue], kind
        assert jobs[kind]["id"] not in logs[other], kind


def test_small_jobs_do_not_wait_behind_diffusion_jobs(service: Stack) -> None:
    """Three slow digit jobs queue on the diffusion worker; a face job published after them finishes first."""
    slow = {"label": 5, "n": 4, "sampler": "ddpm", "wait": 0}
    digits = [service.client.post("/generate/digits", params={**slow, "seed": seed}).json() for seed in (1, 2, 3)]
    faces = service.client.post("/generate/faces", params={"n": 1, "wait": 30}).json()
    assert faces["status"] == "succeeded"
    done = [service.client.get(job["url"], params={"wait": 90}).json() for job in digits]
    assert all(job["status"] == "succeeded" for job in done)
    meta = service.redis().get(f"celery-task-meta-{digits[-1]['id']}")
    face_meta = service.redis().get(f"celery-task-meta-{faces['id']}")
    assert json.loads(face_meta)["date_done"] < json.loads(meta)["date_done"]
