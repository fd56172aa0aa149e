"""`python -m stack` (what `make run` calls): up with its own redis-server, serving, and all gone on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from stack.processes import free_port

from .helpers import open_png
from .stack import REPO

KEY = "launcher-test-key-0123456789"

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _launch(tmp_path: Path, port: int, checkpoints: Path, **settings: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "API_KEYS")}
    env.update(
        PORT=str(port), CHECKPOINT_DIR=str(checkpoints), RESULTS_DIR=str(tmp_path / "results"),
        TORCH_THREADS="1", PYTHONUNBUFFERED="1", **settings,
    )  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "stack"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_launcher_serves_and_stops_everything_on_ctrl_c(tmp_path: Path, plumbing_checkpoints: Path) -> None:
    """With API keys (the launcher polls /readyz with one) and two API processes on one port."""
    port = free_port()
    launcher = _launch(tmp_path, port, plumbing_checkpoints, API_KEYS=f"{KEY},other-key-0123456789", API_PROCESSES="2")
    lines: list[str] = []
    try:
        assert launcher.stdout is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = launcher.stdout.readline()
            assert line, "launcher exited early:\n" + "".join(lines)
            lines.append(line)
            if "ready: workers up" in line:
                break
        output = "".join(lines)
        assert f"http://localhost:{port}/docs" in output and "WARNING" not in output
        pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", output)]
        assert len(pids) == 5, output  # redis-server, a worker per queue, the webhook worker, uvicorn
        assert "worker for the 'small' queue" in output and "worker for the 'diffusion' queue" in output
        assert "2 API process(es)" in output

        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60, headers={"X-API-Key": KEY}) as client:
            assert client.get("/readyz", headers={"X-API-Key": ""}).status_code == 401
            responses = [client.post("/generate/faces", headers={"Accept": "image/png"}) for _ in range(4)]
            assert all(r.status_code == 200 and open_png(r.content).size == (530, 266) for r in responses)
            assert client.get("/docs").status_code == 200

        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(60) == 0
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids), "a child outlived the launcher"
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def test_launcher_says_when_the_port_is_taken(tmp_path: Path, plumbing_checkpoints: Path) -> None:
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        launcher = _launch(tmp_path, port, plumbing_checkpoints)
        out, _ = launcher.communicate(timeout=60)
    assert launcher.returncode == 1
    assert f"port {port}" in out and "set PORT" in out


@contextmanager
def _launched(tmp_path: Path, checkpoints: Path) -> Iterator[tuple[subprocess.Popen, int, list[str]]]:
    """The launcher on a free port, its output lines so far; it must stop cleanly on Ctrl-C at the end."""
    port = free_port()
    launcher = _launch(tmp_path, port, checkpoints)
    try:
        yield launcher, port, []
        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(60) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def _read_until(launcher: subprocess.Popen, lines: list[str], needle: str, timeout: float = 120) -> str:
    assert launcher.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = launcher.stdout.readline()
        assert line, "launcher exited early:\n" + "".join(lines)
        lines.append(line)
        if needle in line:
            return line
    raise AssertionError(f"no {needle!r} in:\n" + "".join(lines))


def test_launcher_restarts_a_worker_and_redis_that_die(tmp_path: Path, plumbing_checkpoints: Path) -> None:
    with _launched(tmp_path, plumbing_checkpoints) as (launcher, port, lines):
        _read_until(launcher, lines, "ready: workers up")
        output = "".join(lines)
        small = int(re.search(r"worker for the 'small' queue \(pid (\d+)\)", output).group(1))  # type: ignore[union-attr]
        redis_pid = int(re.search(r"redis-server \(pid (\d+)\)", output).group(1))  # type: ignore[union-attr]
        for name, pid in (("small worker", small), ("redis-server", redis_pid)):
            os.kill(pid, signal.SIGKILL)
            _read_until(launcher, lines, f"the {name} exited with code")
            line = _read_until(launcher, lines, f"restarted the {name}")
            assert int(re.search(r"pid (\d+)", line).group(1)) != pid  # type: ignore[union-attr]
        _read_until(launcher, lines, "ready: workers up")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            response = client.post("/generate/faces", params={"n": 2, "wait": 60})
            assert response.status_code == 200, response.text


def test_launcher_puts_the_jobs_of_a_worker_killed_mid_job_back_and_a_restarted_api_reads_them(
    tmp_path: Path, plumbing_checkpoints: Path
) -> None:
    with _launched(tmp_path, plumbing_checkpoints) as (launcher, port, lines):
        _read_until(launcher, lines, "ready: workers up")
        worker = int(re.search(r"worker for the 'diffusion' queue \(pid (\d+)\)", "".join(lines)).group(1))  # type: ignore[union-attr]
        long_job = {"label": 4, "n": 20, "sampler": "ddpm", "wait": 0}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            ids = []
            for seed in (1, 2, 3):
                response = client.post("/generate/digits", params={**long_job, "seed": seed})
                assert response.status_code == 202, response.text
                ids.append(response.json()["id"])
            deadline = time.monotonic() + 60
            while client.get(f"/jobs/{ids[0]}").json()["progress"] is None:
                assert time.monotonic() < deadline, "the first job never started"
                time.sleep(0.05)
            os.kill(worker, signal.SIGKILL)
            line = _read_until(launcher, lines, "job(s) unfinished: back on the queue")
            assert ids[0] in line, line  # the one it was running; the others never left the queue
            _read_until(launcher, lines, "restarted the diffusion worker")
            started = time.monotonic()
            for job_id in ids:
                job = client.get(f"/jobs/{job_id}", params={"wait": 60}).json()
                while job["status"] in ("queued", "running"):
                    assert time.monotonic() - started < 300, job
                    job = client.get(f"/jobs/{job_id}", params={"wait": 60}).json()
                assert job["status"] == "succeeded", job
            # The API keeps nothing of its own: a new one reads the same records and results.
            api = int(re.findall(r"uvicorn \(pid (\d+)\)", "".join(lines))[-1])
            os.kill(api, signal.SIGKILL)
            _read_until(launcher, lines, "restarted the API")
            deadline = time.monotonic() + 60
            while True:
                try:
                    job = client.get(f"/jobs/{ids[0]}").json()
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the restarted API never answered"
                    time.sleep(0.2)
            assert job["status"] == "succeeded" and len(job["result"]["images"]) == long_job["n"], job
            assert client.get(job["result"]["grid"]["url"]).status_code == 200


def _descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (children, their pool processes...), from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads the process tree from /proc")
def test_kill_9_of_the_launcher_leaves_no_process_and_the_next_launch_finishes_the_stranded_job(
    tmp_path: Path, plumbing_checkpoints: Path
) -> None:
    port = free_port()
    launcher = _launch(tmp_path, port, plumbing_checkpoints, SHUTDOWN_GRACE_S="1")
    lines: list[str] = []
    try:
        _read_until(launcher, lines, "ready: workers up")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            response = client.post("/generate/digits", params={"label": 3, "n": 20, "sampler": "ddpm", "wait": 0})
            assert response.status_code == 202, response.text
            job_id = response.json()["id"]
            deadline = time.monotonic() + 60
            while client.get(f"/jobs/{job_id}").json()["progress"] is None:
                assert time.monotonic() < deadline, "the job never started"
                time.sleep(0.05)
        time.sleep(1.1)  # appendfsync everysec: the job's unacked message is on disk
        children = _descendants(launcher.pid)
        assert len(children) >= 6, children  # redis, three workers (and a pool process), uvicorn
        launcher.kill()
        launcher.wait(10)
        deadline = time.monotonic() + 10
        while (alive := {pid for pid in children if _alive(pid)}) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive, f"outlived the launcher by 10 s: {alive}"
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()

    with _launched(tmp_path, plumbing_checkpoints) as (again, port, lines):
        line = _read_until(again, lines, "a previous run left unfinished")
        assert job_id in line, line
        _read_until(again, lines, "ready: workers up")
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=90) as client:
            job = client.get(f"/jobs/{job_id}", params={"wait": 60}).json()
            assert job["status"] == "succeeded", job
