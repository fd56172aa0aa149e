"""Task names and the queues they are routed to."""

from __future__ import annotations

# Tasks are sent by name, so the API never imports the module that defines them.
TASK_FACES = "workers.tasks.generate_faces"
TASK_DIGITS = "workers.tasks.generate_digits"
TASK_CLASSIFY = "workers.tasks.classify_digits"
# A job's webhook delivery, run by the webhook worker (workers.webhook_app), enqueued by the model worker.
TASK_WEBHOOK = "workers.webhook_app.deliver_webhook"

# Queues: a diffusion job runs for seconds to minutes, a face or classify job
# for milliseconds. On one queue a burst of diffusion jobs would sit in front of
# every small request, so each kind gets its own queue and its own worker (the
# Celery routing guide's "one worker per queue"). The API publishes by these
# routes; a worker consumes the queues it is given and loads only their models.
QUEUE_SMALL = "small"  # DCGAN faces and DANN classification: small networks, micro-batched
QUEUE_DIFFUSION = "diffusion"  # the diffusion UNet: long jobs, all of a device
QUEUES = (QUEUE_SMALL, QUEUE_DIFFUSION)
TASK_QUEUES = {TASK_FACES: QUEUE_SMALL, TASK_CLASSIFY: QUEUE_SMALL, TASK_DIGITS: QUEUE_DIFFUSION}
# Webhook deliveries wait on network receivers, not on a model: their own queue, consumed by a light
# worker process of their own (workers.webhook_app), so a slow receiver never holds a model worker.
QUEUE_WEBHOOKS = "webhooks"


def task_routes() -> dict[str, dict[str, str]]:
    """Celery's ``task_routes`` for every app: the API publishes by it, the workers' apps share it."""
    return {task: {"queue": queue} for task, queue in {**TASK_QUEUES, TASK_WEBHOOK: QUEUE_WEBHOOKS}.items()}


def parse_queues(value: str) -> tuple[str, ...]:
    """``"small,diffusion"`` -> ``("small", "diffusion")``; refuses names no task is routed to."""
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    unknown = [name for name in names if name not in QUEUES]
    if not names or unknown:
        raise ValueError(f"queues {value!r}: each must be one of {', '.join(QUEUES)} (comma-separated)")
    return names
