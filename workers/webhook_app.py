"""The webhook worker: ``celery -A workers.webhook_app worker -Q webhooks --pool=threads``.

A Celery app of its own, so that its process imports neither torch nor a model
(tens of MB, it starts in a second) and a slow or dead receiver holds one of its
threads, never a model worker's. Deliveries wait for their retries in Redis
(Celery's ``countdown``), not in a thread.
"""

from __future__ import annotations

from typing import Any

import redis
from celery import Celery, Task

from contract.broker import base_config, consumed_queues
from contract.queues import QUEUE_WEBHOOKS, TASK_WEBHOOK

from . import webhooks
from .config import get_settings

settings = get_settings()

app = Celery("webhook_worker", broker=settings.redis_url, backend=settings.redis_url, set_as_current=False)
app.conf.update(
    **base_config(),
    task_queues=consumed_queues([QUEUE_WEBHOOKS]),
    # A delivery in flight when its worker dies is sent again: receivers dedupe by `webhook-id`.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # Above the longest back-off (10 minutes), so a waiting retry is not redelivered early.
    broker_transport_options={"visibility_timeout": 3600},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_redis: redis.Redis | None = None


def _client() -> redis.Redis:
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(settings.redis_url, socket_timeout=5)
    return _redis


@app.task(
    bind=True,
    name=TASK_WEBHOOK,
    ignore_result=True,  # nothing waits for it; and no result key wakes the API's result listener
    autoretry_for=(webhooks.DeliveryFailed,),
    retry_backoff=settings.webhook_backoff_s,
    retry_backoff_max=600,
    retry_jitter=True,
    max_retries=settings.webhook_max_attempts - 1,
)
def deliver_webhook(self: Task, *, job_id: str, url: str) -> Any:
    return webhooks.deliver(self, job_id=job_id, url=url, settings=settings, client=_client(), app=app)
