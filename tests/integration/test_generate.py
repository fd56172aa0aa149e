"""POST /generate/faces and /generate/digits, end to end, on untrained small networks."""

from __future__ import annotations

import numpy as np
import pytest

from .helpers import fetch_png, open_png, pixels, poll
from .stack import PLUMBING_T, Stack

pytestmark = pytest.mark.integration

FRAMES = [400, 320, 240, 160, 80, 0]


def _faces(service: Stack, **params: object) -> dict:
    response = service.client.post("/generate/faces", params=params)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "succeeded", job
    return job


def test_faces_are_64x64_pngs_and_a_grid(service: Stack) -> None:
    job = _faces(service, n=3, model="A", seed=1)
    result = job["result"]
    assert job["kind"] == "faces" and job["params"] == {"n": 3, "model": "A", "seed": 1}
    assert (result["model"], result["checkpoint"], result["n"], result["seed"]) == ("A", "dcgan-A", 3, 1)
    assert [link["name"] for link in result["images"]] == ["face_000.png", "face_001.png", "face_002.png"]
    for link in result["images"]:
        image = fetch_png(service.client, link["url"])
        assert (image.size, image.mode) == ((64, 64), "RGB")
    grid = fetch_png(service.client, result["grid"]["url"])
    assert grid.size == (3 * 66 + 2, 66 + 2)  # one row of three, 2-pixel padding


def test_same_seed_same_faces_other_seed_other_faces(service: Stack) -> None:
    def faces(seed: int) -> np.ndarray:
        links = _faces(service, n=4, seed=seed)["result"]["images"]
        return np.stack([pixels(fetch_png(service.client, link["url"])) for link in links])

    first, again, other = faces(11), faces(11), faces(12)
    assert np.abs(first - again).max() <= 1
    assert np.abs(first - other).mean() > 5
    assert np.abs(first[0] - first[1]).mean() > 5  # and faces within one job differ


def test_a_missing_seed_is_drawn_and_returned(service: Stack) -> None:
    first, second = _faces(service, n=1), _faces(service, n=1)
    assert isinstance(first["result"]["seed"], int) and first["result"]["seed"] == first["params"]["seed"]
    assert first["result"]["seed"] != second["result"]["seed"]
    replay = _faces(service, n=1, seed=first["result"]["seed"])
    a = fetch_png(service.client, first["result"]["images"][0]["url"])
    b = fetch_png(service.client, replay["result"]["images"][0]["url"])
    assert np.abs(pixels(a) - pixels(b)).max() <= 1


def test_accept_png_returns_the_grid_of_32_faces(service: Stack) -> None:
    response = service.client.post("/generate/faces", headers={"Accept": "image/png"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert response.headers["x-job-id"]
    assert open_png(response.content).size == (8 * 66 + 2, 4 * 66 + 2)  # 4 rows of 8


def test_digits_of_one_label_with_frames(service: Stack) -> None:
    response = service.client.post(
        "/generate/digits", params={"label": 3, "n": 2, "steps": 4, "frames": "true", "seed": 5}
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert (result["labels"], result["n"], result["sampler"], result["steps"], result["seed"]) == ([3], 2, "ddim", 4, 5)
    assert result["guidance"] == 1.0  # the card's value
    assert [link["name"] for link in result["images"]] == ["3_001.png", "3_002.png"]
    for link in result["images"]:
        assert fetch_png(service.client, link["url"]).size == (28, 28)
    assert [frame["t"] for frame in result["frames"]] == FRAMES
    assert [frame["name"] for frame in result["frames"]] == [f"frame_t{t}.png" for t in FRAMES]
    for frame in result["frames"]:
        assert fetch_png(service.client, frame["url"]).size == (28, 28)
    assert fetch_png(service.client, result["frames_strip"]["url"]).size == (6 * 30 + 2, 32)
    # The last frame is the finished first image.
    last = fetch_png(service.client, result["frames"][-1]["url"])
    first_image = fetch_png(service.client, result["images"][0]["url"])
    assert np.abs(pixels(last) - pixels(first_image)).max() <= 1


def test_digits_without_label_are_a_row_per_digit(service: Stack) -> None:
    response = service.client.post("/generate/digits", params={"n": 1, "steps": 2}, headers={"Accept": "image/png"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/png"
    assert open_png(response.content).size == (30 + 2, 10 * 30 + 2)  # ten rows of one
    job = service.client.get(f"/jobs/{response.headers['x-job-id']}").json()
    assert job["result"]["labels"] == list(range(10))
    assert [link["name"] for link in job["result"]["images"]] == [f"{d}_001.png" for d in range(10)]


def test_digits_same_seed_same_images(service: Stack) -> None:
    params = {"label": 7, "n": 1, "steps": 3, "seed": 99}
    first = service.client.post("/generate/digits", params=params).json()["result"]
    second = service.client.post("/generate/digits", params=params).json()["result"]
    a, b = (fetch_png(service.client, r["images"][0]["url"]) for r in (first, second))
    assert np.abs(pixels(a) - pixels(b)).max() <= 1


def test_ddpm_job_reports_its_step_while_running(service: Stack) -> None:
    # Four images keep the job running long enough to be seen running on a fast CPU.
    response = service.client.post("/generate/digits", params={"label": 5, "n": 4, "sampler": "ddpm", "wait": 0})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in ("queued", "running") and job["result"] is None
    assert response.headers["location"] == f"/jobs/{job['id']}" == job["url"]
    # Its images do not exist yet: 409, not 404.
    early = service.client.get(f"/jobs/{job['id']}/images/grid.png")
    assert early.status_code == 409 and "poll" in early.json()["detail"]
    done, progress = poll(service.client, job["url"])
    assert done["status"] == "succeeded", done
    assert progress, "no progress was reported while sampling"
    assert all(p["total"] == PLUMBING_T and 1 <= p["step"] <= PLUMBING_T for p in progress)
    steps = [p["step"] for p in progress]
    assert steps == sorted(steps)
    assert done["result"]["sampler"] == "ddpm" and done["result"]["steps"] == PLUMBING_T


def test_the_distilled_sampler_serves_its_student_with_every_frame(service: Stack) -> None:
    response = service.client.post(
        "/generate/digits", params={"label": 5, "n": 2, "sampler": "distilled", "frames": "true", "seed": 3}
    )
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert (result["sampler"], result["steps"], result["nfe"], result["guidance"]) == ("distilled", 4, 4, 1.0)
    assert result["engine"] in ("torch", "openvino", "onnxruntime") and result["precision"] == "fp32"
    assert [frame["t"] for frame in result["frames"]] == FRAMES
    workers = service.client.get("/models").json()["workers"]
    digits = next(m for w in workers for m in w["models"] if m["role"] == "digits")
    assert digits["student"]["name"] == "ddpm-digits-distilled"
    assert digits["sampling"]["sampler"] == "ddim", "the plumbing card's verdict keeps the guided default"
