"""The worker's side of live jobs: what the API recognises a canceled job by, frames as data URLs,
and the frames an animation keeps."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

from contract import jobs
from workers.live import JobCanceled, png_data_url
from workers.runners import spread
from workers.storage import to_uint8


def test_the_api_knows_a_canceled_job_by_the_workers_exception_name() -> None:
    assert JobCanceled.__name__ == jobs.CANCELED_ERROR


def test_a_frame_travels_as_the_png_of_its_pixels() -> None:
    image = torch.rand(3, 28, 28, generator=torch.Generator().manual_seed(0))
    header, payload = png_data_url(image).split(",", 1)
    assert header == "data:image/png;base64"
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB"))
    assert np.array_equal(decoded, to_uint8(image).numpy())


def test_an_animation_keeps_at_most_its_frame_budget_evenly_with_both_ends() -> None:
    assert spread(list(range(6)), 60) == list(range(6))
    picked = spread(list(range(401)), 60)
    assert len(picked) == 60 and picked[0] == 0 and picked[-1] == 400
    gaps = np.diff(picked)
    assert gaps.min() >= 6 and gaps.max() <= 7
