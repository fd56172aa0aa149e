"""The service as two hosts that share only Redis and an S3 bucket: no folder in common.

Host "api": two API processes (separate uvicorn processes, as two replicas behind
a load balancer would be), each with a results folder of its own. Host "gpu":
the workers of every queue and the webhook worker, with another folder. Results
go to the bucket of a real S3-protocol server on 127.0.0.1. Every request below
is answered by whichever API process the test picks, often not the one that
created the job; then one API process is killed with SIGKILL and the other
keeps serving.
"""

from __future__ import annotations

import io
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from PIL import Image

from contract.digits import FRAME_TIMESTEPS
from stack.processes import free_port, http_ok, spawn, stop, wait_for
from stack.services import LocalStack, api_command, webhook_worker_spec, worker_specs
from tests.conftest import S3_CREDENTIALS, create_bucket

from .stack import OPEN_ACCESS

pytestmark = pytest.mark.integration

PUBLIC = "https://genserve.example"


@dataclass
class TwoHosts:
    apis: list[httpx.Client]
    processes: list  # the API processes, in the order of ``apis``
    api_folder: Path
    worker_folder: Path


def _local_path(url: str) -> str:
    assert url.startswith(PUBLIC + "/jobs/"), url  # PUBLIC_BASE_URL makes job URLs absolute
    return url.removeprefix(PUBLIC)


@pytest.fixture(scope="module")
def hosts(
    redis_db: str, s3_endpoint: str, plumbing_checkpoints: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TwoHosts]:
    root = tmp_path_factory.mktemp("two-hosts")
    bucket = create_bucket(s3_endpoint, "two-hosts")
    shared = {
        **os.environ,
        **{k.upper(): str(v) for k, v in OPEN_ACCESS.items()},
        **S3_CREDENTIALS,
        "REDIS_URL": redis_db,
        "RESULTS_STORE": "s3",
        "S3_ENDPOINT_URL": s3_endpoint,
        "S3_BUCKET": bucket,
        "PUBLIC_BASE_URL": PUBLIC,
        "PYTHONUNBUFFERED": "1",
    }
    api_folder, worker_folder = root / "api-host-results", root / "gpu-host-results"
    workers = LocalStack(
        {
            **shared,
            "RESULTS_DIR": str(worker_folder),
            "CHECKPOINT_DIR": str(plumbing_checkpoints),
            "DEVICE": "cpu",
            "HEARTBEAT_SECONDS": "1",
        },
        log_dir=root / "gpu-host",
    )
    api_env = {**shared, "RESULTS_DIR": str(api_folder), "DEFAULT_WAIT_S": "60", "MAX_WAIT_S": "90"}
    apis, clients = [], []
    try:
        for spec in [*worker_specs(torch_threads=1), webhook_worker_spec()]:
            workers.start_worker(spec)
        for i in range(2):
            port = free_port()
            log = (root / f"api-{i}.log").open("ab")
            apis.append(spawn(api_command("127.0.0.1", port), env=api_env, stdout=log, stderr=log))
            clients.append(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120))
        for i, client in enumerate(clients):
            wait_for(lambda c=client: http_ok(f"{c.base_url}/healthz"), 60, f"API process {i}")
        workers.wait_for_workers()
        wait_for(lambda: http_ok(f"{clients[0].base_url}/readyz"), 120, "readiness")
        yield TwoHosts(clients, apis, api_folder, worker_folder)
    finally:
        for client in clients:
            client.close()
        for process in apis:
            stop(process)
        workers.stop()


def _png(client: httpx.Client, url: str) -> Image.Image:
    response = client.get(_local_path(url))
    assert response.status_code == 200 and response.headers["content-type"] == "image/png", response.text[:200]
    return Image.open(io.BytesIO(response.content))


def test_faces_made_through_one_api_process_are_served_by_the_other(hosts: TwoHosts) -> None:
    one, other = hosts.apis
    job = one.post("/generate/faces", params={"n": 3, "seed": 5}).json()
    assert job["status"] == "succeeded" and job["url"] == f"{PUBLIC}/jobs/{job['id']}"
    assert _png(other, job["result"]["grid"]["url"]).size[1] == 64 + 4
    for image in job["result"]["images"]:
        assert _png(other, image["url"]).size == (64, 64)
    grid = other.post("/generate/faces", params={"n": 3, "seed": 5}, headers={"Accept": "image/png"})
    assert grid.status_code == 200 and grid.content == one.get(_local_path(job["result"]["grid"]["url"])).content


def test_digits_with_frames_and_animation_cross_hosts(hosts: TwoHosts) -> None:
    one, other = hosts.apis
    job = other.post("/generate/digits", params={"label": 3, "n": 2, "frames": True, "animation": True}).json()
    assert job["status"] == "succeeded", job
    result = job["result"]
    assert [frame["t"] for frame in result["frames"]] == list(FRAME_TIMESTEPS)
    for frame in result["frames"]:
        assert _png(one, frame["url"]).size == (28, 28)
    animation = _png(one, result["animation"]["url"])
    assert getattr(animation, "n_frames", 1) > 1  # an APNG
    assert _png(one, result["frames_strip"]["url"]).width > 28 * len(FRAME_TIMESTEPS)


def test_classify_reads_uploads_stored_by_the_api_host(hosts: TwoHosts) -> None:
    one, other = hosts.apis
    files = []
    for i in range(3):
        buffer = io.BytesIO()
        Image.new("L", (40, 40), color=40 * i).save(buffer, format="PNG")
        files.append(("files", (f"digit_{i}.png", buffer.getvalue(), "image/png")))
    job = one.post("/classify/target-domain", params={"target": "usps"}, files=files).json()
    assert job["status"] == "succeeded", job
    assert [p["image_name"] for p in job["result"]["predictions"]] == ["digit_0.png", "digit_1.png", "digit_2.png"]
    csv = other.get(_local_path(job["result"]["csv_url"]))
    assert csv.status_code == 200 and csv.text.splitlines()[0] == "image_name,label" and len(csv.text.splitlines()) == 4


def test_live_events_and_cancel_answer_from_either_process(hosts: TwoHosts) -> None:
    one, other = hosts.apis
    # The full ancestral sampler: every one of the model's steps, long enough to follow and to cancel.
    followed = one.post("/generate/digits", params={"label": 1, "n": 1, "sampler": "ddpm", "wait": 0}).json()
    events = []
    with other.stream("GET", f"/jobs/{followed['id']}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line.removeprefix("event: "))
            if events and events[-1] == "done":
                break
    assert "progress" in events and events[-1] == "done"
    assert one.get(f"/jobs/{followed['id']}").json()["status"] == "succeeded"

    doomed = other.post("/generate/digits", params={"n": 10, "sampler": "ddpm", "wait": 0}).json()
    canceled = one.post(f"/jobs/{doomed['id']}/cancel")
    assert canceled.status_code in (200, 202)
    final = other.get(f"/jobs/{doomed['id']}", params={"wait": 60}).json()
    assert final["status"] == "canceled", final


def test_an_idempotent_retry_to_the_other_process_gets_the_same_job(hosts: TwoHosts) -> None:
    one, other = hosts.apis
    key = {"Idempotency-Key": "two-hosts-retry-1"}
    first = one.post("/generate/faces", params={"n": 1, "seed": 3}, headers=key).json()
    again = other.post("/generate/faces", params={"n": 1, "seed": 3}, headers=key).json()
    assert first["id"] == again["id"]


def test_no_folder_is_shared_and_a_killed_api_process_leaves_the_other_serving(hosts: TwoHosts) -> None:
    for folder in (hosts.api_folder, hosts.worker_folder):
        assert not folder.exists() or not any(folder.iterdir()), f"{folder} was written: the hosts share no folder"
    one, other = hosts.apis
    os.kill(hosts.processes[0].pid, signal.SIGKILL)
    hosts.processes[0].wait(10)
    with pytest.raises(httpx.TransportError):
        one.get("/healthz")
    assert other.get("/readyz").status_code == 200
    job = other.post("/generate/faces", params={"n": 2, "seed": 9}).json()
    assert job["status"] == "succeeded" and _png(other, job["result"]["images"][1]["url"]).size == (64, 64)
    assert json.loads(other.get("/models").text)["workers"]
