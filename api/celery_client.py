"""The API's Celery handle: it sends tasks by name and reads their state, nothing more.

It does not import ``workers.tasks`` (that would load torch); the task names and
message format are the contract in ``workers.protocol``.
"""

from __future__ import annotations

from celery import Celery
from kombu.transport.redis import PRIORITY_STEPS, Channel

from workers.protocol import task_routes


def make_celery(redis_url: str, result_ttl_s: int) -> Celery:
    app = Celery("api", broker=redis_url, backend=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        # The same routes the workers' app has: digits to the diffusion queue, the rest to the small one.
        task_routes=task_routes(),
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
