"""Distil the served, guided digit sampler into a student that needs a few network evaluations per image.

    python -m training distill --max-minutes 70             # 3,000 teacher samples, then the student (CPU)
    python -m training distill --resume --max-minutes 60     # continue it, exactly

The teacher is the diffusion model as it is served: its card's default sampling
configuration (UniPC-5 with classifier-free guidance 5: 10 evaluations per image).
The student is a copy of the teacher's UNet that predicts, in one pass, the noise the
teacher's two guided passes predict (guidance distillation, stage one of Meng et al.
2023, "On Distillation of Guided Diffusion Models"), and is sampled without guidance
by the same solver over ``DISTILLED_STEPS`` steps: 4 evaluations per image.

It is trained where the solver evaluates it: at each of its timesteps t, on states
x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps drawn afresh every step from the teacher's
own guided samples x0 (the distribution it serves, not the dataset's), against the
teacher's guided noise prediction at that state. The target is a fixed function of
(x_t, t, label), so unlike a map from noise to digit it needs no long training: the
student starts as the teacher's conditional network and learns the guidance term.

Teacher samples are drawn with seeds of their own (never an evaluation seed), kept in
``<out>/pairs/`` chunk by chunk, so a cut run resumes its data as well as its steps.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.optimization import get_constant_schedule_with_warmup
from ema_pytorch import EMA

from contract.digits import DISTILLED, DISTILLED_SOLVER, DISTILLED_STEPS
from contract.roles import DIGIT_CHECKPOINT, DIGIT_STUDENT_CHECKPOINT
from contract.settings import REPO
from models.checkpoints import load_model
from models.pipelines import DigitPipeline
from models.runtime.engines import build_engine
from models.runtime.export import export_onnx
from models.scheduler import NoiseSchedule, NoiseScheduleConfig, SamplingConfig
from models.unet import ConditionalUNet

from .common import add_common_args, save_grid
from .lineage import resolve_checkpoint
from .trainer import Task, Trainer

DEFAULT_NAME = DIGIT_STUDENT_CHECKPOINT
# Teacher samples take seeds from here on, one per chunk: far from the evaluation seeds (0, 1).
PAIR_SEED_BASE = 10_000
PAIR_CHUNK = 100
TEACHER_ENGINES = ("torch", "openvino")


def add_args(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, epochs=12, batch_size=32, lr=1e-4)
    parser.add_argument("--teacher", type=Path, default=Path("checkpoints") / DIGIT_CHECKPOINT, metavar="DIR_OR_NAME",
                        help="the served diffusion checkpoint (its card's default sampling is what is distilled)")
    parser.add_argument("--pairs", type=int, default=3000,
                        help="teacher samples whose noised states the student learns on, balanced over labels")
    parser.add_argument("--teacher-engine", choices=TEACHER_ENGINES, default="openvino",
                        help="what computes the teacher's guided targets: OpenVINO fp32 (the same numbers within "
                             "1e-4, about twice as fast on a CPU) or eager torch")
    parser.add_argument("--ema-decay", type=float, default=0.995, help="EMA decay of the shipped student")
    parser.add_argument("--warmup-steps", type=int, default=50, help="linear learning-rate warm-up")
    parser.add_argument("--sample-every", type=int, default=250, help="steps between sample grids (0: none)")
    parser.add_argument("--save-every-minutes", type=float, default=10.0, help="wall time between resume states")


def teacher_fingerprint(teacher: ConditionalUNet, sampling: SamplingConfig) -> str:
    """What the teacher's samples depend on: its weights and its sampling configuration."""
    h = hashlib.sha256(repr(sorted(sampling.to_dict().items())).encode())
    for key, tensor in sorted(teacher.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def teacher_samples(pipe: DigitPipeline, sampling: SamplingConfig, n: int, folder: Path, fingerprint: str) -> dict:
    """``n`` (label, x0) pairs sampled by the teacher, made in chunks that a later run reuses.

    Labels cycle 0..9 so every chunk is balanced. A chunk made by another teacher or
    configuration (another fingerprint) is an error, not silently mixed in.
    """
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for k in range((n + PAIR_CHUNK - 1) // PAIR_CHUNK):
        path = folder / f"chunk_{k:04d}.pt"
        if path.is_file():
            chunk = torch.load(path)
            if chunk["fingerprint"] != fingerprint:
                raise SystemExit(f"{path} was made by another teacher or sampling configuration: use another --out")
        else:
            chunk = _make_chunk(pipe, sampling, k, min(PAIR_CHUNK, n - k * PAIR_CHUNK)) | {"fingerprint": fingerprint}
            torch.save(chunk, path.with_suffix(".tmp"))
            path.with_suffix(".tmp").rename(path)
            print(f"[distill] teacher samples {min(n, (k + 1) * PAIR_CHUNK)}/{n}", flush=True)
        parts.append(chunk)
    return {key: torch.cat([p[key] for p in parts])[:n] for key in ("labels", "x0")}


def _make_chunk(pipe: DigitPipeline, sampling: SamplingConfig, index: int, size: int) -> dict:
    labels = torch.arange(size) % 10
    gen = torch.Generator().manual_seed(PAIR_SEED_BASE + index)
    out = pipe(labels, sampler=sampling.sampler, steps=sampling.steps, guidance_scale=sampling.guidance_scale,
               guidance_interval=sampling.guidance_interval, generator=gen)
    return {"labels": labels, "x0": out.images * 2 - 1}


class DistillTask(Task):
    """The student's regression onto the teacher's guided noise at the solver's timesteps; its EMA ships."""

    show_every = 10
    log_every = 20

    def __init__(self, args: argparse.Namespace, trainer: Trainer) -> None:
        self.args, self.acc = args, trainer.acc
        directory, name = resolve_checkpoint(args.teacher, DIGIT_CHECKPOINT)
        teacher, self.teacher_card = load_model(directory, name)
        assert isinstance(teacher, ConditionalUNet), f"{name} is not a diffusion UNet"
        self.teacher_name = name
        self.schedule = NoiseSchedule(NoiseScheduleConfig(**self.teacher_card.get("schedule", {})))
        self.sampling = SamplingConfig.card_default(self.teacher_card)
        if self.sampling.guidance_interval is not None:
            raise SystemExit("the teacher's default guides only inside an interval: a student of it would have to "
                             "learn where guidance applies; distil a configuration that guides every step")
        self.fingerprint = teacher_fingerprint(teacher, self.sampling)
        self.teacher = DigitPipeline(teacher.eval().requires_grad_(False), self.schedule)
        if args.teacher_engine != "torch":
            onnx = lambda: export_onnx(teacher, name, REPO / "var" / "cache" / "onnx")  # noqa: E731
            self.teacher.use_engine(build_engine(args.teacher_engine, "fp32", teacher, onnx))
        samples = teacher_samples(self.teacher, self.sampling, args.pairs, trainer.out / "pairs", self.fingerprint)
        self.labels, self.x0 = samples["labels"], samples["x0"]
        self.n_items = len(self.labels)
        student = copy.deepcopy(teacher).train().requires_grad_(True)  # starts as the teacher's conditional network
        self.ema = EMA(student, beta=args.ema_decay, update_after_step=0, update_every=1)
        self.ema.step, self.ema.initted = self.ema.step.cpu(), self.ema.initted.cpu()
        self.ema.initted.fill_(True)
        opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
        self.warmup = get_constant_schedule_with_warmup(opt, num_warmup_steps=args.warmup_steps)
        self.model, self.opt = self.acc.prepare(student, opt)
        # Where the served solver evaluates the student, and nowhere else.
        self.timesteps = self.schedule.make_sampler(DISTILLED, DISTILLED_STEPS).timesteps.long()
        self.abar = self.schedule.alphas_cumprod.float()
        self.gen = trainer.gen

    def checkpointed(self) -> dict:
        return {"model": self.model, "ema": self.ema, "opt": self.opt, "lr_sched": self.warmup}

    @torch.no_grad()
    def targets(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The teacher's guided noise prediction for each state ``x`` at its timestep ``t``."""
        target = torch.empty_like(x)
        for step_t in t.unique():  # the teacher's pipeline takes one timestep per call
            rows = t == step_t
            target[rows] = self.teacher.predict_noise(x[rows], step_t, labels[rows], self.sampling.guidance_scale)
        return target

    def step(self, batch: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        assert batch is not None
        labels, x0 = self.labels[batch], self.x0[batch]
        # Every solver timestep in every batch, in equal shares.
        t = self.timesteps[torch.arange(len(batch)) % len(self.timesteps)]
        noise = torch.randn(x0.shape, generator=self.gen)
        a = self.abar[t].view(-1, 1, 1, 1)
        x = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = self.targets(x, t, labels)
        eps = self.model(x, t, labels)
        loss = F.mse_loss(eps, target)
        self.opt.zero_grad(set_to_none=True)
        self.acc.backward(loss)
        self.acc.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.warmup.step()
        self.ema.update()
        # The error the solver's first update carries into its x0 estimate: what decides the digit.
        first = t == self.timesteps[0]
        x0_error = ((eps - target)[first].detach() ** 2).mean() * (1 - a[first]).mean() / a[first].mean()
        return {"loss": loss.detach(), "x0_mse_first": x0_error}

    def log_fields(self) -> dict:
        return {"lr": self.warmup.get_last_lr()[0]}

    def shipped(self) -> ConditionalUNet:
        return self.ema.ema_model

    def after_step(self, trainer: Trainer, losses: dict[str, torch.Tensor]) -> None:
        if self.args.sample_every and trainer.step % self.args.sample_every == 0:
            with trainer.speed.paused():
                self._grid(trainer.out / "samples" / f"step_{trainer.step:06d}.png")

    def _grid(self, path: Path) -> None:
        pipe = DigitPipeline(self.teacher.unet, self.schedule).attach_student(self.ema.ema_model)
        labels = torch.arange(10).repeat_interleave(8)
        out = pipe(labels, sampler=DISTILLED, generator=torch.Generator().manual_seed(0))
        self.ema.ema_model.train()
        save_grid(out.images, path, nrow=8)

    def card(self, card: dict, trainer: Trainer) -> dict:
        args = self.args
        card["training"].update(
            method="guidance distillation (Meng et al. 2023, stage one): one pass predicts the teacher's guided noise, "
                   "trained at the served solver's timesteps on noised teacher samples (see training/distill.py)",
            teacher=self.teacher_name, teacher_sampling=self.sampling.to_dict(), teacher_fingerprint=self.fingerprint,
            teacher_engine=f"{args.teacher_engine} fp32", teacher_samples=self.n_items,
            sample_seeds=f"{PAIR_SEED_BASE}.. (one per {PAIR_CHUNK} samples)",
            timesteps=[int(t) for t in self.timesteps], ema_decay=args.ema_decay, warmup_steps=args.warmup_steps,
            optimizer="AdamW", loss="MSE of the noise against the teacher's guided noise",
            final_loss_ema=trainer.smoothed.get("loss"),
        )
        card["data"] = {"dataset": "the teacher's own samples, noised afresh each step (no dataset pass)",
                        "samples": self.n_items}
        card["schedule"] = self.schedule.config.to_dict()
        solver = SamplingConfig(DISTILLED)
        card["sampling"] = {"default": solver.to_dict() | {"solver": DISTILLED_SOLVER, "nfe": solver.steps}}
        return card


def train(args: argparse.Namespace) -> dict:
    name = args.name or DEFAULT_NAME
    trainer = Trainer(args, name)
    return trainer.fit(DistillTask(args, trainer))
