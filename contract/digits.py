"""The digit model's public constants: its schedule length, the report's frames, the samplers, the image size."""

from __future__ import annotations

# Training timesteps of the served diffusion model (linear betas 1e-4..0.02 over T = 400).
NUM_TRAIN_TIMESTEPS = 400
# The report's reverse-process figure.
FRAME_TIMESTEPS = (400, 320, 240, 160, 80, 0)
# The few-step student distilled from the guided sampler (training.distill): its own network, no guidance.
DISTILLED = "distilled"
# Its solver and steps (one network evaluation each): the student is trained at exactly these timesteps, so fixed.
DISTILLED_SOLVER = "unipc"
DISTILLED_STEPS = 4
# Digit samplers a request may name; models.scheduler builds each of them (``distilled``: DISTILLED_SOLVER on the
# student).
SAMPLERS = ("ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde", "unipc", DISTILLED)
# Side of a generated and of a classified digit (MNIST-M, and DANN's input).
DIGIT_SIZE = 28
# The animated reverse process: every step the sampler visits, at most this many frames, evenly spread.
ANIMATION_MAX_FRAMES = 60
