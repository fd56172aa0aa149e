"""Result files: PNGs and grids under ``RESULTS_DIR/<job_id>/``.

Images live on disk (a volume shared with the API), never in Redis, which only
holds small job metadata that expires. Files are written to a temporary name and
renamed, so the API never serves a half-written PNG.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid

from contract.digits_io import load_digits
from contract.files import INPUTS_DIR, JOB_ID_RE

# zlib level 1: a 32-face grid encodes in ~16 ms instead of ~19 ms at level 3
# (~29 ms at 6) for files 0.5% larger; a single 64x64 face costs ~0.4 ms at any level.
PNG_COMPRESS_LEVEL = 1


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) float in [0, 1] -> (..., H, W, 3) uint8, the layout PIL reads."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8).movedim(-3, -1).contiguous()


def to_pil(image: torch.Tensor) -> Image.Image:
    """(3, H, W) float in [0, 1] -> RGB PIL image."""
    return Image.fromarray(to_uint8(image).numpy())


class JobFiles:
    """The folder of one job's files."""

    def __init__(self, results_dir: Path, job_id: str) -> None:
        if not JOB_ID_RE.match(job_id):
            # Job ids become folder names: only the API's own hex ids are allowed.
            raise ValueError(f"job id {job_id!r} is not 32 lowercase hex digits")
        self.dir = Path(results_dir) / job_id

    def _tmp(self, name: str) -> Path:
        # Per process and thread: a threads-pool worker runs many jobs in one process.
        return self.dir / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"

    def _write(self, name: str, image: Image.Image) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp(name)
        image.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        tmp.replace(self.dir / name)
        return name

    def save_image(self, name: str, image: torch.Tensor) -> str:
        return self._write(name, to_pil(image))

    def save_images(self, names: Sequence[str], images: torch.Tensor) -> list[str]:
        arrays = to_uint8(images).numpy()  # one conversion for the whole batch
        return [self._write(name, Image.fromarray(array)) for name, array in zip(names, arrays, strict=True)]

    def link(self, name: str, existing: str) -> str:
        """Give the file ``existing`` a second name, without encoding it again."""
        tmp = self._tmp(name)
        tmp.unlink(missing_ok=True)
        try:
            os.link(self.dir / existing, tmp)
        except OSError:  # a filesystem without hard links
            shutil.copyfile(self.dir / existing, tmp)
        tmp.replace(self.dir / name)
        return name

    def save_grid(self, name: str, images: torch.Tensor, nrow: int, padding: int = 2) -> str:
        return self.save_image(name, make_grid(images, nrow=nrow, padding=padding, pad_value=1.0))

    def save_animation(
        self, name: str, frames: Sequence[torch.Tensor], *, frame_ms: int = 80, hold_last_ms: int = 1200, scale: int = 4
    ) -> str:
        """An animated PNG (APNG: lossless, and every browser plays it in an ``<img>``) of
        (3, H, W) frames, each pixel drawn ``scale`` x ``scale`` so 28x28 digits are visible."""
        images = [to_pil(frame) for frame in frames]
        images = [im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST) for im in images]
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self._tmp(name)
        durations = [frame_ms] * (len(images) - 1) + [hold_last_ms]
        images[0].save(
            tmp, format="PNG", save_all=True, append_images=images[1:], duration=durations, loop=0,
            compress_level=PNG_COMPRESS_LEVEL,
        )  # fmt: skip
        tmp.replace(self.dir / name)
        return name

    def load_digits(self, name: str, count: int) -> np.ndarray:
        """The ``count`` uint8 (N, 28, 28, 3) digits the API decoded from the uploads and stored under ``inputs/``."""
        path = self.dir / INPUTS_DIR / Path(name).name
        if not path.is_file():
            raise FileNotFoundError(
                f"input {path} is missing: the API and the worker must share RESULTS_DIR, "
                "and the job's folder must not have been removed (RESULTS_MAX_BYTES, JOB_TTL_SECONDS)"
            )
        return load_digits(path, count)
