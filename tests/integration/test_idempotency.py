"""``Idempotency-Key`` against the real stack: a retried POST gets the first request's job, never a second."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from api.service.idempotency import Idempotency
from contract.keys import JOB_KEY_PREFIX

from .helpers import files_field, png_bytes
from .stack import Stack

pytestmark = pytest.mark.integration


def _jobs_in_redis(service: Stack) -> int:
    client = service.redis()
    try:
        return sum(1 for _ in client.scan_iter(f"{JOB_KEY_PREFIX}*", count=1000))
    finally:
        client.close()


def _key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def test_a_retry_with_the_same_key_gets_the_same_job(service: Stack) -> None:
    key, before = _key(), _jobs_in_redis(service)
    first = service.client.post("/generate/faces", params={"n": 2, "wait": 0}, headers=key)
    again = service.client.post("/generate/faces", params={"n": 2, "wait": 30}, headers=key)
    assert first.status_code in (200, 202) and again.status_code == 200, again.text
    # `wait` is how long to wait, not part of the job: the retry waited for the first one's job.
    assert again.json()["id"] == first.json()["id"] and again.json()["status"] == "succeeded"
    # No seed was given: the one drawn for the first request is the job's, for the retry too.
    assert again.json()["params"]["seed"] == first.json()["params"]["seed"]
    assert _jobs_in_redis(service) == before + 1


def test_concurrent_requests_with_one_key_make_one_job(service: Stack) -> None:
    key, before = _key(), _jobs_in_redis(service)

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=service.base_url, timeout=60) as client:
            return client.post("/generate/faces", params={"n": 1, "seed": 3, "wait": 30}, headers=key)

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(post, range(8)))
    assert {r.status_code for r in responses} == {200}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    assert _jobs_in_redis(service) == before + 1


def test_the_same_key_with_other_parameters_is_409_and_creates_nothing(service: Stack) -> None:
    key = _key()
    first = service.client.post("/generate/faces", params={"n": 2, "seed": 1}, headers=key)
    assert first.status_code == 200
    before = _jobs_in_redis(service)
    other = service.client.post("/generate/faces", params={"n": 3, "seed": 1}, headers=key)
    assert other.status_code == 409
    detail = other.json()["detail"]
    assert "Idempotency-Key" in detail and first.json()["id"] in detail and "new key" in detail
    assert _jobs_in_redis(service) == before


def test_keys_are_per_route(service: Stack) -> None:
    key = _key()
    faces = service.client.post("/generate/faces", params={"n": 1, "seed": 2}, headers=key)
    digits = service.client.post("/generate/digits", params={"label": 1, "n": 1, "steps": 2, "seed": 2}, headers=key)
    assert faces.status_code == digits.status_code == 200, digits.text
    assert faces.json()["id"] != digits.json()["id"] and digits.json()["kind"] == "digits"
    again = service.client.post(
        "/generate/digits", params={"label": 1, "n": 1, "steps": 2, "seed": 2, "wait": 5}, headers=key
    )
    assert again.json()["id"] == digits.json()["id"]


def test_classify_retries_match_on_the_images(service: Stack) -> None:
    key = _key()
    gray, dark = (png_bytes(np.full((16, 16), value, dtype=np.uint8)) for value in (200, 20))

    def classify(image: bytes) -> httpx.Response:
        files = files_field([("a.png", image, "image/png")])
        return service.client.post("/classify/target-domain", params={"target": "usps"}, headers=key, files=files)

    first, again = classify(gray), classify(gray)
    assert first.status_code == again.status_code == 200, again.text
    assert again.json()["id"] == first.json()["id"]
    assert classify(dark).status_code == 409


def test_the_key_lives_in_redis_as_long_as_the_job(service: Stack) -> None:
    key = _key()
    job = service.client.post("/generate/faces", params={"n": 1, "seed": 4, "wait": 0}, headers=key).json()
    stored = Idempotency(key["Idempotency-Key"], "POST /generate/faces", fingerprint="").redis_key
    client = service.redis()
    try:
        key_ttl, job_ttl = client.ttl(stored), client.ttl(f"{JOB_KEY_PREFIX}{job['id']}")
    finally:
        client.close()
    assert job_ttl > 0 and abs(key_ttl - job_ttl) <= 1
