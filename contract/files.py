"""A job's files: the names workers write, the API serves and clients see in job JSON."""

from __future__ import annotations

import re

GRID_NAME = "grid.png"
FRAMES_STRIP_NAME = "frames.png"
# An animated PNG of the first digit's reverse process (contract.digits.ANIMATION_MAX_FRAMES).
ANIMATION_NAME = "reverse_process.png"
# What the API stores for a worker to read: decoded uploads (contract.digits_io).
INPUTS_DIR = "inputs"
INPUTS_FILE = "digits.npy"

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
IMAGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}\.png$")


def frame_name(t: int) -> str:
    return f"frame_t{t}.png"
