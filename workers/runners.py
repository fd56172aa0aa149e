"""What each task does, as plain functions of a loaded model and a job folder.

Kept apart from ``tasks.py`` so they run (and are tested) without Celery.
Every result is a small JSON-able dict: names of files, not pixels.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

import torch

from contract.digits import ANIMATION_MAX_FRAMES, FRAME_TIMESTEPS, NUM_TRAIN_TIMESTEPS
from contract.files import ANIMATION_NAME, FRAMES_STRIP_NAME, GRID_NAME, frame_name
from contract.jobs import JobKind
from models.pipelines import (
    DannClassifier,
    DigitOutput,
    DigitPipeline,
    FacePipeline,
    FrameCallback,
    digits_from_uint8,
)
from models.scheduler import SamplingConfig

from .batching import Batched, MicroBatcher
from .registry import LoadedModel
from .storage import JobFiles

FACES_PER_ROW = 8  # the report's 32-face figure is 4 rows of 8
CLASSIFY_BATCH = 256
Progress = Callable[[int, int], None]
T = TypeVar("T")


def draw_seed() -> int:
    return secrets.randbelow(2**32)


def _generator(model: LoadedModel, seed: int) -> torch.Generator:
    # One generator drives the initial noise and every sampler step, so a seed
    # fixes the whole output on a given device.
    return torch.Generator(device=model.device).manual_seed(seed)


def decode_faces(pipeline: FacePipeline, latents: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """One forward pass over the latents of several requests; each gets its own faces back."""
    images = pipeline.decode(torch.cat(list(latents))).images
    return list(images.split([z.shape[0] for z in latents]))


def classify_batch(pipeline: DannClassifier, max_rows: int, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Class probabilities for the images of several requests, at most ``max_rows`` per forward pass."""
    images = torch.cat(list(inputs))
    probabilities = [pipeline(chunk).probabilities for chunk in images.split(max(max_rows, 1))]
    probs = torch.cat(probabilities) if probabilities else torch.empty(0, 10)
    return list(probs.split([x.shape[0] for x in inputs]))


def _batch_info(done: Batched | None, rows: int) -> dict[str, int]:
    """Which forward pass a request shared: how many requests and images were in it."""
    return {"requests": done.requests, "images": done.rows} if done else {"requests": 1, "images": rows}


def generate_faces(
    model: LoadedModel,
    files: JobFiles,
    *,
    variant: str,
    n: int,
    seed: int | None,
    batcher: MicroBatcher | None = None,
    max_batch: int = 1,
) -> dict[str, Any]:
    """``n`` faces from ``seed``; with a ``batcher``, the forward pass may be shared with other requests.

    The noise is always drawn from this request's own generator, so a seed gives
    the same faces whether the request ran alone or in a batch.
    """
    seed = draw_seed() if seed is None else seed
    pipeline: FacePipeline = model.pipeline  # type: ignore[assignment]
    started = time.perf_counter()
    done = None
    if batcher is None:
        images = pipeline(n, generator=_generator(model, seed)).images
    else:
        with batcher.expecting():
            z = pipeline.noise(n, generator=_generator(model, seed))
            done = batcher.submit(model.role, z, partial(decode_faces, pipeline), size=n, max_size=max_batch)
        images = done.value
    compute_s = time.perf_counter() - started
    names = files.save_images([f"face_{i:03d}.png" for i in range(n)], images)
    if n == 1:
        files.link(GRID_NAME, names[0])  # a grid of one image is that image (make_grid adds no border)
    else:
        files.save_grid(GRID_NAME, images, nrow=FACES_PER_ROW)
    return {
        "kind": JobKind.faces,
        "model": variant,
        "checkpoint": model.name,
        "n": n,
        "seed": seed,
        "images": names,
        "grid": GRID_NAME,
        "device": model.device,
        "compute_s": round(compute_s, 4),
        "batch": _batch_info(done, n),
    }


def _digit_config(
    model: LoadedModel,
    sampler: str | None,
    steps: int | None,
    guidance: float | None,
    guidance_interval: Sequence[int] | None,
) -> SamplingConfig:
    """The request's sampling configuration; what it leaves out comes from the model card's default.

    A request with no sampling choice gets the served default (the distilled student, where the card made it so);
    one that names a sampler, steps or guidance starts from the guided configuration, which those tune.
    """
    pipeline = model.pipeline
    has_student = isinstance(pipeline, DigitPipeline) and pipeline.student is not None
    chosen = sampler is not None or steps is not None or guidance is not None or guidance_interval
    base = SamplingConfig.card_default(model.card) if chosen else SamplingConfig.served_default(
        model.card, has_student=has_student
    )
    return base.override(
        sampler=sampler,
        steps=steps,
        guidance_scale=guidance,
        guidance_interval=tuple(guidance_interval) if guidance_interval else None,  # type: ignore[arg-type]
    )


def _sample_digits(
    model: LoadedModel,
    config: SamplingConfig,
    labels: Sequence[int],
    n: int,
    seed: int,
    *,
    frames: bool,
    animation: bool,
    progress: Progress | None,
    on_frame: FrameCallback | None,
) -> DigitOutput:
    """``n`` digits of each of ``labels``, in that order, from ``seed``; the report's frames and the whole
    reverse process of the first digit when asked."""
    per_image = [label for label in labels for _ in range(n)]
    return model.pipeline(  # type: ignore[call-arg]
        per_image,
        sampler=config.sampler,
        steps=config.steps,
        guidance_scale=config.guidance_scale,
        guidance_interval=config.guidance_interval,
        generator=_generator(model, seed),
        frame_timesteps=FRAME_TIMESTEPS if frames else (),
        callback=progress,
        on_frame=on_frame,
        trajectory=animation,
    )


def _save_frames(files: JobFiles, out: DigitOutput) -> dict[str, str]:
    """The report's reverse-process frames, one file per timestep and a strip of them all."""
    frame_files = {str(t): files.save_image(frame_name(t), out.frames[t]) for t in FRAME_TIMESTEPS}
    files.save_grid(FRAMES_STRIP_NAME, torch.stack([out.frames[t] for t in FRAME_TIMESTEPS]), nrow=len(FRAME_TIMESTEPS))
    return frame_files


def _save_digits(
    files: JobFiles, labels: Sequence[int], n: int, out: DigitOutput, *, frames: bool, animation: bool
) -> tuple[list[str], dict[str, str]]:
    """Save the digits and their grid, then the frames and the animation when asked.

    Returns the digits' file names and the frames' files by timestep."""
    # The course's naming: <label>_<index from 001>.png
    names = [f"{label}_{i + 1:03d}.png" for label in labels for i in range(n)]
    files.save_images(names, out.images)
    files.save_grid(GRID_NAME, out.images, nrow=n if len(labels) > 1 else min(n, 10))
    frame_files = _save_frames(files, out) if frames else {}
    if animation:
        files.save_animation(ANIMATION_NAME, [image for _, image in spread(out.trajectory, ANIMATION_MAX_FRAMES)])
    return names, frame_files


def generate_digits(
    model: LoadedModel,
    files: JobFiles,
    *,
    labels: Sequence[int],
    n: int,
    seed: int | None,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
    guidance_interval: Sequence[int] | None = None,
    frames: bool = False,
    animation: bool = False,
    progress: Progress | None = None,
    on_frame: FrameCallback | None = None,
) -> dict[str, Any]:
    """``n`` digits of each of ``labels``, one grid row per label.

    What the request leaves out comes from the model card's recommended sampling
    configuration (``SamplingConfig.card_default``). ``frames`` keeps the report's
    reverse-process frames of the first digit (each handed to ``on_frame`` as soon as
    it is drawn); ``animation`` makes an animated PNG of its whole reverse process.
    """
    seed = draw_seed() if seed is None else seed
    config = _digit_config(model, sampler, steps, guidance, guidance_interval)
    started = time.perf_counter()
    out = _sample_digits(
        model, config, labels, n, seed, frames=frames, animation=animation, progress=progress, on_frame=on_frame
    )
    compute_s = time.perf_counter() - started
    names, frame_files = _save_digits(files, labels, n, out, frames=frames, animation=animation)
    engine, precision = model.runtime(config.sampler)
    return {
        "kind": JobKind.digits,
        "checkpoint": model.name,
        "labels": list(labels),
        "n": n,
        "seed": seed,
        "sampler": config.sampler,
        "steps": config.steps or model.card.get("schedule", {}).get("num_train_timesteps", NUM_TRAIN_TIMESTEPS),
        "guidance": config.guidance_scale,
        "guidance_interval": list(config.guidance_interval) if config.guidance_interval else None,
        "nfe": out.nfe,
        "images": names,
        "grid": GRID_NAME,
        "frames": frame_files,
        "frames_strip": FRAMES_STRIP_NAME if frames else None,
        "animation": ANIMATION_NAME if animation else None,
        "device": model.device,
        "engine": engine,
        "precision": precision,
        "compute_s": round(compute_s, 4),
    }


def spread(items: Sequence[T], most: int) -> list[T]:
    """At most ``most`` of ``items``, evenly spaced, always with the first and the last."""
    if len(items) <= most:
        return list(items)
    last = len(items) - 1
    return [items[round(k * last / (most - 1))] for k in range(most)]


def classify_digits(
    model: LoadedModel,
    files: JobFiles,
    *,
    target: str,
    inputs: str,
    names: Sequence[str],
    batcher: MicroBatcher | None = None,
    max_batch: int = CLASSIFY_BATCH,
    chunk: int = CLASSIFY_BATCH,
) -> dict[str, Any]:
    """Label and class probabilities per uploaded image; with a ``batcher``, the forward
    pass may be shared with other requests' images (each image is classified on its own).

    ``inputs`` names the file of the job's 28x28 digits that the API decoded from
    the uploads (``contract.digits_io``), one per name, in order. ``max_batch``
    bounds the images gathered from several requests, ``chunk`` the images per
    forward pass (a large request is split, batched or not)."""
    pipeline: DannClassifier = model.pipeline  # type: ignore[assignment]
    started = time.perf_counter()
    done = None
    if batcher is None:
        images = digits_from_uint8(files.load_digits(inputs, len(names)))
        probs = classify_batch(pipeline, chunk, [images])[0]
    else:
        with batcher.expecting():
            # Reading the digits happens here, in this job's thread, in parallel with other jobs.
            images = digits_from_uint8(files.load_digits(inputs, len(names)))
            run = partial(classify_batch, pipeline, chunk)
            done = batcher.submit(model.role, images, run, size=len(names), max_size=max_batch)
        probs = done.value
    compute_s = time.perf_counter() - started
    predictions = [
        {"image_name": name, "label": label, "probabilities": [round(p, 6) for p in row]}
        for name, label, row in zip(names, probs.argmax(dim=1).tolist(), probs.tolist(), strict=True)
    ]
    return {
        "kind": JobKind.classify,
        "target": target,
        "checkpoint": model.name,
        "predictions": predictions,
        "device": model.device,
        "compute_s": round(compute_s, 4),
        "batch": _batch_info(done, len(names)),
    }
