"""What the service serves, by role: the API asks for a role, a worker loads its checkpoint.

A role names a served use (``faces:B``, ``digits``, ``classify:svhn``); its
checkpoint is the name the files carry in the checkpoint folder (``dcgan-B.json``
and ``dcgan-B.safetensors``), which training writes and the workers load.
"""

from __future__ import annotations

from typing import Literal

from .queues import QUEUE_DIFFUSION, QUEUE_SMALL

FaceModel = Literal["A", "B"]
Target = Literal["svhn", "usps"]

# The served checkpoints, by the name their files carry in the checkpoint folder.
FACE_CHECKPOINTS: dict[str, str] = {"A": "dcgan-A", "B": "dcgan-B"}
DIGIT_CHECKPOINT = "ddpm-digits"
# The few-step student of the digit model's guided sampler; the digit worker loads it beside its teacher.
DIGIT_STUDENT_CHECKPOINT = "ddpm-digits-distilled"
DANN_CHECKPOINTS: dict[str, str] = {"svhn": "dann-svhn", "usps": "dann-usps"}

FACE_ROLES: dict[str, str] = {variant: f"faces:{variant}" for variant in FACE_CHECKPOINTS}
DIGIT_ROLE = "digits"
CLASSIFY_ROLES: dict[str, str] = {target: f"classify:{target}" for target in DANN_CHECKPOINTS}

# role -> checkpoint name, for every served model.
SERVED: dict[str, str] = {
    **{FACE_ROLES[variant]: name for variant, name in FACE_CHECKPOINTS.items()},
    DIGIT_ROLE: DIGIT_CHECKPOINT,
    **{CLASSIFY_ROLES[target]: name for target, name in DANN_CHECKPOINTS.items()},
}
SERVED_ROLES: tuple[str, ...] = tuple(SERVED)

# The queue whose jobs need each role's model: a worker loads a role's model
# only when it consumes that queue.
ROLE_QUEUES: dict[str, str] = {role: QUEUE_DIFFUSION if role == DIGIT_ROLE else QUEUE_SMALL for role in SERVED}


def served_for(queues: tuple[str, ...] | list[str]) -> dict[str, str]:
    """The part of ``SERVED`` whose jobs come on ``queues``."""
    return {role: name for role, name in SERVED.items() if ROLE_QUEUES[role] in queues}
