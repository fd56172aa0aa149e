"""Webhooks against the real stack: a receiver on this machine gets the finished job, signed by the
Standard Webhooks convention, from the webhook worker (retried when it answers 5xx); a host that
WEBHOOK_ALLOWED_HOSTS does not list is refused when the job is created."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from .stack import WEBHOOK_HOST, WEBHOOK_SECRET, Stack

pytestmark = pytest.mark.integration

DELIVERY_TIMEOUT_S = 60.0


@dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int


@dataclass
class Receiver:
    """An HTTP server on a free loopback port that answers POSTs with ``statuses`` in turn (then 200)."""

    statuses: list[int] = field(default_factory=list)
    deliveries: queue.Queue[Delivery] = field(default_factory=queue.Queue)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://{WEBHOOK_HOST}:{self.server.server_address[1]}"

    def next(self, timeout: float = DELIVERY_TIMEOUT_S) -> Delivery:
        return self.deliveries.get(timeout=timeout)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            with lock:
                status = state.statuses.pop(0) if state.statuses else 200
            self.send_response(status)
            self.end_headers()
            state.deliveries.put(Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body, status))

        def log_message(self, *_: Any) -> None:
            pass

    state.server = ThreadingHTTPServer((WEBHOOK_HOST, 0), Handler)
    thread = threading.Thread(target=state.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.server.shutdown()
        state.server.server_close()


def verify(delivery: Delivery, secret: str = WEBHOOK_SECRET, tolerance_s: float = 300) -> dict[str, Any]:
    """A receiver's check, written from the Standard Webhooks spec (not with the service's code)."""
    message_id, timestamp = delivery.headers["webhook-id"], delivery.headers["webhook-timestamp"]
    assert abs(time.time() - int(timestamp)) < tolerance_s
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = base64.b64encode(
        hmac.new(key, f"{message_id}.{timestamp}.".encode() + delivery.body, hashlib.sha256).digest()
    ).decode()
    signatures = [s.split(",", 1)[1] for s in delivery.headers["webhook-signature"].split() if s.startswith("v1,")]
    assert any(hmac.compare_digest(expected, s) for s in signatures), "the signature does not verify"
    assert delivery.headers["content-type"] == "application/json"
    return json.loads(delivery.body)


def test_a_finished_faces_job_is_posted_signed_as_get_shows_it(service: Stack, receiver: Receiver) -> None:
    url = f"{receiver.url}/hooks/genserve?token=abc"
    response = service.client.post("/generate/faces", json={"n": 2, "seed": 5, "webhook": url})
    assert response.status_code == 200, response.text
    job = response.json()
    delivery = receiver.next()
    event = verify(delivery)
    assert delivery.path == "/hooks/genserve?token=abc"
    assert delivery.headers["webhook-id"] == f"msg_{job['id']}"
    assert event["type"] == "job.succeeded"
    assert event["data"] == service.client.get(job["url"]).json() == job
    assert "webhook" not in json.dumps(job), "the receiver's URL (and its token) is not public"
    # A tampered body does not verify.
    with pytest.raises(AssertionError, match="signature"):
        verify(Delivery(delivery.path, delivery.headers, delivery.body.replace(b"succeeded", b"failed"), 200))


def test_a_canceled_digits_job_is_posted_as_canceled(service: Stack, receiver: Receiver) -> None:
    response = service.client.post(
        "/generate/digits",
        params={"wait": 0},
        json={"n": 100, "label": 3, "sampler": "ddpm", "webhook": f"{receiver.url}/done"},
    )
    assert response.status_code == 202, response.text
    job = response.json()
    deadline = time.monotonic() + 120
    while service.client.get(job["url"]).json()["status"] == "queued" and time.monotonic() < deadline:
        time.sleep(0.05)
    canceled = service.client.post(f"/jobs/{job['id']}/cancel")
    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled", canceled.text
    event = verify(receiver.next())
    assert event["type"] == "job.canceled"
    assert event["data"]["id"] == job["id"] and event["data"]["status"] == "canceled"
    assert event["data"] == service.client.get(job["url"]).json()


def test_a_receiver_that_fails_twice_gets_three_attempts(service: Stack, receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    started = time.monotonic()
    response = service.client.post("/generate/faces", params={"n": 1, "seed": 1, "webhook": f"{receiver.url}/flaky"})
    assert response.status_code == 200, response.text
    attempts = [receiver.next(), receiver.next(), receiver.next()]
    assert [a.answered for a in attempts] == [500, 503, 200]
    # The same message each time: one id for the receiver to drop repeats by, each attempt signed.
    assert {a.headers["webhook-id"] for a in attempts} == {f"msg_{response.json()['id']}"}
    assert all(verify(a)["type"] == "job.succeeded" for a in attempts)
    # Back-off (WEBHOOK_BACKOFF_S=1, doubling, with jitter) spaces them out, and nothing comes after a 200.
    assert time.monotonic() - started < DELIVERY_TIMEOUT_S
    with pytest.raises(queue.Empty):
        receiver.next(timeout=3)


@pytest.mark.parametrize(
    "webhook, words",
    [
        ("http://example.com/hook", ["'example.com'", "WEBHOOK_ALLOWED_HOSTS", WEBHOOK_HOST]),
        ("http://localhost:9/hook", ["'localhost'", "WEBHOOK_ALLOWED_HOSTS"]),
        (f"ftp://{WEBHOOK_HOST}/hook", ["http:// or https://"]),
        (f"http://user:pw@{WEBHOOK_HOST}/hook", ["password"]),
    ],
)
def test_a_webhook_the_server_will_not_call_is_refused_at_post(service: Stack, webhook: str, words: list[str]) -> None:
    for request in ({"params": {"webhook": webhook}}, {"json": {"webhook": webhook}}):
        response = service.client.post("/generate/faces", **request)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert detail.startswith("webhook:") and all(word in detail for word in words), detail
    classify = service.client.post(
        "/classify/target-domain", params={"target": "svhn", "webhook": webhook}, files={"files": ("a.png", b"x")}
    )
    assert classify.status_code == 422 and "webhook:" in classify.json()["detail"]

