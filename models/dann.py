"""DANN (Ganin & Lempitsky, 2015) for 28x28 RGB digits, layers as in the seed report.

The gradient-reversal layer is a tiny autograd Function (as in fungtion/DANN's
``ReverseLayerF``): identity forward, gradient times ``-alpha`` backward.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from contract.digits import DIGIT_SIZE


class GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: float) -> torch.Tensor:  # type: ignore[override]
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # type: ignore[override]
        return grad_output.neg() * ctx.alpha, None


def grad_reverse(x: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    return GradientReversal.apply(x, alpha)


def reversal_coefficient(progress: float, gamma: float = 10.0) -> float:
    """The paper's schedule 2 / (1 + exp(-gamma p)) - 1 for training progress p in [0, 1]."""
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


@dataclass(frozen=True)
class DANNConfig:
    num_classes: int = 10
    image_size: int = DIGIT_SIZE

    def to_dict(self) -> dict:
        return asdict(self)


class DANN(nn.Module):
    """Shared feature CNN, a class head, and a domain head behind gradient reversal."""

    def __init__(self, config: DANNConfig = DANNConfig()) -> None:
        super().__init__()
        self.config = config
        self.feature = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=5),
            nn.BatchNorm2d(64),
            nn.MaxPool2d(2),
            nn.ReLU(True),
            # state size. 64 x 12 x 12
            nn.Conv2d(64, 128, kernel_size=5),
            nn.BatchNorm2d(128),
            nn.Dropout2d(),
            nn.MaxPool2d(2),
            nn.ReLU(True),
            # state size. 128 x 4 x 4
            nn.Flatten(),
            # state size. 2048
        )
        self.class_classifier = nn.Sequential(
            nn.Linear(2048, 100),
            nn.BatchNorm1d(100),
            nn.ReLU(True),
            nn.Linear(100, 100),
            nn.BatchNorm1d(100),
            nn.ReLU(),
            nn.Linear(100, config.num_classes),
        )
        self.domain_classifier = nn.Sequential(
            nn.Linear(2048, 100),
            nn.BatchNorm1d(100),
            nn.ReLU(True),
            nn.Linear(100, 2),
        )

    def forward(self, x: torch.Tensor, alpha: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (class logits, domain logits); ``alpha`` scales the reversed gradient."""
        features = self.feature(x)
        return self.class_classifier(features), self.domain_classifier(grad_reverse(features, alpha))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.class_classifier(self.feature(x))
