"""A client must send a request's line and headers within HEADER_TIMEOUT_S (api.transport), against a real uvicorn
server in this process (on a free loopback port, with a tiny ASGI app): plain uvicorn keeps a half-sent request
open for as long as the client likes."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
import yaml

from api.transport import HeaderTimeoutProtocol
from contract.settings import REPO
from stack.processes import free_port
from stack.services import api_command

TIMEOUT_S = 0.5
PROTOCOL = "api.transport:HeaderTimeoutProtocol"


class _Quick(HeaderTimeoutProtocol):
    header_timeout_s = TIMEOUT_S


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/slow":
        await asyncio.sleep(3 * TIMEOUT_S)  # the app's own time is not the client's: no timeout here
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    chosen = free_port()
    config = uvicorn.Config(_app, host="127.0.0.1", port=chosen, http=_Quick, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield chosen
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.settimeout(5)
    return sock


def _until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (5 s at most per read)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def test_half_a_request_gets_a_408_and_the_connection_is_closed(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # no blank line: the headers never end
        started = time.monotonic()
        answer = _until_closed(sock)
    assert time.monotonic() - started < TIMEOUT_S + 1.5
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 ") and b"content-type: application/json" in head
    assert "HEADER_TIMEOUT_S" in json.loads(body)["detail"]


def test_headers_trickled_a_byte_at_a_time_are_cut_off_too(port: int) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40 + b"\r\n\r\n"
    with _connect(port) as sock:
        started = time.monotonic()
        try:
            for byte in request:  # 4 s in all, each byte well within the timeout
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
        except OSError:
            pass  # closed under our feet: what is wanted
        answer = _until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert time.monotonic() - started < TIMEOUT_S + 1.5


def test_a_connection_that_sends_nothing_is_closed(port: int) -> None:
    with _connect(port) as sock:
        started = time.monotonic()
        assert _until_closed(sock) == b""
    assert time.monotonic() - started < TIMEOUT_S + 1.5


def test_a_whole_request_is_served_however_long_the_app_takes_and_the_next_one_is_timed_again(port: int) -> None:
    with _connect(port) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b"ok"):
            first += sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200 ")
        # Same connection (keep-alive): the next request's headers get their own deadline.
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\n")
        assert _until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_make_run_and_the_images_start_uvicorn_with_this_protocol() -> None:
    command = api_command("127.0.0.1", 8000)
    assert command[command.index("--http") + 1] == PROTOCOL
    dockerfile = (REPO / "Dockerfile").read_text()
    (api_cmd,) = re.findall(r'^CMD (\["uvicorn".*\])$', dockerfile, flags=re.MULTILINE)
    cmd = json.loads(api_cmd)
    assert cmd[cmd.index("--http") + 1] == PROTOCOL
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    api = compose["services"]["api"]["command"]
    assert api[api.index("--http") + 1] == PROTOCOL
