"""A small CNN that judges generated digits: trained on real MNIST-M only.

It is the evaluation instrument for the diffusion model (the course graded
generated digits with a classifier of its own), not a served model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class DigitClassifierConfig:
    num_classes: int = 10
    width: int = 32

    def to_dict(self) -> dict:
        return asdict(self)


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class DigitClassifier(nn.Module):
    """(N, 3, 28, 28) in [-1, 1] -> class logits (N, 10)."""

    def __init__(self, config: DigitClassifierConfig = DigitClassifierConfig()) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.features = nn.Sequential(
            *_block(3, w),
            *_block(w, w),
            nn.MaxPool2d(2),
            # state size. w x 14 x 14
            *_block(w, 2 * w),
            *_block(2 * w, 2 * w),
            nn.MaxPool2d(2),
            # state size. (2w) x 7 x 7
            *_block(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            # state size. 4w
        )
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(4 * w, config.num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
