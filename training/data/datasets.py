"""Readers of the hw2_data layout: the builder's output or the course's own folder.

Both share ``face/{train,val}/*.png`` and ``digits/<domain>/data/*.png`` with
``digits/<domain>/{train,val}.csv`` (``image_name,label``). The course's images
may differ in mode (gray USPS) or size, so every image is converted to RGB and,
where needed, resized: faces to 64x64, digits to 28x28.

Float tensors are in [-1, 1] by default (the DCGAN/DDPM convention); the
``load_*`` functions return the raw uint8 pixels for in-memory training loops.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

FACE_SIZE = 64
DIGIT_SIZE = 28
DOMAINS: tuple[str, ...] = ("mnistm", "usps", "svhn")
SPLITS: tuple[str, ...] = ("train", "val")
_LOAD_CHUNK = 512  # images per thread task

Transform = Callable[[Image.Image], object]


def _check(value: str, allowed: Sequence[str], what: str) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; choose from {list(allowed)}")


def _read_rgb(path: Path, size: int) -> Image.Image:
    with Image.open(path) as img:
        img.load()
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BILINEAR)
    return img


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (any shape) -> float32 in [-1, 1]."""
    return images.to(torch.float32).div(127.5).sub(1.0)


def _default_transform(img: Image.Image) -> torch.Tensor:
    return to_float(torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy()))


def face_paths(root: Path, split: str = "train") -> list[Path]:
    """The sorted face PNGs of ``root/face/<split>``."""
    _check(split, SPLITS, "split")
    folder = Path(root) / "face" / split
    if not folder.is_dir():
        raise FileNotFoundError(f"no face folder {folder}; build it with `python -m training.data`")
    return sorted(folder.glob("*.png"))


def digit_index(root: Path, domain: str, split: str) -> tuple[list[Path], list[int]]:
    """Image paths and labels of one digit split, in csv order."""
    _check(domain, DOMAINS, "domain")
    _check(split, SPLITS, "split")
    folder = Path(root) / "digits" / domain
    table = folder / f"{split}.csv"
    if not table.is_file():
        raise FileNotFoundError(f"no split file {table}; build it with `python -m training.data`")
    with table.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [folder / "data" / r["image_name"] for r in rows], [int(r["label"]) for r in rows]


class FaceFolder(Dataset):
    """Faces of ``root/face/<split>``: (3,64,64) float in [-1,1], or ``transform(PIL image)``."""

    def __init__(self, root: Path, split: str = "train", transform: Transform | None = None) -> None:
        self.paths = face_paths(root, split)
        self.transform = transform or _default_transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self.transform(_read_rgb(self.paths[index], FACE_SIZE))


class DigitFolder(Dataset):
    """Digits of one domain and split: ``(image, label)``, image (3,28,28) float in [-1,1] by default."""

    def __init__(self, root: Path, domain: str, split: str, transform: Transform | None = None) -> None:
        self.paths, self.labels = digit_index(root, domain, split)
        self.transform = transform or _default_transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        return self.transform(_read_rgb(self.paths[index], DIGIT_SIZE)), self.labels[index]


def _load_stack(paths: Sequence[Path], size: int, threads: int | None) -> torch.Tensor:
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def fill(start: int) -> None:
        for i, path in enumerate(paths[start : start + _LOAD_CHUNK], start):
            out[i] = np.asarray(_read_rgb(path, size)).transpose(2, 0, 1)

    # Decoding a 28x28 PNG is mostly Python overhead under the GIL, so a few threads
    # (each on a contiguous chunk) are enough to hide file latency; more only contend.
    with ThreadPoolExecutor(max_workers=threads or min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(fill, range(0, len(paths), _LOAD_CHUNK)))
    return torch.from_numpy(out)


def load_digits(
    root: Path, domain: str, split: str, limit: int | None = None, *, threads: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A whole digit split (or its first ``limit``) in memory: uint8 (N,3,28,28) and int64 labels (N,)."""
    paths, labels = digit_index(root, domain, split)
    cache = Path(root) / "digits" / domain / f".{split}.pixels.npy"
    table = cache.with_name(f"{split}.csv")
    if cache.is_file() and cache.stat().st_mtime >= table.stat().st_mtime:
        pixels = np.load(cache, mmap_mode="r")
        if len(pixels) == len(paths):
            return torch.from_numpy(np.array(pixels[:limit])), torch.tensor(labels[:limit], dtype=torch.int64)
    if limit is not None:
        return _load_stack(paths[:limit], DIGIT_SIZE, threads), torch.tensor(labels[:limit], dtype=torch.int64)
    images = _load_stack(paths, DIGIT_SIZE, threads)
    _write_cache(cache, images.numpy())
    return images, torch.tensor(labels, dtype=torch.int64)


def _write_cache(path: Path, pixels: np.ndarray) -> None:
    """Keep a decoded split beside its csv: MNIST-M train takes 25 s to decode, 0.1 s to read back.

    A read-only layout (the course's own folder) simply goes without.
    """
    tmp = path.with_name(path.name + ".tmp.npy")
    try:
        np.save(tmp, pixels)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)


def load_faces(
    root: Path, split: str = "train", limit: int | None = None, *, threads: int | None = None
) -> torch.Tensor:
    """A whole face split (or its first ``limit``) in memory: uint8 (N,3,64,64)."""
    return _load_stack(face_paths(root, split)[:limit], FACE_SIZE, threads)
