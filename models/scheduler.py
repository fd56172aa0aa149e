"""The diffusion noise schedule: forward noising, the training loss, and samplers.

The schedule owns no weights, so nothing here is averaged by EMA or saved with the
network; its config travels in the model card instead. Sampling steps come from
``diffusers``' DDPM and DDIM schedulers built from that one config, so training
(``add_noise``) and sampling (``step``) agree on every constant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from .unet import NULL_LABEL

SamplerName = Literal["ddpm", "ddim"]


@dataclass(frozen=True)
class NoiseScheduleConfig:
    num_train_timesteps: int = 400
    beta_start: float = 1e-4
    beta_end: float = 0.02
    beta_schedule: str = "linear"
    clip_sample: bool = True  # clip the predicted x0 to [-1, 1] while sampling

    def to_dict(self) -> dict:
        return asdict(self)


class NoiseSchedule:
    """T-step linear-beta schedule of Ho et al. (2020), with the seed's T=400."""

    def __init__(self, config: NoiseScheduleConfig = NoiseScheduleConfig()) -> None:
        self.config = config
        self._ddpm = self.make_sampler("ddpm")

    @property
    def num_train_timesteps(self) -> int:
        return self.config.num_train_timesteps

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        return self._ddpm.alphas_cumprod

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I), t indexed 0..T-1."""
        return self._ddpm.add_noise(x0, noise, t)

    def training_loss(
        self,
        unet: nn.Module,
        x0: torch.Tensor,
        labels: torch.Tensor,
        *,
        label_dropout: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Smooth-L1 between true and predicted noise (the seed's loss) at uniform random t.

        ``label_dropout`` replaces that share of labels by the null label, so one
        network learns both p(x|y) and p(x) for classifier-free guidance.
        """
        n, device = x0.shape[0], x0.device
        t = torch.randint(0, self.num_train_timesteps, (n,), device=device, generator=generator)
        noise = torch.randn(x0.shape, device=device, generator=generator, dtype=x0.dtype)
        if label_dropout > 0:
            drop = torch.rand(n, device=device, generator=generator) < label_dropout
            labels = torch.where(drop, torch.full_like(labels, NULL_LABEL), labels)
        pred = unet(self.add_noise(x0, noise, t), t, labels)
        return F.smooth_l1_loss(pred.float(), noise.float())

    def make_sampler(self, name: SamplerName = "ddpm", steps: int | None = None) -> DDPMScheduler | DDIMScheduler:
        """A fresh diffusers scheduler with its timesteps set; one per sampling call.

        ``ddpm`` is ancestral sampling over all T steps (``steps`` ignored);
        ``ddim`` is the deterministic (eta=0) sampler of Song et al. on ``steps``
        steps, spaced so that the first step starts from pure noise at t=T.
        """
        c = self.config
        common = dict(
            num_train_timesteps=c.num_train_timesteps,
            beta_start=c.beta_start,
            beta_end=c.beta_end,
            beta_schedule=c.beta_schedule,
            clip_sample=c.clip_sample,
            prediction_type="epsilon",
        )
        if name == "ddpm":
            sched = DDPMScheduler(variance_type="fixed_small", **common)
            sched.set_timesteps(c.num_train_timesteps)
        elif name == "ddim":
            if steps is None or not 1 <= steps <= c.num_train_timesteps:
                raise ValueError(f"ddim needs 1 <= steps <= {c.num_train_timesteps}, got {steps}")
            sched = DDIMScheduler(timestep_spacing="trailing", set_alpha_to_one=True, **common)
            sched.set_timesteps(steps)
        else:
            raise ValueError(f"unknown sampler {name!r}: use 'ddpm' or 'ddim'")
        return sched
