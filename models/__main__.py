"""``python -m models``: print every network with its parameter count and forward FLOPs."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .dann import DANN
from .dcgan import DCGANConfig, Discriminator, Generator
from .digit_classifier import DigitClassifier
from .unet import ConditionalUNet


def _flops(model: nn.Module, *inputs: torch.Tensor) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(*inputs)
    return counter.get_total_flops()


def main() -> None:
    torch.manual_seed(0)
    z, face, digit = torch.randn(1, 100, 1, 1), torch.randn(1, 3, 64, 64), torch.randn(2, 3, 28, 28)
    t, y = torch.tensor([10, 10]), torch.tensor([3, 3])
    networks: list[tuple[str, nn.Module, tuple]] = [
        ("DCGAN A generator", Generator(DCGANConfig(variant="A")), (z,)),
        ("DCGAN A discriminator", Discriminator(DCGANConfig(variant="A")), (face,)),
        ("DCGAN B generator", Generator(DCGANConfig(variant="B")), (z,)),
        ("DCGAN B discriminator", Discriminator(DCGANConfig(variant="B")), (face,)),
        ("Conditional UNet (DDPM)", ConditionalUNet(), (digit, t, y)),
        ("DANN", DANN(), (digit,)),
        ("Digit evaluation classifier", DigitClassifier(), (digit,)),
    ]
    rows = []
    for title, net, inputs in networks:
        params = sum(p.numel() for p in net.parameters())
        flops = _flops(net, *inputs) / inputs[0].shape[0]
        rows.append((title, params, flops))
        print(f"== {title}: {params:,} parameters, {flops / 1e9:.3f} GFLOP forward per image ==")
        print(net)
        print()
    print(f"{'network':32s} {'parameters':>12s} {'GFLOP/image':>12s}")
    for title, params, flops in rows:
        print(f"{title:32s} {params:>12,d} {flops / 1e9:>12.3f}")


if __name__ == "__main__":
    main()
