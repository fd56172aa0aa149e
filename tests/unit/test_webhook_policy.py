"""Which webhook URLs are called, and the Standard Webhooks signature (contract.webhooks)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import subprocess
import sys
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
    assert resolve_for_delivery("https://hooks.example/h", ["hooks.example", "10.0.0.5"]) == ("hooks.example", "10.0.0.5", 443)


def test_a_public_address_is_called_at_the_address_that_was_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    _resolving_to(monkeypatch, "93.184.215.14")
    assert resolve_for_delivery("http://hooks.example:8080/h", ["hooks.example"]) == ("hooks.example", "93.184.215.14", 8080)


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
    assert seen["headers"]["webhook-signature"] == signed_headers(KEY, "msg_x", timestamp, b'{"a":1}')["webhook-signature"]


def test_no_attempt_without_a_secret_or_to_a_host_off_the_list() -> None:
    from workers.webhooks import post

    unsigned = WorkerSettings(_env_file=None, webhook_allowed_hosts="127.0.0.1")
    with pytest.raises(PermissionError, match="WEBHOOK_SECRET"):
        post("http://127.0.0.1:9/h", b"{}", unsigned, message_id="msg_x")
    listed_elsewhere = WorkerSettings(_env_file=None, webhook_allowed_hosts="hooks.example", webhook_secret=SECRET)
    with pytest.raises(ValueError, match="'127.0.0.1'"):
        post("http://127.0.0.1:9/h", b"{}", listed_elsewhere, message_id="msg_x")
