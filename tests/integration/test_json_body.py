"""Parameters as a JSON body, a query string or both, against the real stack: the same parameters give
the same job (params, images), and the rules across parameters hold across both. (A body the service cannot
read in full is refused before anything is queued: tests/unit/test_api_body_params.py.)"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np
import pytest

from .helpers import fetch_png, pixels
from .stack import Stack

pytestmark = pytest.mark.integration

FORMS: dict[str, dict[str, Any]] = {
    "faces": {"n": 3, "model": "A", "seed": 11},
    "digits": {"label": 3, "n": 2, "seed": 5, "sampler": "ddim", "steps": 4, "frames": True},
}


def _query(params: dict[str, Any]) -> dict[str, str]:
    return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()}


def _three_ways(params: dict[str, Any]) -> list[dict[str, Any]]:
    names = sorted(params)
    half = {k: params[k] for k in names[: len(names) // 2]}
    rest = {k: params[k] for k in names[len(names) // 2 :]}
    return [
        {"params": _query(params)},
        {"json": params},
        {"params": _query(half), "json": rest},
        {"params": _query(params), "json": params},  # the same value in both is fine
    ]


@pytest.mark.parametrize("kind", sorted(FORMS))
def test_query_body_and_mix_give_the_same_job(service: Stack, kind: str) -> None:
    jobs = []
    for request in _three_ways(FORMS[kind]):
        response = service.client.post(f"/generate/{kind}", **request)
        assert response.status_code == 200, (request, response.text)
        jobs.append(response.json())
    assert all(job["params"] == jobs[0]["params"] for job in jobs), [job["params"] for job in jobs]
    assert jobs[0]["params"]["seed"] == FORMS[kind]["seed"]
    grids = [pixels(fetch_png(service.client, job["result"]["grid"]["url"])) for job in jobs]
    assert all(np.array_equal(grid, grids[0]) for grid in grids[1:])
    if kind == "digits":
        assert len(jobs[1]["result"]["frames"]) == 6  # frames=true, sent as a JSON boolean


def test_an_idempotency_key_sees_a_json_body_and_its_query_string_as_one_request(service: Stack) -> None:
    key = str(uuid.uuid4())
    first = service.client.post("/generate/faces", json={"n": 2, "seed": 3}, headers={"Idempotency-Key": key})
    again = service.client.post("/generate/faces", params={"n": 2, "seed": 3}, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 200
    assert first.json()["id"] == again.json()["id"]


def test_the_digits_rules_apply_across_query_and_body(service: Stack) -> None:
    response = service.client.post("/generate/digits", params={"guidance_from": 300}, json={"guidance_to": 100})
    assert response.status_code == 422 and "guidance_from=300 is above guidance_to=100" in response.json()["detail"]
    response = service.client.post("/generate/digits", params={"guidance_from": 300}, json={"n": 1, "label": 1})
    assert response.status_code == 422 and "give both" in response.json()["detail"]
    response = service.client.post("/generate/digits", json={"n": 20})  # 10 labels x 20 > MAX_DIGIT_IMAGES
    assert response.status_code == 422 and "MAX_DIGIT_IMAGES" in response.json()["detail"]


def test_classify_refuses_a_parameter_sent_as_a_form_field(service: Stack) -> None:
    upload = {"files": ("a.png", b"x", "image/png")}
    response = service.client.post("/classify/target-domain", data={"target": "svhn"}, files=upload)
    assert response.status_code == 422 and "query parameter 'target': is required" in response.json()["detail"]
    response = service.client.post(
        "/classify/target-domain", params={"target": "svhn"}, data={"target": "usps"}, files=upload
    )
    assert response.status_code == 422, response.text
    assert "form field 'target': is not read from the form: send it in the query string" in response.json()["detail"]
