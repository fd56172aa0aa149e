"""Checkpoint name -> ready pipeline, the one call workers and evaluation commands make."""

from __future__ import annotations

from pathlib import Path
from typing import Union

import torch

from .checkpoints import CheckpointError, card_path, load_model
from .pipelines import DannClassifier, DigitPipeline, FacePipeline
from .scheduler import NoiseSchedule, NoiseScheduleConfig

Pipeline = Union[FacePipeline, DigitPipeline, DannClassifier]

# The project classifier that evaluation commands score digits with (never served).
EVAL_CLASSIFIER = "digit-classifier"


def load_pipeline(
    directory: Path, name: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[Pipeline, dict]:
    """Load checkpoint ``name`` and wrap it in the pipeline its card's kind calls for."""
    model, card = load_model(directory, name, device=device, dtype=dtype)
    kind = card["kind"]
    if kind == "dcgan-generator":
        return FacePipeline(model), card
    if kind == "conditional-unet":
        schedule = NoiseSchedule(NoiseScheduleConfig(**card.get("schedule", {})))
        pipe = DigitPipeline(model, schedule)
        student = student_name(card)
        if student is not None and card_path(Path(directory), student).is_file():
            pipe.attach_student(load_model(directory, student, device=device, dtype=dtype)[0])
        return pipe, card
    if kind == "dann":
        return DannClassifier(model, card.get("preprocess", {}).get("normalize", "half")), card
    raise CheckpointError(f"{name!r} is a {kind!r}, which has no serving pipeline")


def student_name(card: dict) -> str | None:
    """The distilled student a diffusion model's card names (``sampling.student``, written by
    ``training.evaluate digits`` once the student is measured against it), if any."""
    return card.get("sampling", {}).get("student", {}).get("checkpoint")
