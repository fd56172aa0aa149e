"""The contract between the API and the workers: task names, queues, Redis keys, file names.

The API process imports this module, so it stays free of torch and Celery.
"""

from __future__ import annotations

import re

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

# Worker registry: a sorted set of worker ids scored by the unix time their
# registration expires, plus one JSON key per worker with a TTL. The sorted set
# lets readers find live workers without SCANning a keyspace full of results.
WORKERS_INDEX_KEY = "genserve:workers"
WORKER_KEY_PREFIX = "genserve:worker:"

# One small key per job the API created: how 404 is told apart from "queued".
JOB_KEY_PREFIX = "genserve:job:"
# How many times a worker has started each job (redeliveries after a worker died).
DELIVERIES_KEY_PREFIX = "genserve:deliveries:"
# Set by POST /jobs/{id}/cancel: a queued job never runs, a running diffusion job stops at its next step.
CANCEL_KEY_PREFIX = "genserve:cancel:"
# Live events of a running job (progress, reverse-process frames): published on a
# channel for those listening now, and frames also kept in a list for a client
# that connects later (GET /jobs/{id}/events replays it first).
EVENTS_CHANNEL_PREFIX = "genserve:events:"
EVENTS_LOG_PREFIX = "genserve:events-log:"
# The exception type a canceled job ends with (the API reports its status as canceled).
CANCELED_ERROR = "JobCanceled"

# What a worker serves, by role: the API asks for a role, not a checkpoint name.
FACE_ROLES = {"A": "faces:A", "B": "faces:B"}
DIGIT_ROLE = "digits"
CLASSIFY_ROLES = {"svhn": "classify:svhn", "usps": "classify:usps"}
# The queue whose jobs need each role's model: a worker loads a role's model
# only when it consumes that queue.
ROLE_QUEUES = {
    **{role: QUEUE_SMALL for role in FACE_ROLES.values()},
    DIGIT_ROLE: QUEUE_DIFFUSION,
    **{role: QUEUE_SMALL for role in CLASSIFY_ROLES.values()},
}

# The report's reverse-process figure.
FRAME_TIMESTEPS = (400, 320, 240, 160, 80, 0)

# Digit samplers a request may name (models.scheduler builds them; a test keeps the two lists equal).
SAMPLERS = ("ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde", "unipc")

GRID_NAME = "grid.png"
FRAMES_STRIP_NAME = "frames.png"
# An animated PNG of the first digit's reverse process: every step the sampler visits,
# at most ANIMATION_MAX_FRAMES of them, evenly spread.
ANIMATION_NAME = "reverse_process.png"
ANIMATION_MAX_FRAMES = 60
INPUTS_DIR = "inputs"

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
IMAGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\.png$")


def task_routes() -> dict[str, dict[str, str]]:
    """Celery's ``task_routes`` for both sides: the API publishes by it, the workers' app shares it."""
    return {task: {"queue": queue} for task, queue in {**TASK_QUEUES, TASK_WEBHOOK: QUEUE_WEBHOOKS}.items()}


def parse_queues(value: str) -> tuple[str, ...]:
    """``"small,diffusion"`` -> ``("small", "diffusion")``; refuses names no task is routed to."""
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    unknown = [name for name in names if name not in QUEUES]
    if not names or unknown:
        raise ValueError(f"queues {value!r}: each must be one of {', '.join(QUEUES)} (comma-separated)")
    return names


def frame_name(t: int) -> str:
    return f"frame_t{t}.png"


def worker_key(worker_id: str) -> str:
    return WORKER_KEY_PREFIX + worker_id


def job_key(job_id: str) -> str:
    return JOB_KEY_PREFIX + job_id


def deliveries_key(job_id: str) -> str:
    return DELIVERIES_KEY_PREFIX + job_id


def cancel_key(job_id: str) -> str:
    return CANCEL_KEY_PREFIX + job_id


def events_channel(job_id: str) -> str:
    return EVENTS_CHANNEL_PREFIX + job_id


def events_log_key(job_id: str) -> str:
    return EVENTS_LOG_PREFIX + job_id
