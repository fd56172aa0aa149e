"""Inference pipelines: a network (and its schedule) behind one ``__call__``.

Each pipeline takes and returns tensors (images as float in [0, 1]); turning them
into files or HTTP responses is the caller's business.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from contract.digits import DISTILLED
from contract.roles import DIGIT_STUDENT_CHECKPOINT

from .dann import DANN
from .dcgan import Generator
from .scheduler import STOCHASTIC_SAMPLERS, NoiseSchedule, SamplerName
from .unet import NULL_LABEL, ConditionalUNet

ProgressCallback = Callable[[int, int], None]
NoiseFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t, labels) -> predicted noise
FrameCallback = Callable[[int, torch.Tensor], None]  # (wanted paper timestep, image in [0, 1])
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

    def noise(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """The (n, nz, 1, 1) latents that ``__call__`` draws from ``generator``."""
        param = next(self.net.parameters())
        return torch.randn(n, self.net.config.nz, 1, 1, generator=generator, device=param.device, dtype=torch.float32)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> FaceOutput:
        """Latents -> faces. Each face depends on its own latent only (BatchNorm runs on its
        stored statistics in eval mode), so latents of several requests may share one call."""
        param = next(self.net.parameters())
        return FaceOutput(to_unit_range(self.net(z.to(param.device, param.dtype))).cpu())

    def __call__(self, n: int, *, generator: torch.Generator | None = None) -> FaceOutput:
        return self.decode(self.noise(n, generator=generator))


@dataclass
class DigitOutput:
    images: torch.Tensor  # (N, 3, 28, 28) in [0, 1]
    labels: torch.Tensor  # (N,)
    frames: dict[int, torch.Tensor] = field(default_factory=dict)  # t -> first image at t, (3, 28, 28)
    # (paper t, first image) at every position the sampler visited, noise first, when asked
    trajectory: list[tuple[int, torch.Tensor]] = field(default_factory=list)
    nfe: int = 0  # network evaluations per image: a guided step costs two


def guided_steps(timesteps: Sequence[int], guidance_scale: float, interval: tuple[int, int] | None) -> list[bool]:
    """Which sampler steps apply classifier-free guidance.

    ``interval`` = (lo, hi) in paper timesteps (T = pure noise, 0 = the output):
    guidance only where lo <= t <= hi, the limited interval of Kynkaanniemi et al.
    (2024). Guidance at the highest noise levels mostly pulls every sample to the
    same mode and at the lowest changes little, so leaving them out keeps diversity
    and saves one network evaluation per step left out.
    """
    if guidance_scale == 1.0:
        return [False] * len(timesteps)
    if interval is None:
        return [True] * len(timesteps)
    lo, hi = interval
    # Scheduler index t holds the sample at paper time t + 1.
    return [lo <= int(t) + 1 <= hi for t in timesteps]


def count_nfe(
    sampler: str, steps: int | None, guidance_scale: float, interval: tuple[int, int] | None, schedule: NoiseSchedule
) -> int:
    """Network evaluations per image of one sampling configuration, without running it."""
    timesteps = schedule.make_sampler(sampler, steps).timesteps  # type: ignore[arg-type]
    return len(timesteps) + sum(guided_steps(timesteps.tolist(), guidance_scale, interval))


class DigitPipeline:
    """Class-conditional digits from the UNet with any of the schedule's samplers."""

    def __init__(self, unet: ConditionalUNet, schedule: NoiseSchedule) -> None:
        self.unet = unet.eval()
        self.schedule = schedule
        self.memory_format = torch.contiguous_format
        # What predict_noise calls: the module itself, or an inference engine of it (``use_engine``).
        self.noise_model: NoiseFn = self.unet
        # The few-step student of the guided sampler (``sampler="distilled"``), when one is attached.
        self.student: ConditionalUNet | None = None
        self.student_model: NoiseFn | None = None

    def use_engine(self, engine: NoiseFn, *, student: bool = False) -> DigitPipeline:
        """Predict noise with ``engine`` (``models.runtime``: e.g. an OpenVINO compilation of ``unet``, or of the
        student with ``student=True``) from now on."""
        if student:
            self.student_model = engine
        else:
            self.noise_model = engine
        return self

    def attach_student(self, student: ConditionalUNet) -> DigitPipeline:
        """Serve ``sampler="distilled"``: the student distilled from this model's guided sampler (training.distill)."""
        self.student = student.eval()
        self.student_model = self.student
        return self

    def network_for(self, sampler: str) -> NoiseFn:
        """What evaluates the noise for ``sampler``: the student for ``distilled``, else the model itself."""
        if sampler != DISTILLED:
            return self.noise_model
        if self.student_model is None:
            raise ValueError(
                f"sampler={DISTILLED} needs the distilled student ({DIGIT_STUDENT_CHECKPOINT}) beside the model, and "
                "this worker has none: train it (python -m training distill) or pick another sampler"
            )
        return self.student_model

    def use_channels_last(self) -> DigitPipeline:
        """NHWC weights and inputs: oneDNN's convolutions and GroupNorm run faster so on CPUs."""
        self.unet = self.unet.to(memory_format=torch.channels_last)
        self.memory_format = torch.channels_last
        return self

    def predict_noise(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        labels: torch.Tensor,
        guidance_scale: float | None,
        *,
        net: NoiseFn | None = None,
    ) -> torch.Tensor:
        """The noise ``net`` (default: the model's ``noise_model``) predicts at timestep ``t``, guided at
        ``guidance_scale`` (None: one conditional pass). The distilled student learns this with guidance on."""
        net = net if net is not None else self.noise_model
        param = next(self.unet.parameters())
        tt = t.expand(x.shape[0]).to(x.device)
        if guidance_scale is None:
            return net(self._as_input(x, param.dtype), tt, labels).float()
        # Classifier-free guidance: one batched pass over the conditional and null inputs.
        both = net(
            self._as_input(torch.cat([x, x]), param.dtype),
            torch.cat([tt, tt]),
            torch.cat([labels, torch.full_like(labels, NULL_LABEL)]),
        ).float()
        cond, uncond = both.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    def _as_input(self, x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return x.to(dtype).contiguous(memory_format=self.memory_format)

    @torch.inference_mode()
    def __call__(
        self,
        labels: Sequence[int] | torch.Tensor,
        *,
        sampler: SamplerName = "ddpm",
        steps: int | None = None,
        guidance_scale: float = 1.0,
        guidance_interval: tuple[int, int] | None = None,
        generator: torch.Generator | None = None,
        frame_timesteps: Sequence[int] = (),
        callback: ProgressCallback | None = None,
        on_frame: FrameCallback | None = None,
        trajectory: bool = False,
    ) -> DigitOutput:
        """Sample one digit per label.

        ``frame_timesteps`` are paper timesteps (T = pure noise, 0 = the output):
        the first image is kept at each, or at the nearest step the sampler visits,
        and handed to ``on_frame`` as soon as the sampler is there (live previews).
        ``trajectory`` keeps the first image at every visited position (animations).
        ``guidance_scale`` 1 is plain conditional sampling; above 1 is
        classifier-free guidance (eps_null + s * (eps_label - eps_null)), applied on
        the steps inside ``guidance_interval`` (all steps when None).
        """
        device = next(self.unet.parameters()).device
        labels = torch.as_tensor(labels, dtype=torch.long, device=device)
        size = self.unet.config.sample_size
        net = self.network_for(sampler)
        if sampler == DISTILLED:
            guidance_scale = 1.0  # folded into the student's weights
        sched = self.schedule.make_sampler(sampler, steps)
        x = torch.randn(
            labels.shape[0], self.unet.config.in_channels, size, size, generator=generator, device=device
        )
        timesteps = [int(t) for t in sched.timesteps]
        guided = guided_steps(timesteps, guidance_scale, guidance_interval)
        # Only the stochastic schedulers' step() takes a generator (UniPC's has no such argument).
        step_kwargs = {"generator": generator} if sampler in STOCHASTIC_SAMPLERS else {}
        total = len(timesteps)
        # The student's few steps pass most wanted frames by: those are drawn where its DDIM path crosses them.
        path = self.schedule.alphas_cumprod if sampler == DISTILLED else None
        recorder = _FrameRecorder(timesteps, self.schedule.num_train_timesteps, frame_timesteps, trajectory, on_frame,
                                  path_abar=path)
        recorder.keep(0, x)
        for i, t in enumerate(sched.timesteps):
            eps = self.predict_noise(x, t, labels, guidance_scale if guided[i] else None, net=net)
            recorder.keep_between(i, x, eps, int(t))
            x = sched.step(eps, t, x, **step_kwargs).prev_sample
            recorder.keep(i + 1, x)
            if callback is not None:
                callback(i + 1, total)
        return DigitOutput(
            images=to_unit_range(x).cpu(),
            labels=labels.cpu(),
            frames=recorder.frames,
            nfe=total + sum(guided),
            trajectory=recorder.path,
        )


class _FrameRecorder:
    """The first image of a sampling run at the positions ``frame_plan`` picks for the wanted frames (each
    handed to ``on_frame`` at once) and, with ``trajectory``, at every position.

    With ``path_abar`` (a few-step run: the distilled student's), a wanted frame that no position sits on is drawn
    where the run's DDIM path crosses it instead of at the nearest position (``keep_between``)."""

    def __init__(
        self,
        timesteps: Sequence[int],
        num_train_timesteps: int,
        wanted: Sequence[int],
        trajectory: bool,
        on_frame: FrameCallback | None,
        path_abar: torch.Tensor | None = None,
    ) -> None:
        self.times = visit_times(timesteps, num_train_timesteps)
        self.abar = path_abar
        # Outside the run's span (a model of fewer timesteps than the wanted frame) the nearest position stands in.
        inside = [w for w in wanted if w not in self.times and self.times[-1] < w < self.times[0]]
        self.between = inside if path_abar is not None else []
        self.plan = frame_plan(timesteps, num_train_timesteps, [w for w in wanted if w not in self.between])
        self.trajectory = trajectory
        self.on_frame = on_frame
        self.frames: dict[int, torch.Tensor] = {}
        self.path: list[tuple[int, torch.Tensor]] = []

    def keep(self, position: int, x: torch.Tensor) -> None:
        """Keep the first image of ``x``, the sample at ``position``, if a frame is wanted there or the
        trajectory is kept."""
        wants = self.plan.get(position, ())
        if not wants and not self.trajectory:
            return
        image = to_unit_range(x[0]).cpu()
        if self.trajectory:
            self.path.append((self.times[position], image))
        for want in wants:
            self._emit(want, image)

    def _emit(self, want: int, image: torch.Tensor) -> None:
        self.frames[want] = image
        if self.on_frame is not None:
            self.on_frame(want, image)

    def keep_between(self, position: int, x: torch.Tensor, eps: torch.Tensor, t: int) -> None:
        """The wanted frames strictly between ``position`` and the next: where the DDIM step from the first image
        ``x`` (noise prediction ``eps`` at scheduler index ``t``) passes paper time w, the sample
        sqrt(abar_w) x0 + sqrt(1 - abar_w) eps, with x0 clipped as the step clips it."""
        wants = [w for w in self.between if self.times[position + 1] < w < self.times[position]]
        if not wants or self.abar is None:
            return
        abar = self.abar.to(x.device)
        a = abar[t]
        x0 = ((x[:1] - (1 - a).sqrt() * eps[:1]) / a.sqrt()).clamp(-1, 1)
        for want in wants:
            b = abar[want - 1]  # scheduler index w - 1 holds paper time w
            self._emit(want, to_unit_range(b.sqrt() * x0[0] + (1 - b).sqrt() * eps[0]).cpu())


def visit_times(timesteps: Sequence[int], num_train_timesteps: int) -> list[int]:
    """The paper time of each position of a sampling run over scheduler ``timesteps``.

    Position 0 is the initial noise (paper time T); position i is the sample after the
    i-th step, which sits where the next step starts (scheduler index t' holds paper
    time t' + 1), or at 0 after the last.
    """
    total = len(timesteps)
    return [num_train_timesteps] + [timesteps[i + 1] + 1 if i + 1 < total else 0 for i in range(total)]


def frame_plan(timesteps: Sequence[int], num_train_timesteps: int, wanted: Sequence[int]) -> dict[int, list[int]]:
    """Where in a sampling run each wanted frame is taken: position -> the wanted paper timesteps there.

    A wanted timestep takes the nearest position (``visit_times``; the noisier one on a
    tie), so few-step samplers show their nearest visited step.
    """
    times = visit_times(timesteps, num_train_timesteps)
    plan: dict[int, list[int]] = {}
    for want in wanted:
        position = min(range(len(times)), key=lambda k: (abs(times[k] - want), k))
        plan.setdefault(position, []).append(int(want))
    return plan


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


def digits_from_uint8(digits: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, 3) digits -> (N, 3, H, W) float in [0, 1], the input ``DannClassifier`` takes.

    Decoding and resizing happen before, in one torch-free place the API and the
    workers share (``contract.digits_io``); this is only layout and scale.
    """
    if digits.dtype != np.uint8 or digits.ndim != 4 or digits.shape[-1] != 3:
        raise ValueError(f"digits must be uint8 (N, H, W, 3), got {digits.dtype} {digits.shape}")
    return torch.from_numpy(np.ascontiguousarray(digits)).permute(0, 3, 1, 2).float() / 255.0


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
