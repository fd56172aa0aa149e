"""DCGAN generator and discriminator for 64x64 faces, in the seed's two variants.

Variant ``A``: no BatchNorm anywhere, ReLU in the discriminator.
Variant ``B``: the standard DCGAN of Radford et al. (BatchNorm, LeakyReLU 0.2 in D).
Layer lists follow the seed report's printouts exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

Variant = Literal["A", "B"]


@dataclass(frozen=True)
class DCGANConfig:
    variant: Variant = "B"
    nz: int = 100  # latent size
    ngf: int = 64  # generator width
    ndf: int = 64  # discriminator width
    nc: int = 3  # image channels
    image_size: int = 64

    def to_dict(self) -> dict:
        return asdict(self)


def weights_init(m: nn.Module) -> None:
    """DCGAN init (Radford et al.): conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), bias 0."""
    classname = m.__class__.__name__
    if classname.find("Conv") != -1:
        nn.init.normal_(m.weight.data, 0.0, 0.02)
    elif classname.find("BatchNorm") != -1:
        nn.init.normal_(m.weight.data, 1.0, 0.02)
        nn.init.constant_(m.bias.data, 0)


def _bn(channels: int, use_bn: bool) -> list[nn.Module]:
    return [nn.BatchNorm2d(channels)] if use_bn else []


class Generator(nn.Module):
    """z (N, nz, 1, 1) -> image (N, 3, 64, 64) in [-1, 1]."""

    def __init__(self, config: DCGANConfig = DCGANConfig()) -> None:
        super().__init__()
        self.config = config
        nz, ngf, nc, bn = config.nz, config.ngf, config.nc, config.variant == "B"
        self.model = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            *_bn(ngf * 8, bn),
            nn.ReLU(True),
            # state size. (ngf*8) x 4 x 4
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            *_bn(ngf * 4, bn),
            nn.ReLU(True),
            # state size. (ngf*4) x 8 x 8
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            *_bn(ngf * 2, bn),
            nn.ReLU(True),
            # state size. (ngf*2) x 16 x 16
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            *_bn(ngf, bn),
            nn.ReLU(True),
            # state size. (ngf) x 32 x 32
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
            # state size. (nc) x 64 x 64
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.model(z)


class Discriminator(nn.Module):
    """image (N, 3, 64, 64) -> probability of being real (N,)."""

    def __init__(self, config: DCGANConfig = DCGANConfig()) -> None:
        super().__init__()
        self.config = config
        ndf, nc = config.ndf, config.nc
        bn = config.variant == "B"

        def act() -> nn.Module:
            return nn.LeakyReLU(0.2, inplace=True) if bn else nn.ReLU(inplace=True)

        self.model = nn.Sequential(
            # input is (nc) x 64 x 64
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            act(),
            # state size. (ndf) x 32 x 32
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            *_bn(ndf * 2, bn),
            act(),
            # state size. (ndf*2) x 16 x 16
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            *_bn(ndf * 4, bn),
            act(),
            # state size. (ndf*4) x 8 x 8
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            *_bn(ndf * 8, bn),
            act(),
            # state size. (ndf*8) x 4 x 4
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
            # state size. 1 x 1 x 1
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).view(-1)
