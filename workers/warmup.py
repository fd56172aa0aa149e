"""One forward pass per served model before the first job: set-up costs paid, the checkpoint proven to run."""

from __future__ import annotations

import torch

from contract.digits import DIGIT_SIZE, DISTILLED
from models.loading import Pipeline
from models.pipelines import DannClassifier, DigitPipeline, FacePipeline
from models.scheduler import SamplingConfig


def warm_up_digits(pipeline: DigitPipeline, card: dict) -> None:
    """One guided network evaluation, so the first request does not pay for oneDNN's (or cuDNN's) set-up."""
    pipeline([0], sampler="ddim", steps=1, guidance_scale=SamplingConfig.card_default(card).guidance_scale)
    if pipeline.student is not None:
        pipeline([0], sampler=DISTILLED, steps=1)


def warm_up(pipeline: Pipeline, card: dict) -> None:
    """One forward pass of a served model: the first request then pays no kernel selection or
    allocator growth, and a checkpoint that loads but cannot run shows before any job does."""
    if isinstance(pipeline, DigitPipeline):
        # The UNet stays plain NCHW fp32 under inference_mode: make bench's cpu_fast_path found neither
        # channels-last nor bf16 autocast faster on a CPU without bf16 instructions.
        warm_up_digits(pipeline, card)
    elif isinstance(pipeline, FacePipeline):
        pipeline(1)
    elif isinstance(pipeline, DannClassifier):
        pipeline(torch.zeros(1, 3, DIGIT_SIZE, DIGIT_SIZE))
    else:
        raise TypeError(f"no warm-up for {type(pipeline).__name__}")
