"""The Celery configuration every process shares: one place for serialisation and routes.

The API publishes with ``api_celery``; the model workers (``workers.celery_app``)
and the webhook worker (``workers.webhook_app``) start from ``base_config`` and add
what only a consumer needs (queues, acks, time limits).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Exchange, Queue
from kombu.transport.redis import PRIORITY_STEPS, Channel

from .queues import task_routes


def base_config() -> dict[str, Any]:
    return {
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_routes": task_routes(),
    }


def consumed_queues(names: tuple[str, ...] | list[str]) -> list[Queue]:
    """Each queue on its own direct exchange, as a publisher declares a routed queue."""
    return [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in names]


def api_celery(redis_url: str, result_ttl_s: int) -> Celery:
    """The API's handle: it sends tasks by name and reads their state, nothing more."""
    app = Celery("api", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        **base_config(),
        result_expires=result_ttl_s,
        # Fail a publish fast when Redis is gone, instead of hanging the request.
        broker_connection_timeout=3,
        broker_connection_retry=False,
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        redis_socket_connect_timeout=3,
        redis_socket_timeout=5,
    )
    return app


def queue_keys(queue: str) -> list[str]:
    """The Redis lists that hold ``queue``'s waiting messages: kombu keeps one per priority step
    (the plain name for priority 0, ``name + sep + step`` for the others), so the jobs waiting
    in a queue are the sum of their lengths."""
    return [queue if step == 0 else f"{queue}{Channel.sep}{step}" for step in PRIORITY_STEPS]
