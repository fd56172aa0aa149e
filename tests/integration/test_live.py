"""Live jobs against the real stack: the event stream (progress, frames as they are drawn), cancel,
and the animated reverse process."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from contract.digits import FRAME_TIMESTEPS
from contract.files import ANIMATION_NAME

from .helpers import fetch_png, poll
from .stack import PLUMBING_T, Stack

pytestmark = pytest.mark.integration


def iter_events(client: httpx.Client, url: str, *, timeout: float = 120) -> Iterator[tuple[str, Any, float]]:
    """(event, data, arrival time) of an event stream, as they come."""
    with client.stream("GET", url, headers={"Accept": "text/event-stream"}, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        name, data = "message", []
        for line in response.iter_lines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                yield name, json.loads("\n".join(data)), time.monotonic()
                name, data = "message", []


def read_events(client: httpx.Client, url: str, *, timeout: float = 120) -> list[tuple[str, Any, float]]:
    return list(iter_events(client, url, timeout=timeout))


def start_digits(service: Stack, **params: Any) -> dict[str, Any]:
    response = service.client.post("/generate/digits", params={"label": 4, "seed": 5, "wait": 0, **params})
    assert response.status_code == 202, response.text
    return response.json()


def test_the_event_stream_sends_status_frames_progress_then_the_result(service: Stack) -> None:
    job = start_digits(service, n=4, sampler="ddpm", frames=True)
    events = read_events(service.client, f"{job['url']}/events")
    names = [name for name, _, _ in events]
    assert names[0] == "status" and names[-1] == "done", names
    done = events[-1][1]
    assert done["status"] == "succeeded" and done["id"] == job["id"]

    frames = [(data, at) for name, data, at in events if name == "frame"]
    assert [data["t"] for data, _ in frames] == list(FRAME_TIMESTEPS), "each report frame once, noise first"
    # Each frame is the PNG the job later serves for it.
    served = {link["t"]: link["url"] for link in done["result"]["frames"]}
    for data, _ in frames:
        header, payload = data["image"].split(",", 1)
        assert header == "data:image/png;base64"
        live = Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB")
        assert live.tobytes() == fetch_png(service.client, served[data["t"]]).convert("RGB").tobytes()
    # Frames arrive while the job runs, not all at the end.
    assert frames[0][1] < events[-1][2]
    first_frame = names.index("frame")
    steps = [data["step"] for name, data, _ in events if name == "progress"]
    assert steps, "no progress events"
    assert steps == sorted(steps) and steps[-1] == steps[0] + len(steps) - 1, "a progress event per step"
    assert names.index("progress") > first_frame, "the noise frame (t=400) comes before the first step"


def test_a_late_client_gets_the_frames_so_far_and_a_finished_job_just_its_end(service: Stack) -> None:
    job = start_digits(service, n=2, frames=True)
    done, _ = poll(service.client, job["url"], timeout=120)
    assert done["status"] == "succeeded"
    events = read_events(service.client, f"{job['url']}/events")
    names = [name for name, _, _ in events]
    assert names == ["status"] + ["frame"] * len(FRAME_TIMESTEPS) + ["done"], names
    assert events[0][1]["status"] == "succeeded"


def test_events_of_an_unknown_job_are_a_404(service: Stack) -> None:
    response = service.client.get("/jobs/0123456789abcdef0123456789abcdef/events")
    assert response.status_code == 404 and "never created" in response.json()["detail"]


def test_cancel_stops_a_running_diffusion_job_within_a_step(service: Stack) -> None:
    job = start_digits(service, n=100, sampler="ddpm")
    steps: list[int] = []
    started = threading.Event()

    def follow() -> None:
        for name, data, _ in iter_events(service.client, f"{job['url']}/events"):
            if name == "progress":
                steps.append(data["step"])
                started.set()
            if name == "done":
                steps.append(-1)

    reader = threading.Thread(target=follow)
    reader.start()
    assert started.wait(120), "the job never reported a step"
    response = service.client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    asked_at = len([s for s in steps if s > 0])
    canceled = response.json()
    assert canceled["status"] == "canceled" and canceled["result"] is None, canceled
    reader.join(60)
    done_steps = [s for s in steps if s > 0]
    assert steps[-1] == -1 and done_steps[-1] < PLUMBING_T, f"ran on to the end: {done_steps}"
    assert len(done_steps) - asked_at <= 2, f"kept going after the cancel: {asked_at} -> {len(done_steps)}"
    again = service.client.get(job["url"]).json()
    assert again["status"] == "canceled"
    second = service.client.post(f"/jobs/{job['id']}/cancel")
    assert second.status_code == 409 and "canceled" in second.json()["detail"]


def test_a_canceled_queued_job_never_runs(service: Stack) -> None:
    blocker = start_digits(service, n=100, sampler="ddpm")  # the diffusion worker runs one job at a time
    queued = start_digits(service, n=1, sampler="ddpm")
    response = service.client.post(f"/jobs/{queued['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "canceled", response.text
    service.client.post(f"/jobs/{blocker['id']}/cancel")
    time.sleep(1.0)  # the worker takes the canceled job off its queue and skips it
    job = service.client.get(queued["url"]).json()
    assert job["status"] == "canceled" and job["result"] is None
    assert not (service.results_dir / queued["id"]).exists(), "the canceled job wrote files"


def test_a_finished_job_cannot_be_canceled(service: Stack) -> None:
    job = service.client.post("/generate/faces", params={"n": 1, "seed": 1, "wait": 60}).json()
    assert job["status"] == "succeeded"
    response = service.client.post(f"/jobs/{job['id']}/cancel")
    assert response.status_code == 409 and "succeeded" in response.json()["detail"]


def test_the_animation_plays_the_whole_reverse_process(service: Stack) -> None:
    job = service.client.post(
        "/generate/digits", params={"label": 1, "n": 1, "seed": 2, "sampler": "ddim", "steps": 8, "animation": True, "wait": 60}
    ).json()
    assert job["status"] == "succeeded", job
    link = job["result"]["animation"]
    assert link["name"] == ANIMATION_NAME
    response = service.client.get(link["url"])
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    movie = Image.open(io.BytesIO(response.content))
    assert movie.is_animated and movie.n_frames == 9, "the noise and each of the 8 steps"
    movie.seek(movie.n_frames - 1)
    last = movie.convert("RGB").resize((28, 28), Image.Resampling.NEAREST)
    first_digit = fetch_png(service.client, job["result"]["images"][0]["url"]).convert("RGB")
    assert last.tobytes() == first_digit.tobytes(), "the animation ends on the finished digit"
