"""Each network prints the same layers as the seed report's printouts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from torch import nn

from models.dann import DANN
from models.dcgan import DCGANConfig, Discriminator, Generator
from models.unet import ConditionalUNet

PRINTOUTS = Path(__file__).parent / "seed_printouts"
# The seed's module classes, by the Python names ours carry.
SEED_CLASS_NAMES = {
    "condition_UNet": "ConditionalUNet",
    "position_embedding": "SinusoidalPositionEmbedding",
    "basic_block": "DoubleConv",
    "down": "Down",
    "up": "Up",
    "attention": "SelfAttention",
}
_SEED_CLASS = re.compile(r"\b(" + "|".join(SEED_CLASS_NAMES) + r")\(")


def layer_lines(text: str) -> list[str]:
    """Normalise a module printout to its lines, in order, for comparison.

    Ignored: indentation and closing brackets (the seed's printout lost some),
    quoting (``mode='bilinear'`` vs ``mode=bilinear`` across torch versions) and
    the ``bias=True`` that newer torch prints for norm layers, where it is the
    only possible value. Seed class names are mapped to ours.
    """
    out = []
    for raw in text.splitlines():
        line = raw.strip().replace("'", "").replace(", bias=True, track_running_stats", ", track_running_stats")
        line = re.sub(r"((?:LayerNorm|GroupNorm)\(.*(?:elementwise_affine|affine)=True), bias=True", r"\1", line)
        if not line or line.startswith("#") or line == ")":
            continue
        out.append(_SEED_CLASS.sub(lambda m: SEED_CLASS_NAMES[m.group(1)] + "(", line))
    return out


def _printout(name: str) -> list[str]:
    return layer_lines((PRINTOUTS / f"{name}.txt").read_text())


@pytest.mark.parametrize("variant", ["A", "B"])
@pytest.mark.parametrize("part", ["generator", "discriminator"])
def test_dcgan_matches_seed(variant: str, part: str) -> None:
    cls = Generator if part == "generator" else Discriminator
    net = cls(DCGANConfig(variant=variant))
    # The seed printed the inner Sequential only.
    ours = layer_lines("(model): " + repr(net.model))
    assert ours == _printout(f"dcgan_{variant}_{part}")


def test_dann_matches_seed() -> None:
    assert layer_lines(repr(DANN())) == _printout("dann")


def test_unet_matches_seed_completed() -> None:
    ours = layer_lines(repr(ConditionalUNet()))
    expected = _printout("unet")
    assert ours == expected


def test_normaliser_sees_real_differences() -> None:
    wrong = ConditionalUNet()
    wrong.outc = nn.Conv2d(64, 3, kernel_size=3)
    assert layer_lines(repr(wrong)) != _printout("unet")
