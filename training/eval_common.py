"""What the evaluation commands share: the device, the metrics file, image conversions."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from models.checkpoints import read_card, write_card

from .common import code_revision


def device_of(name: str) -> torch.device:
    """``auto`` is CUDA when present, else the CPU; any other name is taken as is."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def write_metrics(checkpoint_dir: Path, values: dict, drop: tuple[str, ...] = ()) -> dict:
    """Merge ``values`` into checkpoints/metrics.json (a flat object of numbers or null).

    ``drop`` removes keys whose measurement no longer exists, so none outlives its meaning.
    """
    path = Path(checkpoint_dir) / "metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    metrics.update(values)
    for key in drop:
        metrics.pop(key, None)
    path.write_text(json.dumps(dict(sorted(metrics.items())), indent=2) + "\n")
    return metrics


def record_evaluation(checkpoint_dir: Path, name: str, what: str, command: str) -> None:
    """Note in a card which command (and code) measured its ``what`` metrics, beside them."""
    card = read_card(checkpoint_dir, name)
    card.setdefault("evaluation", {})[what] = {"command": command, "code_revision": code_revision()}
    write_card(checkpoint_dir, name, card)


def to_uint8_hwc(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [0, 1] -> (N, H, W, 3) uint8."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def classify_uint8(model: torch.nn.Module, images: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """Evaluation-classifier predictions for uint8 (N, 3, 28, 28) images."""
    preds = [model(images[i : i + batch].float().div(127.5).sub(1)).argmax(1) for i in range(0, len(images), batch)]
    return torch.cat(preds)


@torch.no_grad()
def accuracy(predict: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, labels: torch.Tensor, batch: int = 1024) -> float:
    """Top-1 accuracy (torchmetrics) of ``predict`` (a uint8 batch -> class logits) over uint8 images."""
    from torchmetrics.classification import MulticlassAccuracy

    metric = MulticlassAccuracy(num_classes=10, average="micro").to(labels.device)
    for i in range(0, len(images), batch):
        metric.update(predict(images[i : i + batch]), labels[i : i + batch])
    return metric.compute().item()
