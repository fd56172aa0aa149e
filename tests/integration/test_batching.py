"""Micro-batching end to end: concurrent requests share forward passes and get what they would alone.

The concurrent requests go to the ``small_only`` stack, whose small-model worker always
waits 300 ms for company (``BATCH_WAIT_ALWAYS``), so a burst shares forward passes
whatever the timing; the same requests one at a time go to the ``service`` stack
(default settings, same checkpoints), where each runs alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from .helpers import fetch_png, files_field, pixels, png_bytes
from .stack import Stack

pytestmark = pytest.mark.integration

CLIENTS = 8


def _batch(stack: Stack, job_id: str) -> dict[str, int]:
    """What the worker stored: which forward pass the job shared (not part of the public result)."""
    return json.loads(stack.redis().get(f"celery-task-meta-{job_id}"))["result"]["batch"]


def _burst(call: Callable[[int], Any], count: int) -> list[Any]:
    """``count`` requests at once, each from its own thread and connection, as separate clients would send them."""
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(call, range(count)))


def _faces(stack: Stack, seed: int) -> tuple[str, np.ndarray]:
    with httpx.Client(base_url=stack.base_url, timeout=120) as client:
        job = client.post("/generate/faces", params={"n": 3, "seed": seed, "wait": 60}).json()
        assert job["status"] == "succeeded", job
        return job["id"], np.stack([pixels(fetch_png(client, link["url"])) for link in job["result"]["images"]])


def test_concurrent_faces_are_the_faces_of_each_seed_alone(service: Stack, small_only: Stack) -> None:
    seeds = [1000 + i for i in range(CLIENTS)]
    alone = [_faces(service, seed) for seed in seeds]
    together = _burst(lambda i: _faces(small_only, seeds[i]), CLIENTS)
    assert all(_batch(service, job_id)["requests"] == 1 for job_id, _ in alone)
    assert max(_batch(small_only, job_id)["requests"] for job_id, _ in together) > 1, "no forward pass was shared"
    for seed, (_, one), (_, many) in zip(seeds, alone, together, strict=True):
        assert np.abs(one - many).max() <= 1, f"seed {seed}"  # within 1/255 per pixel
    assert np.abs(alone[0][1] - alone[1][1]).mean() > 5  # and the seeds do differ


def _classify(stack: Stack, uploads: list) -> tuple[str, list[dict]]:
    with httpx.Client(base_url=stack.base_url, timeout=120) as client:
        job = client.post("/classify/target-domain", params={"target": "usps", "wait": 60}, files=uploads).json()
        assert job["status"] == "succeeded", job
        return job["id"], job["result"]["predictions"]


def test_concurrent_classification_is_each_request_alone(service: Stack, small_only: Stack) -> None:
    rng = np.random.default_rng(1)
    requests = [
        files_field(
            [
                (f"{i}_{k}.png", png_bytes(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)), "image/png")
                for k in range(1 + i % 3)
            ]
        )
        for i in range(CLIENTS)
    ]
    alone = [_classify(service, uploads) for uploads in requests]
    together = _burst(lambda i: _classify(small_only, requests[i]), CLIENTS)
    assert max(_batch(small_only, job_id)["requests"] for job_id, _ in together) > 1, "no forward pass was shared"
    for (_, one), (_, many) in zip(alone, together, strict=True):
        assert [p["image_name"] for p in one] == [p["image_name"] for p in many]
        assert [p["label"] for p in one] == [p["label"] for p in many]
        for p, q in zip(one, many, strict=True):
            assert np.abs(np.subtract(p["probabilities"], q["probabilities"])).max() < 1e-5
