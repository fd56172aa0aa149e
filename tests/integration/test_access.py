"""An API with API keys and CORS on, in front of the ``service`` workers: real workers, real Redis, real HTTP
(uvicorn), two keys that cannot see each other's jobs; uvicorn's forwarded headers as ``make run`` starts it;
and ``make run`` with keys."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from stack.services import LocalStack

from .helpers import open_png
from .stack import OPEN_ACCESS, PLUMBING_LIMITS, REPO, Stack, another_api

pytestmark = pytest.mark.integration

KEY = "integration-test-key-0123456789"
OTHER_KEY = "integration-test-key-of-another-client"
ABSOLUTE_PATH = re.compile(r'(?:^|[\s"\'(=:])/(?:[^\s/"\']+/)+')


@pytest.fixture(scope="module")
def keyed(service: Stack) -> Iterator[Stack]:
    # Only the API's settings differ: a second API app in front of the session's workers.
    with another_api(
        service,
        "keyed",
        **{**PLUMBING_LIMITS, "api_keys": f"{KEY},{OTHER_KEY}", "cors_allow_origins": "https://app.example"},
    ) as stack:
        yield stack


def test_a_keyed_stack_serves_faces_with_the_key_and_refuses_without(keyed: Stack) -> None:
    key = {"X-API-Key": KEY}
    refused = keyed.client.post("/generate/faces", params={"n": 2, "seed": 3, "wait": 30})
    assert refused.status_code == 401 and "X-API-Key" in refused.json()["detail"]
    job = keyed.client.post("/generate/faces", params={"n": 2, "seed": 3, "wait": 30}, headers=key)
    assert job.status_code == 200, job.text
    grid = job.json()["result"]["images"][0]["url"]
    assert keyed.client.get(grid).status_code == 401  # a job's images are no more public than the job
    image = keyed.client.get(grid, headers={"Authorization": f"Bearer {KEY}"})
    assert image.status_code == 200 and open_png(image.content).size[0] > 0
    assert keyed.client.get("/healthz").status_code == 200
    assert keyed.client.get("/readyz", headers=key).status_code in (200, 503)  # ready or not, past the key


def test_another_key_gets_404_for_a_job_and_everything_of_it(keyed: Stack) -> None:
    mine, theirs = {"X-API-Key": KEY}, {"Authorization": f"Bearer {OTHER_KEY}"}
    job = keyed.client.post("/generate/faces", params={"n": 2, "seed": 4, "wait": 30}, headers=mine).json()
    assert job["status"] == "succeeded", job
    url, grid = job["url"], job["result"]["grid"]["url"]
    unknown = "/jobs/" + "e" * 32
    reads = [url, grid, f"{url}/predictions.csv", f"{url}/events"]
    for path in reads:
        refused = keyed.client.get(path, headers=theirs)
        assert refused.status_code == 404, (path, refused.text)
        assert "never created here" in refused.json()["detail"]  # an unknown job's 404, not a 403
    assert keyed.client.post(f"{url}/cancel", headers=theirs).status_code == 404
    absent = keyed.client.get(unknown, headers=theirs).json()["detail"]
    assert keyed.client.get(url, headers=theirs).json()["detail"] == absent.replace("e" * 32, job["id"])
    assert keyed.client.get(grid, headers=mine).status_code == 200
    assert keyed.client.get(url, headers=mine).json()["status"] == "succeeded"  # the other key's cancel did nothing


def test_an_idempotency_key_sent_by_two_api_keys_makes_two_jobs(keyed: Stack) -> None:
    same = {"Idempotency-Key": "shared-by-two-clients"}
    query = {"n": 1, "seed": 8, "wait": 30}
    first = keyed.client.post("/generate/faces", params=query, headers={**same, "X-API-Key": KEY}).json()
    second = keyed.client.post("/generate/faces", params=query, headers={**same, "X-API-Key": OTHER_KEY}).json()
    again = keyed.client.post("/generate/faces", params=query, headers={**same, "X-API-Key": KEY}).json()
    assert first["id"] != second["id"] and again["id"] == first["id"]
    assert first["status"] == second["status"] == "succeeded"


def test_a_spoofed_forwarded_for_from_loopback_does_not_change_the_client(redis_db: str, tmp_path: Path) -> None:
    """uvicorn started as ``make run`` starts it (``stack.services.api_command``), with a read budget of 3: rotating
    ``X-Forwarded-For`` does not make each request a new client unless FORWARDED_ALLOW_IPS names the sender."""
    env = {k: v for k, v in os.environ.items() if k not in ("API_KEYS", "FORWARDED_ALLOW_IPS")}
    env.update({k.upper(): str(v) for k, v in OPEN_ACCESS.items()})
    env.update(REDIS_URL=redis_db, RESULTS_DIR=str(tmp_path), RATE_LIMIT_READS="3/minute", PYTHONUNBUFFERED="1")
    statuses: dict[str, list[int]] = {}
    for trusted in ("", "127.0.0.1"):
        stack = LocalStack(env, log_dir=tmp_path / f"trusted-{trusted or 'none'}")
        try:
            with httpx.Client(base_url=stack.start_api(forwarded_allow_ips=trusted), timeout=30) as client:
                statuses[trusted] = [
                    client.get("/jobs/" + "0" * 32, headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code
                    for i in range(5)
                ]
        finally:
            stack.stop()
    assert statuses[""] == [404, 404, 404, 429, 429]
    assert statuses["127.0.0.1"] == [404] * 5  # a trusted proxy's header does name the client


@pytest.fixture(scope="module")
def page():
    chromium = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).is_file():
        pytest.skip(f"no chromium at {chromium}: `apt-get install chromium` (CI installs it) or set CHROMIUM")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield browser.new_page()
        browser.close()


def test_docs_authorize_then_try_it_out_runs_a_job(keyed: Stack, page) -> None:
    """In a real browser: /docs loads without a key, Authorize takes one, and its POST (Origin: this server) runs."""
    page.goto(f"{keyed.base_url}/docs", wait_until="networkidle")
    page.wait_for_selector(".opblock", timeout=20_000)
    page.locator("button.authorize").first.click()
    form = page.locator(".dialog-ux .auth-container", has_text="X-API-Key").first
    form.locator("input").fill(KEY)
    form.locator("button.authorize").click()
    form.locator("button.btn-done").click()
    block = page.locator(".opblock", has_text="/generate/faces").first
    block.locator(".opblock-summary").click()
    block.get_by_role("button", name="Try it out").click()
    block.get_by_role("button", name="Execute").click()
    status = block.locator(".live-responses-table tbody .response-col_status").first
    status.wait_for(timeout=60_000)
    assert status.inner_text().strip().startswith("200"), block.locator(".live-responses-table").inner_text()


def test_models_shows_no_path_of_the_workers_machine(keyed: Stack) -> None:
    body = keyed.client.get("/models", headers={"X-API-Key": KEY}).text
    workers = json.loads(body)["workers"]
    assert workers and all("checkpoint_dir" not in worker for worker in workers)
    assert str(keyed.checkpoint_dir) not in body and not ABSOLUTE_PATH.search(body)


def _launcher(tmp_path: Path, checkpoints: Path, **env: str) -> subprocess.Popen:
    environ = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_KEYS", "HOST")}
    environ.update(
        CHECKPOINT_DIR=str(checkpoints), RESULTS_DIR=str(tmp_path / "results"), TORCH_THREADS="1",
        PYTHONUNBUFFERED="1", **env,
    )  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "stack"],
        cwd=REPO,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_make_run_warns_when_it_would_listen_beyond_localhost_without_keys(
    tmp_path: Path, plumbing_checkpoints: Path
) -> None:
    with socket.socket() as holder:  # the port is taken, so the launcher stops right after its checks
        holder.bind(("0.0.0.0", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        bare = _launcher(tmp_path, plumbing_checkpoints, HOST="0.0.0.0", PORT=port).communicate(timeout=60)[0]
        keyed = _launcher(tmp_path, plumbing_checkpoints, HOST="0.0.0.0", PORT=port, API_KEYS=KEY)
        with_keys = keyed.communicate(timeout=60)[0]
    assert "WARNING: HOST=0.0.0.0" in bare and "Set API_KEYS" in bare and f"port {port}" in bare
    assert "WARNING" not in with_keys and f"port {port}" in with_keys
