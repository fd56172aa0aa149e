"""The contract between the API and the workers: task names, Redis keys, file names.

The API process imports this module, so it stays free of torch and Celery.
"""

from __future__ import annotations

import re

# Tasks are sent by name, so the API never imports the module that defines them.
TASK_FACES = "workers.tasks.generate_faces"
TASK_DIGITS = "workers.tasks.generate_digits"
TASK_CLASSIFY = "workers.tasks.classify_digits"

# Worker registry: a sorted set of worker ids scored by the unix time their
# registration expires, plus one JSON key per worker with a TTL. The sorted set
# lets readers find live workers without SCANning a keyspace full of results.
WORKERS_INDEX_KEY = "genserve:workers"
WORKER_KEY_PREFIX = "genserve:worker:"

# One small key per job the API created: how 404 is told apart from "queued".
JOB_KEY_PREFIX = "genserve:job:"

# What a worker serves, by role: the API asks for a role, not a checkpoint name.
FACE_ROLES = {"A": "faces:A", "B": "faces:B"}
DIGIT_ROLE = "digits"
CLASSIFY_ROLES = {"svhn": "classify:svhn", "usps": "classify:usps"}

# The report's reverse-process figure.
FRAME_TIMESTEPS = (400, 320, 240, 160, 80, 0)

GRID_NAME = "grid.png"
FRAMES_STRIP_NAME = "frames.png"
INPUTS_DIR = "inputs"

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
IMAGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\.png$")


def frame_name(t: int) -> str:
    return f"frame_t{t}.png"


def worker_key(worker_id: str) -> str:
    return WORKER_KEY_PREFIX + worker_id


def job_key(job_id: str) -> str:
    return JOB_KEY_PREFIX + job_id
