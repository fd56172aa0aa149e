"""Which webhook URLs are called, and the Standard Webhooks signature (contract.webhooks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from contract import queues
from contract.webhooks import check_webhook_url, resolve_for_delivery, secret_key, signed_headers
from workers.config import WorkerSettings

KEY = b"0123456789abcdef0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()


@pytest.mark.parametrize(
    "url, allowed, words",
    [
        ("https://hooks.example/h", [], ["webhooks are off", "WEBHOOK_ALLOWED_HOSTS"]),
        ("https://other.example/h", ["hooks.example"], ["'other.example'", "hooks.example"]),
        ("ftp://hooks.example/h", ["hooks.example"], ["http:// or https://"]),
        ("https:///h", ["hooks.example"], ["with a host"]),
        ("https://u:p@hooks.example/h", ["hooks.example"], ["password"]),
        ("https://hooks.example:99999/h", ["hooks.example"], ["not a URL"]),
        ("https://hooks.example.evil/h", ["hooks.example"], ["'hooks.example.evil'"]),
    ],
)
def test_urls_the_server_will_not_call(url: str, allowed: list[str], words: list[str]) -> None:
    with pytest.raises(ValueError) as caught:
        check_webhook_url(url, allowed)
    assert all(word in str(caught.value) for word in words), caught.value


def test_hosts_match_whatever_their_case_port_or_ip_spelling() -> None:
    assert check_webhook_url("https://HOOKS.example.:8443/x?y=1", [" hooks.example "]) == "hooks.example"
    assert check_webhook_url("http://[0:0::1]:8080/x", ["::1"]) == "::1"


def _resolving_to(monkeypatch: pytest.MonkeyPatch, *addresses: str) -> None:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in addresses]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_a_listed_name_that_resolves_to_a_private_address_is_not_called(monkeypatch: pytest.MonkeyPatch) -> None:
    _resolving_to(monkeypatch, "93.184.215.14", "10.0.0.5")
    with pytest.raises(ValueError, match=r"non-public address\(es\) 10\.0\.0\.5"):
        resolve_for_delivery("https://hooks.example/h", ["hooks.example"])
    # Listing the address itself is the operator saying "call it".
    _resolving_to(monkeypatch, "10.0.0.5")
    allowed = ["hooks.example", "10.0.0.5"]
    assert resolve_for_delivery("https://hooks.example/h", allowed) == ("hooks.example", "10.0.0.5", 443)


def test_a_public_address_is_called_at_the_address_that_was_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    _resolving_to(monkeypatch, "93.184.215.14")
    resolved = resolve_for_delivery("http://hooks.example:8080/h", ["hooks.example"])
    assert resolved == ("hooks.example", "93.184.215.14", 8080)


def test_loopback_is_called_only_when_listed_as_an_ip() -> None:
    with pytest.raises(ValueError, match="non-public"):
        resolve_for_delivery("http://localhost:9/h", ["localhost"])
    assert resolve_for_delivery("http://127.0.0.1:9/h", ["127.0.0.1"]) == ("127.0.0.1", "127.0.0.1", 9)


def test_the_signature_is_the_standard_webhooks_one() -> None:
    body = b'{"type":"job.succeeded"}'
    headers = signed_headers(secret_key(SECRET), "msg_abc", 1_700_000_000, body)
    expected = base64.b64encode(hmac.new(KEY, b"msg_abc.1700000000." + body, hashlib.sha256).digest()).decode()
    assert headers == {
        "content-type": "application/json",
        "webhook-id": "msg_abc",
        "webhook-timestamp": "1700000000",
        "webhook-signature": f"v1,{expected}",
    }


@pytest.mark.parametrize(
    "secret, words",
    [
        ("0123456789abcdef0123456789abcdef", ["whsec_"]),
        ("whsec_not base64!", ["not base64"]),
        ("whsec_" + base64.b64encode(b"short").decode(), ["5 bytes", "24 to 64"]),
    ],
)
def test_a_secret_not_in_whsec_form_is_refused_at_start(secret: str, words: list[str]) -> None:
    with pytest.raises(ValueError) as caught:
        WorkerSettings(_env_file=None, webhook_secret=secret)
    assert all(word in str(caught.value) for word in words), caught.value


def test_worker_settings_read_the_allowed_hosts_as_a_list() -> None:
    settings = WorkerSettings(_env_file=None, webhook_allowed_hosts="a.example, 127.0.0.1", webhook_secret=SECRET)
    assert settings.webhook_allowed_hosts == ["a.example", "127.0.0.1"]


def test_the_webhook_worker_imports_no_torch_and_runs_only_deliveries() -> None:
    code = (
        "import sys, workers.webhook_app as w; "
        "print(sorted(m for m in ('torch', 'models', 'api', 'workers.tasks') if m in sys.modules)); "
        "print(sorted(t for t in w.app.tasks if not t.startswith('celery.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == "[]" and out[1] == f"[{queues.TASK_WEBHOOK!r}]"


def test_deliveries_retry_with_bounded_exponential_back_off() -> None:
    from workers import webhook_app, webhooks

    task = webhook_app.deliver_webhook
    assert task.autoretry_for == (webhooks.DeliveryFailed,)
    assert task.retry_backoff == webhook_app.settings.webhook_backoff_s and task.retry_jitter
    assert task.max_retries == webhook_app.settings.webhook_max_attempts - 1 and task.retry_backoff_max == 600
    assert task.ignore_result
    # Routed to its own queue, by the route table both the API and the model workers publish with.
    assert queues.task_routes()[queues.TASK_WEBHOOK] == {"queue": queues.QUEUE_WEBHOOKS}
    assert queues.QUEUE_WEBHOOKS not in queues.QUEUES  # no model worker consumes it


def test_an_attempt_posts_the_signed_body_to_the_checked_address() -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from threading import Thread

    from workers.webhooks import post

    seen: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            seen["headers"] = {k.lower(): v for k, v in self.headers.items()}
            seen["body"] = self.rfile.read(int(self.headers["content-length"]))
            seen["path"] = self.path
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.handle_request, daemon=True).start()
    port = server.server_address[1]
    settings = WorkerSettings(_env_file=None, webhook_allowed_hosts="127.0.0.1", webhook_secret=SECRET)
    try:
        status = post(f"http://127.0.0.1:{port}/hook?t=1", b'{"a":1}', settings, message_id="msg_x")
    finally:
        server.server_close()
    assert status == 204 and seen["path"] == "/hook?t=1" and seen["body"] == b'{"a":1}'
    assert seen["headers"]["host"] == f"127.0.0.1:{port}" and seen["headers"]["webhook-id"] == "msg_x"
    timestamp = int(seen["headers"]["webhook-timestamp"])
    expected = signed_headers(KEY, "msg_x", timestamp, b'{"a":1}')["webhook-signature"]
    assert seen["headers"]["webhook-signature"] == expected


def test_no_attempt_without_a_secret_or_to_a_host_off_the_list() -> None:
    from workers.webhooks import post

    unsigned = WorkerSettings(_env_file=None, webhook_allowed_hosts="127.0.0.1")
    with pytest.raises(PermissionError, match="WEBHOOK_SECRET"):
        post("http://127.0.0.1:9/h", b"{}", unsigned, message_id="msg_x")
    listed_elsewhere = WorkerSettings(_env_file=None, webhook_allowed_hosts="hooks.example", webhook_secret=SECRET)
    with pytest.raises(ValueError, match="'127.0.0.1'"):
        post("http://127.0.0.1:9/h", b"{}", listed_elsewhere, message_id="msg_x")


# -- a deadline per attempt, control characters, hosts with ports -----------------------------------------------


class _Trickler:
    """A receiver on a loopback port that reads the request, then sends ``head`` at once and ``trickle`` a byte
    every ``every_s`` seconds: each byte comes well within a per-read timeout."""

    def __init__(self, head: bytes, trickle: bytes, every_s: float = 0.25) -> None:
        self.head, self.trickle, self.every_s = head, trickle, every_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            request = b""
            while b"\r\n\r\n" not in request:
                request += connection.recv(65536)
            try:
                connection.sendall(self.head)
                for byte in self.trickle:
                    if self.done.wait(self.every_s):
                        break
                    connection.sendall(bytes([byte]))
            except OSError:
                pass  # the client gave up: what the deadline is for

    def close(self) -> None:
        self.done.set()
        self.listener.close()


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_deadline() -> None:
    from workers.webhooks import DeliveryFailed, post

    # 60 header bytes at 4 a second: 15 s, though no read waits even 1 s.
    receiver = _Trickler(b"HTTP/1.1 200 OK\r\n", b"X-Slow: " + b"a" * 50 + b"\r\n\r\n")
    settings = WorkerSettings(
        _env_file=None, webhook_allowed_hosts="127.0.0.1", webhook_secret=SECRET, webhook_timeout_s=1.0
    )
    started = time.monotonic()
    try:
        with pytest.raises(DeliveryFailed, match="WEBHOOK_TIMEOUT_S=1 s"):
            post(f"http://127.0.0.1:{receiver.port}/h", b"{}", settings, message_id="msg_x")
    finally:
        receiver.close()
    assert time.monotonic() - started < 3.0


def test_the_status_is_the_answer_and_a_slow_body_is_not_waited_for() -> None:
    from workers.webhooks import post

    receiver = _Trickler(b"HTTP/1.1 200 OK\r\ncontent-length: 40\r\n\r\n", b"x" * 40)  # 10 s of body
    settings = WorkerSettings(
        _env_file=None, webhook_allowed_hosts="127.0.0.1", webhook_secret=SECRET, webhook_timeout_s=1.0
    )
    started = time.monotonic()
    try:
        assert post(f"http://127.0.0.1:{receiver.port}/h", b"{}", settings, message_id="msg_x") == 200
    finally:
        receiver.close()
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("char", ["\r", "\n", "\r\n", "\t", " ", "\x00", "\x7f", "\x85"])
def test_a_url_with_a_control_character_or_space_is_refused(char: str) -> None:
    # Python's URL parser would drop a CR, LF or tab silently; the HTTP client then refuses the URL at delivery.
    with pytest.raises(ValueError, match="no spaces or control characters") as caught:
        check_webhook_url(f"http://127.0.0.1:9/h{char}X-Injected: 1", ["127.0.0.1"])
    assert "percent-encode it" in str(caught.value) and "position 21" in str(caught.value)


def test_the_api_refuses_such_a_webhook_at_post_time_with_a_422() -> None:
    from fastapi.testclient import TestClient

    from api.config import Settings
    from api.main import create_app

    settings = Settings(_env_file=None, redis_url="redis://127.0.0.1:1/0", webhook_allowed_hosts="127.0.0.1")
    with TestClient(create_app(settings), raise_server_exceptions=False) as api:
        in_body = api.post("/generate/faces", json={"webhook": "http://127.0.0.1:9/h\r\nX-Injected: 1"})
        in_query = api.post("/generate/faces", params={"webhook": "http://127.0.0.1:9/h\nx"})
    for response in (in_body, in_query):
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail.startswith("webhook: the URL has the character") and "control characters" in detail


def test_a_delivery_to_such_a_url_is_logged_and_dropped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A job queued before the API refused such URLs: its delivery says why it is not sent, and is not retried."""
    from types import SimpleNamespace

    from workers import webhooks

    monkeypatch.setattr(webhooks, "payload", lambda *_args, **_kwargs: ("job.succeeded", b"{}"))
    settings = WorkerSettings(_env_file=None, webhook_allowed_hosts="127.0.0.1", webhook_secret=SECRET)
    task = SimpleNamespace(request=SimpleNamespace(retries=0))
    with caplog.at_level(logging.ERROR, logger="workers.webhooks"):
        status = webhooks.deliver(
            task, job_id="j1", url="http://127.0.0.1:9/h\r\nx", settings=settings, client=None, app=None  # type: ignore[arg-type]
        )
    assert status == 0
    assert any("webhook of job j1 not sent" in r.getMessage() and "control" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "entry, words",
    [
        ("127.0.0.1:18950", ["names a port", "(127.0.0.1)", "any port"]),
        ("[::1]:8080", ["names a port", "(::1)"]),
        ("hooks.example:443", ["names a port", "(hooks.example)"]),
        ("https://hooks.example", ["not a host name", "(hooks.example)"]),
        ("hooks.example/h", ["not a host name", "(hooks.example)"]),
    ],
)
def test_an_allowed_host_with_a_port_or_scheme_is_refused_at_start(entry: str, words: list[str]) -> None:
    from api.config import Settings

    for settings in (WorkerSettings, Settings):
        with pytest.raises(ValueError) as caught:
            settings(_env_file=None, webhook_allowed_hosts=f"a.example, {entry}")
        assert all(word in str(caught.value) for word in words), caught.value


def test_hosts_and_ip_literals_are_still_taken_as_written() -> None:
    hosts = "hooks.example, HOOKS.example., 127.0.0.1, ::1, [::1], fe80::1:8080"
    assert WorkerSettings(_env_file=None, webhook_allowed_hosts=hosts).webhook_allowed_hosts == [
        "hooks.example", "HOOKS.example.", "127.0.0.1", "::1", "[::1]", "fe80::1:8080"
    ]  # fmt: skip
