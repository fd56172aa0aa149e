"""Result files: PNGs and grids of one job, written to the results store (``contract.store``).

Images live in the store (a local folder or an S3-compatible bucket), never in
Redis, which only holds small job metadata that expires. The store writes whole
files only, so the API never serves a half-written PNG.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from contract.digits_io import digits_from_bytes
from contract.files import INPUTS_DIR
from contract.store import ResultNotFound, ResultStore, check_names

# zlib level 1: a 32-face grid encodes in ~16 ms instead of ~19 ms at level 3
# (~29 ms at 6) for files 0.5% larger; a single 64x64 face costs ~0.4 ms at any level.
PNG_COMPRESS_LEVEL = 1


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) float in [0, 1] -> (..., H, W, 3) uint8, the layout PIL reads."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8).movedim(-3, -1).contiguous()


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] -> RGB PIL image."""
    return Image.fromarray(to_uint8(image).numpy())


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return out.getvalue()


class JobFiles:
    """The files of one job in the results store."""

    def __init__(self, store: ResultStore, job_id: str) -> None:
        check_names(job_id)
        self.store = store
        self.job_id = job_id
        self._written: dict[str, bytes] = {}  # what this run wrote, so a second name costs no second encode

    def _write(self, name: str, data: bytes) -> str:
        self.store.put(self.job_id, name, data)
        self._written[name] = data
        return name

    def save_image(self, name: str, image: torch.Tensor) -> str:
        return self._write(name, png_bytes(to_pil(image)))

    def save_images(self, names: Sequence[str], images: torch.Tensor) -> list[str]:
        arrays = to_uint8(images).numpy()  # one conversion for the whole batch
        return [self._write(name, png_bytes(Image.fromarray(array))) for name, array in zip(names, arrays, strict=True)]

    def link(self, name: str, existing: str) -> str:
        """Give the file ``existing`` a second name, without encoding it again."""
        data = self._written.get(existing)
        return self._write(name, data if data is not None else self.store.get(self.job_id, existing))

    def save_grid(self, name: str, images: torch.Tensor, nrow: int, padding: int = 2) -> str:
        return self.save_image(name, make_grid(images, nrow=nrow, padding=padding, pad_value=1.0))

    def save_animation(
        self, name: str, frames: Sequence[torch.Tensor], *, frame_ms: int = 80, hold_last_ms: int = 1200, scale: int = 4
    ) -> str:
        """An animated PNG (APNG: lossless, and every browser plays it in an ``<img>``) of
        (3, H, W) frames, each pixel drawn ``scale`` x ``scale`` so 28x28 digits are visible."""
        images = [to_pil(frame) for frame in frames]
        images = [im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST) for im in images]
        durations = [frame_ms] * (len(images) - 1) + [hold_last_ms]
        out = io.BytesIO()
        images[0].save(
            out, format="PNG", save_all=True, append_images=images[1:], duration=durations, loop=0,
            compress_level=PNG_COMPRESS_LEVEL,
        )  # fmt: skip
        return self._write(name, out.getvalue())

    def load_digits(self, name: str, count: int) -> np.ndarray:
        """The ``count`` uint8 (N, 28, 28, 3) digits the API decoded from the uploads and stored under ``inputs/``."""
        try:
            data = self.store.get(self.job_id, f"{INPUTS_DIR}/{Path(name).name}")
        except ResultNotFound:
            raise FileNotFoundError(
                f"input {name} of job {self.job_id} is missing from the results store ({self.store.kind}): the API "
                "and the worker must use the same RESULTS_STORE, and the job's files must not have been removed "
                "(RESULTS_MAX_BYTES, JOB_TTL_SECONDS)"
            ) from None
        return digits_from_bytes(data, count)
