"""Result files: PNGs and grids under ``RESULTS_DIR/<job_id>/``.

Images live on disk (a volume shared with the API), never in Redis, which only
holds small job metadata that expires. Files are written to a temporary name and
renamed, so the API never serves a half-written PNG.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torchvision.utils import make_grid

from .protocol import INPUTS_DIR, JOB_ID_RE

log = logging.getLogger(__name__)

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

    def load_inputs(self, names: Sequence[str]) -> list[Image.Image]:
        """The uploads the API stored under ``inputs/``, already checked and normalised to RGB PNG."""
        images = []
        for name in names:
            path = self.dir / INPUTS_DIR / Path(name).name
            if not path.is_file():
                raise FileNotFoundError(f"input {path} is missing: the API and the worker must share RESULTS_DIR")
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        return images


def prune_expired(results_dir: Path, older_than_s: float) -> int:
    """Delete job folders last modified more than ``older_than_s`` ago; returns how many."""
    root = Path(results_dir)
    if not root.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for folder in root.iterdir():
        if not (folder.is_dir() and JOB_ID_RE.match(folder.name)):
            continue
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder)
                removed += 1
        except OSError as err:  # another worker may be pruning the same folder
            log.debug("could not prune %s: %s", folder, err)
    return removed
