"""Rules across the digits parameters that need the served model: ``sampler=ddpm`` runs all its timesteps."""

from __future__ import annotations

import pytest

from .stack import PLUMBING_T, Stack

pytestmark = pytest.mark.integration


def test_ddpm_takes_steps_equal_to_the_models_timesteps(service: Stack) -> None:
    response = service.client.post(
        "/generate/digits", params={"label": 2, "n": 1, "sampler": "ddpm", "steps": PLUMBING_T, "seed": 1}
    )
    assert response.status_code == 200, response.text
    assert (response.json()["result"]["sampler"], response.json()["result"]["steps"]) == ("ddpm", PLUMBING_T)


def test_ddpm_with_fewer_steps_is_refused_saying_what_to_send(service: Stack) -> None:
    response = service.client.post("/generate/digits", params={"label": 2, "n": 1, "sampler": "ddpm", "steps": 5})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert f"all {PLUMBING_T}" in detail and f"steps={PLUMBING_T}" in detail and "ddim" in detail
