"""The diffusion noise schedule: forward noising, the training loss, and samplers.

The schedule owns no weights, so nothing here is averaged by EMA or saved with the
network; its config travels in the model card instead. Sampling steps come from
``diffusers``' schedulers (DDPM, DDIM, DPM-Solver++ and UniPC) built from that one
config, so training (``add_noise``) and sampling (``step``) agree on every constant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import nn

from contract.digits import DISTILLED, DISTILLED_SOLVER, DISTILLED_STEPS, NUM_TRAIN_TIMESTEPS, SAMPLERS

from .unet import NULL_LABEL

SamplerName = Literal[SAMPLERS]  # type: ignore[valid-type]
# Samplers that draw fresh noise at each step (and so take the seed's generator in ``step``).
STOCHASTIC_SAMPLERS = frozenset({"ddpm", "dpmpp-2m-sde"})


@dataclass(frozen=True)
class NoiseScheduleConfig:
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS
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

    def make_sampler(self, name: SamplerName = "ddpm", steps: int | None = None) -> SchedulerMixin:
        """A fresh diffusers scheduler with its timesteps set; one per sampling call.

        ``ddpm`` is ancestral sampling over all T steps (``steps`` ignored). ``distilled`` is
        DISTILLED_SOLVER, at whose timesteps its student network was trained (``training.distill``). The others
        run ``steps`` steps spaced so that the first starts from pure noise at t=T
        ("trailing" spacing): ``ddim`` is the deterministic (eta=0) sampler of Song et
        al.; ``dpmpp-2m`` is DPM-Solver++(2M) and ``dpmpp-2m-sde`` its stochastic
        variant (Lu et al. 2022); ``unipc`` is UniPC's predictor-corrector of order 2
        (Zhao et al. 2023). The multistep solvers reuse earlier network outputs, so
        they reach in 5-10 steps what DDIM needs 25 or more for. Guided sampling
        favours order 2 over 3 for them, as both papers recommend.
        """
        c = self.config
        common = dict(
            num_train_timesteps=c.num_train_timesteps,
            beta_start=c.beta_start,
            beta_end=c.beta_end,
            beta_schedule=c.beta_schedule,
            prediction_type="epsilon",
        )
        if name == "ddpm":
            sched = DDPMScheduler(variance_type="fixed_small", clip_sample=c.clip_sample, **common)
            sched.set_timesteps(c.num_train_timesteps)
            return sched
        if name not in SAMPLERS:
            raise ValueError(f"unknown sampler {name!r}: use one of {', '.join(SAMPLERS)}")
        if name == DISTILLED:  # the student's trained steps unless a caller names them
            name, steps = DISTILLED_SOLVER, steps or DISTILLED_STEPS
        if steps is None or not 1 <= steps <= c.num_train_timesteps:
            raise ValueError(f"{name} needs 1 <= steps <= {c.num_train_timesteps}, got {steps}")
        if name == "ddim":
            sched = DDIMScheduler(
                timestep_spacing="trailing", set_alpha_to_one=True, clip_sample=c.clip_sample, **common
            )
        elif name in ("dpmpp-2m", "dpmpp-2m-sde"):
            # DPM-Solver++ has no clip_sample; dynamic thresholding of x0 at 1.0 is its
            # equivalent for data in [-1, 1] (Saharia et al.).
            sched = DPMSolverMultistepScheduler(
                algorithm_type="dpmsolver++" if name == "dpmpp-2m" else "sde-dpmsolver++",
                solver_order=2,
                lower_order_final=True,
                timestep_spacing="trailing",
                thresholding=c.clip_sample,
                sample_max_value=1.0,
                **common,
            )
        else:
            sched = UniPCMultistepScheduler(
                solver_order=2,
                predict_x0=True,
                solver_type="bh2",
                lower_order_final=True,
                timestep_spacing="trailing",
                thresholding=c.clip_sample,
                sample_max_value=1.0,
                **common,
            )
        sched.set_timesteps(steps)
        return sched


# Steps a sampler runs when a request names it without ``steps``.
DEFAULT_STEPS = {"ddim": 25, "dpmpp-2m": 10, "dpmpp-2m-sde": 10, "unipc": 10, DISTILLED: DISTILLED_STEPS}


@dataclass(frozen=True)
class SamplingConfig:
    """One way to sample the model: what the card recommends and what a request asks for.

    ``guidance_interval`` = (lo, hi) in paper timesteps applies classifier-free
    guidance only there (None: on every step); see ``models.pipelines.guided_steps``.
    """

    sampler: SamplerName = "ddpm"
    steps: int | None = None
    guidance_scale: float = 1.0
    guidance_interval: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}: use one of {', '.join(SAMPLERS)}")
        if self.sampler == "ddpm" and self.steps is not None:
            object.__setattr__(self, "steps", None)  # ancestral sampling always runs every step
        if self.sampler == DISTILLED:  # its student runs its trained steps, guidance folded into its weights
            object.__setattr__(self, "steps", self.steps or DISTILLED_STEPS)
            object.__setattr__(self, "guidance_scale", 1.0)
            object.__setattr__(self, "guidance_interval", None)
        if self.guidance_interval is not None:
            lo, hi = (int(v) for v in self.guidance_interval)
            if lo > hi:
                raise ValueError(f"guidance interval ({lo}, {hi}) is empty: its start must not exceed its end")
            object.__setattr__(self, "guidance_interval", (lo, hi))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["guidance_interval"] = list(self.guidance_interval) if self.guidance_interval else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> SamplingConfig:
        interval = d.get("guidance_interval")
        return cls(
            sampler=d.get("sampler", "ddpm"),
            steps=d.get("steps"),
            guidance_scale=float(d.get("guidance_scale", 1.0)),
            guidance_interval=tuple(interval) if interval else None,  # type: ignore[arg-type]
        )

    @classmethod
    def card_default(cls, card: dict) -> SamplingConfig:
        """The model card's recommended configuration (older cards: their DDIM settings)."""
        sampling = card.get("sampling", {})
        if "default" in sampling:
            return cls.from_dict(sampling["default"])
        return cls(
            sampler=sampling.get("few_step_sampler", "ddim"),
            steps=int(sampling.get("few_step_steps", DEFAULT_STEPS["ddim"])),
            guidance_scale=float(sampling.get("guidance_scale", 1.0)),
        )

    @classmethod
    def served_default(cls, card: dict, *, has_student: bool) -> SamplingConfig:
        """What a request that names no sampling choice gets: the distilled student where the card's measurement
        made it the default (``sampling.student.default``, ``training.evaluate digits``) and it is loaded, else
        ``card_default``, the guided configuration the student was distilled from."""
        student = card.get("sampling", {}).get("student", {})
        if has_student and student.get("default") is True:
            return cls(DISTILLED, int(student.get("steps", DISTILLED_STEPS)))
        return cls.card_default(card)

    def override(
        self,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        guidance_interval: tuple[int, int] | None = None,
    ) -> SamplingConfig:
        """This configuration with a request's choices on top.

        A request that names another sampler without ``steps`` gets that sampler's
        usual step count; guidance scale and interval default to this config's.
        """
        name = sampler or self.sampler
        if steps is None:
            steps = self.steps if name == self.sampler else DEFAULT_STEPS.get(name)
        return SamplingConfig(
            sampler=name,  # type: ignore[arg-type]
            steps=steps,
            guidance_scale=self.guidance_scale if guidance_scale is None else guidance_scale,
            guidance_interval=self.guidance_interval if guidance_interval is None else guidance_interval,
        )
