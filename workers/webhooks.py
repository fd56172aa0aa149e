"""Webhooks: when a job with a ``webhook`` ends, the job is POSTed there, signed, with retries.

Two halves, both torch-free:

- ``enqueue_if_asked`` runs in the model worker right after Celery has stored a
  job's outcome (``workers.tasks.JobTask.after_return``): if the job's record named
  a webhook (read in the round trip that starts the job, ``webhook_in``), one message
  on the ``webhooks`` queue. The model worker never waits for a receiver;
- ``deliver`` runs in the webhook worker (``workers.webhook_app``, a light process
  of its own that loads no model): it reads the job record and its Celery state,
  builds the job exactly as ``GET /jobs/{id}`` shows it (``contract.jobs``), and
  POSTs it. An attempt has ``WEBHOOK_TIMEOUT_S`` in all, from connecting to the
  receiver's status line and headers (its body is never read): a receiver that
  trickles its answer cannot hold a delivery thread past it. A failed attempt (no
  connection, a timeout, a 408, 429 or 5xx) is
  retried by Celery (``autoretry_for``) with exponential back-off and jitter,
  ``WEBHOOK_MAX_ATTEMPTS`` attempts in all; a refusal that a retry cannot fix (the
  host no longer allowed, another 4xx) is logged and dropped.

The body follows the Standard Webhooks envelope: ``{"type": "job.<status>",
"timestamp": ..., "data": <the job>}``; ``webhook-id`` is ``msg_<job id>``, the same
on every attempt, so a receiver can drop a repeat.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import UTC, datetime

import httpx
import redis
from celery import Celery, Task

from contract.jobs import JobRecord, state_from_meta, to_public
from contract.keys import job_key
from contract.queues import TASK_WEBHOOK
from contract.webhooks import resolve_for_delivery, secret_key, signed_headers

from .config import WorkerSettings

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 425, 429}) | frozenset(range(500, 600))


class DeliveryFailed(Exception):
    """An attempt that a later one may get through (Celery retries it)."""


class JobNotEnded(DeliveryFailed):
    """The job's outcome is not stored yet (it is, by the time the hook runs; a retry covers a slow store)."""


def webhook_in(record: bytes | str | None) -> str | None:
    """The webhook URL a job's raw record (``protocol.job_key``) names, if any."""
    return json.loads(record).get("webhook") if record else None


def enqueue_if_asked(app: Celery, job_id: str, url: str | None) -> None:
    """Queue the delivery of a job that has ended, if it has a webhook."""
    if url:
        app.send_task(TASK_WEBHOOK, kwargs={"job_id": job_id, "url": url})


def payload(client: redis.Redis, app: Celery, job_id: str, base_url: str = "") -> tuple[str, bytes]:
    """(event type, body): the job as ``GET /jobs/{id}`` shows it, in the Standard Webhooks envelope."""
    raw = client.get(job_key(job_id))
    if raw is None:
        raise LookupError(f"job {job_id} has expired")
    record = JobRecord.from_json(job_id, raw)
    state = state_from_meta(app.backend.get_task_meta(job_id))
    if not state.finished:
        raise JobNotEnded(f"job {job_id} is still {state.status.value}")
    job = to_public(record, state, base_url).model_dump(mode="json")
    event = f"job.{state.status.value}"
    body = {"type": event, "timestamp": datetime.now(UTC).isoformat(), "data": job}
    return event, json.dumps(body, separators=(",", ":")).encode()


def post(url: str, body: bytes, settings: WorkerSettings, *, message_id: str) -> int:
    """One signed attempt, to the address that was checked; the receiver's status code."""
    if settings.webhook_secret is None:
        raise PermissionError("WEBHOOK_SECRET is not set: deliveries are never sent unsigned")
    key = secret_key(settings.webhook_secret.get_secret_value())
    host, address, port = resolve_for_delivery(url, settings.webhook_allowed_hosts)
    target = httpx.URL(url)
    pinned = target.copy_with(host=address, port=port)
    headers = {**signed_headers(key, message_id, int(time.time()), body), "host": target.netloc.decode("ascii")}
    extensions = {"sni_hostname": host} if target.scheme == "https" else {}
    deadline_s = settings.webhook_timeout_s
    try:
        return asyncio.run(_status_within(deadline_s, pinned, body, headers, extensions))
    except TimeoutError:
        raise DeliveryFailed(
            f"the receiver did not answer within WEBHOOK_TIMEOUT_S={deadline_s:g} s (connect, send and its status)"
        ) from None


async def _status_within(
    deadline_s: float, url: httpx.URL, body: bytes, headers: dict[str, str], extensions: dict[str, str]
) -> int:
    # httpx's timeouts bound each connect, write and read, not the exchange: a receiver that sends a byte
    # every few seconds never trips them. Cancelling the whole exchange at a deadline needs asyncio (a thread
    # blocked in a socket read cannot be interrupted); it runs in this delivery's own short-lived event loop.
    async with asyncio.timeout(deadline_s):
        # No redirects: a 3xx could point anywhere, past the host checks.
        async with httpx.AsyncClient(timeout=deadline_s, follow_redirects=False) as http:
            request = http.build_request("POST", url, content=body, headers=headers, extensions=extensions)
            response = await http.send(request, stream=True)  # the status is the answer; the body is not read
            await response.aclose()
            return response.status_code


def deliver(task: Task, *, job_id: str, url: str, settings: WorkerSettings, client: redis.Redis, app: Celery) -> int:
    """The body of the delivery task; raises ``DeliveryFailed`` for an attempt worth repeating."""
    attempt = task.request.retries + 1
    try:
        event, body = payload(client, app, job_id, settings.public_base_url)
        status = post(url, body, settings, message_id=f"msg_{job_id}")
    except (DeliveryFailed, httpx.TransportError) as err:  # not ended yet, no connection, past the deadline
        log.warning("webhook of job %s, attempt %d: %s", job_id, attempt, err)
        raise DeliveryFailed(str(err)) from err
    # An expired job, no secret, a host or URL refused (httpx's InvalidURL: one queued before the API refused it).
    except (LookupError, PermissionError, ValueError, httpx.InvalidURL) as err:
        log.error("webhook of job %s not sent: %s", job_id, err)
        return 0
    if 200 <= status < 300:
        log.info("webhook of job %s (%s) delivered on attempt %d: %d", job_id, event, attempt, status)
        return status
    if status in RETRY_STATUSES:
        log.warning("webhook of job %s, attempt %d: the receiver answered %d", job_id, attempt, status)
        raise DeliveryFailed(f"the receiver answered {status}")
    log.error("webhook of job %s dropped: the receiver answered %d", job_id, status)
    return status
