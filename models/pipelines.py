"""Inference pipelines: a network (and its schedule) behind one ``__call__``.

Each pipeline takes and returns tensors (images as float in [0, 1]); turning them
into files or HTTP responses is the caller's business.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from PIL import Image

from .dann import DANN
from .dcgan import Generator
from .scheduler import NoiseSchedule, SamplerName
from .unet import NULL_LABEL, ConditionalUNet

ProgressCallback = Callable[[int, int], None]
Normalization = Literal["half", "per_image"]


def to_unit_range(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1) / 2).clamp(0, 1)


@dataclass
class FaceOutput:
    images: torch.Tensor  # (N, 3, 64, 64) in [0, 1]


class FacePipeline:
    """DCGAN faces: z ~ N(0, I) from ``generator`` through the generator network."""

    def __init__(self, generator_net: Generator) -> None:
        self.net = generator_net.eval()

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    @torch.no_grad()
    def __call__(self, n: int, *, generator: torch.Generator | None = None) -> FaceOutput:
        param = next(self.net.parameters())
        z = torch.randn(n, self.net.config.nz, 1, 1, generator=generator, device=param.device, dtype=torch.float32)
        return FaceOutput(to_unit_range(self.net(z.to(param.dtype))).cpu())


@dataclass
class DigitOutput:
    images: torch.Tensor  # (N, 3, 28, 28) in [0, 1]
    labels: torch.Tensor  # (N,)
    frames: dict[int, torch.Tensor] = field(default_factory=dict)  # t -> first image at t, (3, 28, 28)


class DigitPipeline:
    """Class-conditional digits from the UNet with DDPM (ancestral) or DDIM sampling."""

    def __init__(self, unet: ConditionalUNet, schedule: NoiseSchedule) -> None:
        self.unet = unet.eval()
        self.schedule = schedule

    def _predict_noise(
        self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor, guidance_scale: float
    ) -> torch.Tensor:
        dtype = next(self.unet.parameters()).dtype
        tt = t.expand(x.shape[0]).to(x.device)
        if guidance_scale == 1.0:
            return self.unet(x.to(dtype), tt, labels).float()
        # Classifier-free guidance: one batched pass over the conditional and null inputs.
        both = self.unet(
            torch.cat([x, x]).to(dtype), torch.cat([tt, tt]), torch.cat([labels, torch.full_like(labels, NULL_LABEL)])
        ).float()
        cond, uncond = both.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    @torch.no_grad()
    def __call__(
        self,
        labels: Sequence[int] | torch.Tensor,
        *,
        sampler: SamplerName = "ddpm",
        steps: int | None = None,
        guidance_scale: float = 1.0,
        generator: torch.Generator | None = None,
        frame_timesteps: Sequence[int] = (),
        callback: ProgressCallback | None = None,
    ) -> DigitOutput:
        """Sample one digit per label.

        ``frame_timesteps`` are paper timesteps (T = pure noise, 0 = the output):
        the first image is kept at each, or at the nearest step the sampler visits.
        ``guidance_scale`` 1 is plain conditional sampling; above 1 is
        classifier-free guidance (eps_null + s * (eps_label - eps_null)).
        """
        device = next(self.unet.parameters()).device
        labels = torch.as_tensor(labels, dtype=torch.long, device=device)
        size = self.unet.config.sample_size
        sched = self.schedule.make_sampler(sampler, steps)
        x = torch.randn(
            labels.shape[0], self.unet.config.in_channels, size, size, generator=generator, device=device
        )
        T = self.schedule.num_train_timesteps
        ratio = T // len(sched.timesteps)
        visited: dict[int, torch.Tensor] = {T: x[0].clone()} if frame_timesteps else {}
        total = len(sched.timesteps)
        for i, t in enumerate(sched.timesteps):
            eps = self._predict_noise(x, t, labels, guidance_scale)
            x = sched.step(eps, t, x, generator=generator).prev_sample
            if frame_timesteps:
                # After the step at scheduler index t the sample sits at paper time t - ratio + 1.
                visited[max(int(t) - ratio + 1, 0)] = x[0].clone()
            if callback is not None:
                callback(i + 1, total)
        frames = {}
        for want in frame_timesteps:
            nearest = min(visited, key=lambda have: abs(have - want))
            frames[int(want)] = to_unit_range(visited[nearest]).cpu()
        return DigitOutput(images=to_unit_range(x).cpu(), labels=labels.cpu(), frames=frames)


def normalize_digits(x: torch.Tensor, mode: Normalization) -> torch.Tensor:
    """[0, 1] images -> the network's input scale.

    ``half`` maps to [-1, 1] (mean = std = 0.5); ``per_image`` standardises each
    image by its own mean and std, which removes most of the colour and contrast
    gap between MNIST-M, SVHN and USPS.
    """
    if mode == "half":
        return (x - 0.5) / 0.5
    if mode == "per_image":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True).clamp(min=1e-3)
        return (x - mean) / std
    raise ValueError(f"unknown normalization {mode!r}")


def digits_from_pil(images: Sequence[Image.Image], size: int = 28) -> torch.Tensor:
    """Any-size gray or RGB PIL images -> (N, 3, size, size) float in [0, 1]."""
    tensors = []
    for image in images:
        rgb = image.convert("RGB")
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None)
        tensors.append(torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(size, size, 3))
    return torch.stack(tensors).permute(0, 3, 1, 2).float() / 255.0


@dataclass
class Classification:
    probabilities: torch.Tensor  # (N, 10)

    @property
    def labels(self) -> torch.Tensor:
        return self.probabilities.argmax(dim=1)


class DannClassifier:
    """The DANN's feature extractor and class head on target-domain digits."""

    def __init__(self, model: DANN, normalize: Normalization = "half") -> None:
        self.model = model.eval()
        self.normalize = normalize

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> Classification:
        """``images``: (N, 3, 28, 28) float in [0, 1]."""
        param = next(self.model.parameters())
        x = normalize_digits(images.to(param.device, torch.float32), self.normalize).to(param.dtype)
        logits = self.model.classify(x).float()
        return Classification(F.softmax(logits, dim=1).cpu())
