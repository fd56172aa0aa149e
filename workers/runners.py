"""What each task does, as plain functions of a loaded model and a job folder.

Kept apart from ``tasks.py`` so they run (and are tested) without Celery.
Every result is a small JSON-able dict: names of files, not pixels.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from models.pipelines import digits_from_pil

from .protocol import FRAME_TIMESTEPS, FRAMES_STRIP_NAME, GRID_NAME, frame_name
from .registry import LoadedModel, default_guidance
from .storage import JobFiles

FACES_PER_ROW = 8  # the report's 32-face figure is 4 rows of 8
DEFAULT_DDIM_STEPS = 25
CLASSIFY_BATCH = 256
Progress = Callable[[int, int], None]


def draw_seed() -> int:
    return secrets.randbelow(2**32)


def _generator(model: LoadedModel, seed: int) -> torch.Generator:
    # One generator drives the initial noise and every sampler step, so a seed
    # fixes the whole output on a given device.
    return torch.Generator(device=model.device).manual_seed(seed)


def generate_faces(model: LoadedModel, files: JobFiles, *, variant: str, n: int, seed: int | None) -> dict[str, Any]:
    seed = draw_seed() if seed is None else seed
    started = time.perf_counter()
    images = model.pipeline(n, generator=_generator(model, seed)).images  # type: ignore[call-arg]
    compute_s = time.perf_counter() - started
    names = files.save_images([f"face_{i:03d}.png" for i in range(n)], images)
    files.save_grid(GRID_NAME, images, nrow=FACES_PER_ROW)
    return {
        "kind": "faces",
        "model": variant,
        "checkpoint": model.name,
        "n": n,
        "seed": seed,
        "images": names,
        "grid": GRID_NAME,
        "device": model.device,
        "compute_s": round(compute_s, 4),
    }


def generate_digits(
    model: LoadedModel,
    files: JobFiles,
    *,
    labels: Sequence[int],
    n: int,
    seed: int | None,
    sampler: str = "ddim",
    steps: int | None = None,
    guidance: float | None = None,
    frames: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """``n`` digits of each of ``labels``, one grid row per label."""
    seed = draw_seed() if seed is None else seed
    if sampler == "ddim" and steps is None:
        steps = int(model.card.get("sampling", {}).get("few_step_steps", DEFAULT_DDIM_STEPS))
    if sampler == "ddpm":
        steps = None  # ancestral sampling always runs every training step
    guidance = default_guidance(model.card) if guidance is None else guidance
    per_image = [label for label in labels for _ in range(n)]
    started = time.perf_counter()
    out = model.pipeline(  # type: ignore[call-arg]
        per_image,
        sampler=sampler,
        steps=steps,
        guidance_scale=guidance,
        generator=_generator(model, seed),
        frame_timesteps=FRAME_TIMESTEPS if frames else (),
        callback=progress,
    )
    compute_s = time.perf_counter() - started
    # The course's naming: <label>_<index from 001>.png
    names = [f"{label}_{i + 1:03d}.png" for label in labels for i in range(n)]
    files.save_images(names, out.images)
    files.save_grid(GRID_NAME, out.images, nrow=n if len(labels) > 1 else min(n, 10))
    frame_files: dict[str, str] = {}
    if frames:
        for t in FRAME_TIMESTEPS:
            frame_files[str(t)] = files.save_image(frame_name(t), out.frames[t])
        files.save_grid(
            FRAMES_STRIP_NAME, torch.stack([out.frames[t] for t in FRAME_TIMESTEPS]), nrow=len(FRAME_TIMESTEPS)
        )
    return {
        "kind": "digits",
        "checkpoint": model.name,
        "labels": list(labels),
        "n": n,
        "seed": seed,
        "sampler": sampler,
        "steps": steps if steps is not None else model.card.get("schedule", {}).get("num_train_timesteps", 400),
        "guidance": guidance,
        "images": names,
        "grid": GRID_NAME,
        "frames": frame_files,
        "frames_strip": FRAMES_STRIP_NAME if frames else None,
        "device": model.device,
        "compute_s": round(compute_s, 4),
    }


def classify_digits(
    model: LoadedModel, files: JobFiles, *, target: str, inputs: Sequence[str], names: Sequence[str]
) -> dict[str, Any]:
    if len(inputs) != len(names):
        raise ValueError(f"{len(inputs)} inputs but {len(names)} names")
    started = time.perf_counter()
    probabilities = []
    for start in range(0, len(inputs), CLASSIFY_BATCH):
        batch = digits_from_pil(files.load_inputs(inputs[start : start + CLASSIFY_BATCH]))
        probabilities.append(model.pipeline(batch).probabilities)  # type: ignore[call-arg,arg-type]
    probs = torch.cat(probabilities) if probabilities else torch.empty(0, 10)
    compute_s = time.perf_counter() - started
    predictions = [
        {"image_name": name, "label": int(row.argmax()), "probabilities": [round(float(p), 6) for p in row]}
        for name, row in zip(names, probs, strict=True)
    ]
    return {
        "kind": "classify",
        "target": target,
        "checkpoint": model.name,
        "predictions": predictions,
        "device": model.device,
        "compute_s": round(compute_s, 4),
    }
