"""Which torch device a worker process runs its models on."""

from __future__ import annotations

import torch


def pick_device(setting: str) -> torch.device:
    """``DEVICE``: ``cpu``, ``cuda`` (an error without a CUDA device), or ``auto`` (cuda when there is one)."""
    if setting == "cpu":
        return torch.device("cpu")
    if setting == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("DEVICE=cuda but torch sees no CUDA device: set DEVICE=cpu or auto")
        return torch.device("cuda")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
