"""Distil the served, guided digit sampler into a student that needs a few network evaluations per image.

    python -m training distill --max-minutes 90             # 5,000 teacher pairs, then the student (CPU)
    python -m training distill --resume --max-minutes 60     # continue it, exactly

The teacher is the diffusion model as it is served: its card's default sampling
configuration (UniPC-5 with classifier-free guidance 5: 10 evaluations per image).
The student is a copy of the teacher's UNet, run without guidance by DDIM over
``--student-steps`` steps (4: at most 4 evaluations per image, guidance folded in).

What it learns is the teacher's map from noise to digit (knowledge distillation of
Luhman & Luhman 2021, taken to several steps as in progressive distillation,
Salimans & Ho 2022): from the teacher's own samples, pairs (x_T, label) -> x0*, and
no pass over the dataset. At student step i it predicts x0* from
- the state DDIM would reach with a perfect student (on the straight DDIM path
  between x0* and the noise direction of x_T; exact for i = 0), or
- with probability ``--on-policy``, the state the student itself reaches from x_T,
  so that it learns to steer back from its own errors rather than compound them.
The loss is the squared error of x0 plus that of the implied noise, the "SNR + 1"
weighting of Salimans & Ho: neither the noisiest step nor the last one dominates.

Teacher pairs are drawn with seeds of their own (never an evaluation seed), kept in
``<out>/pairs/`` chunk by chunk, so a cut run resumes its data as well as its steps.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers.optimization import get_constant_schedule_with_warmup
from ema_pytorch import EMA

from contract.digits import DISTILLED_STEPS
from contract.roles import DIGIT_CHECKPOINT, DIGIT_STUDENT_CHECKPOINT
from models.checkpoints import load_model
from models.pipelines import DigitPipeline
from models.scheduler import NoiseSchedule, NoiseScheduleConfig, SamplingConfig
from models.unet import ConditionalUNet

from .common import add_common_args, save_grid
from .lineage import resolve_checkpoint
from .trainer import Task, Trainer

DEFAULT_NAME = DIGIT_STUDENT_CHECKPOINT
# Teacher pairs take seeds from here on, one per chunk: far from the evaluation seeds (0, 1).
PAIR_SEED_BASE = 10_000
PAIR_CHUNK = 100


def add_args(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, epochs=4, batch_size=32, lr=5e-5)
    parser.add_argument("--teacher", type=Path, default=Path("checkpoints") / DIGIT_CHECKPOINT, metavar="DIR_OR_NAME",
                        help="the served diffusion checkpoint (its card's default sampling is what is distilled)")
    parser.add_argument("--pairs", type=int, default=5000,
                        help="teacher samples (noise, label -> digit), balanced over labels")
    parser.add_argument("--student-steps", type=int, default=DISTILLED_STEPS,
                        help="DDIM steps of the student (= its evaluations per image)")
    parser.add_argument("--on-policy", type=float, default=0.5,
                        help="share of batches whose inputs are the student's own states")
    parser.add_argument("--ema-decay", type=float, default=0.995, help="EMA decay of the shipped student")
    parser.add_argument("--warmup-steps", type=int, default=50, help="linear learning-rate warm-up")
    parser.add_argument("--sample-every", type=int, default=250, help="steps between sample grids (0: none)")
    parser.add_argument("--save-every-minutes", type=float, default=10.0, help="wall time between resume states")


def teacher_fingerprint(teacher: ConditionalUNet, sampling: SamplingConfig) -> str:
    """What the pairs depend on: the teacher's weights and its sampling configuration."""
    h = hashlib.sha256(repr(sorted(sampling.to_dict().items())).encode())
    for key, tensor in sorted(teacher.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def teacher_pairs(pipe: DigitPipeline, sampling: SamplingConfig, n: int, folder: Path, fingerprint: str) -> dict:
    """``n`` (x_T, label, x0*) triples from the teacher, made in chunks that a later run reuses.

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
            print(f"[distill] teacher pairs {min(n, (k + 1) * PAIR_CHUNK)}/{n}", flush=True)
        parts.append(chunk)
    return {key: torch.cat([p[key] for p in parts])[:n] for key in ("noise", "labels", "x0")}


def _make_chunk(pipe: DigitPipeline, sampling: SamplingConfig, index: int, size: int) -> dict:
    labels = torch.arange(size) % 10
    gen = torch.Generator().manual_seed(PAIR_SEED_BASE + index)
    side = pipe.unet.config.sample_size
    # The pipeline draws its starting noise first from the generator: the same draw, kept.
    same_draw = torch.Generator().set_state(gen.get_state())
    noise = torch.randn(size, pipe.unet.config.in_channels, side, side, generator=same_draw)
    out = pipe(labels, sampler=sampling.sampler, steps=sampling.steps, guidance_scale=sampling.guidance_scale,
               guidance_interval=sampling.guidance_interval, generator=gen)
    return {"noise": noise, "labels": labels, "x0": out.images * 2 - 1}


class DistillTask(Task):
    """The student's x0 regression onto the teacher's samples; its EMA ships."""

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
        self.fingerprint = teacher_fingerprint(teacher, self.sampling)
        teacher_pipe = DigitPipeline(teacher, self.schedule).use_channels_last()
        pairs = teacher_pairs(teacher_pipe, self.sampling, args.pairs, trainer.out / "pairs", self.fingerprint)
        self.noise, self.labels, self.x0 = pairs["noise"], pairs["labels"], pairs["x0"]
        self.n_items = len(self.labels)
        student = teacher.train()  # the student starts as the teacher: the unguided network, one pass per step
        self.ema = EMA(student, beta=args.ema_decay, update_after_step=0, update_every=1)
        self.ema.step, self.ema.initted = self.ema.step.cpu(), self.ema.initted.cpu()
        self.ema.initted.fill_(True)
        opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
        self.warmup = get_constant_schedule_with_warmup(opt, num_warmup_steps=args.warmup_steps)
        self.model, self.opt = self.acc.prepare(student, opt)
        self.sampler = self.schedule.make_sampler("ddim", args.student_steps)
        self.abar = self.schedule.alphas_cumprod.float()
        self.gen = trainer.gen

    def checkpointed(self) -> dict:
        return {"model": self.model, "ema": self.ema, "opt": self.opt, "lr_sched": self.warmup}

    def _inputs(
        self, noise: torch.Tensor, labels: torch.Tensor, x0: torch.Tensor, i: int, on_policy: bool
    ) -> torch.Tensor:
        """The state at student step ``i``: on the ideal DDIM path, or where the student itself gets."""
        steps = self.sampler.timesteps
        if not on_policy or i == 0:
            a_T, a_i = self.abar[steps[0]], self.abar[steps[i]]
            direction = (noise - a_T.sqrt() * x0) / (1 - a_T).sqrt()  # the noise that DDIM carries along
            return a_i.sqrt() * x0 + (1 - a_i).sqrt() * direction if i else noise
        x = noise
        self.model.eval()
        with torch.no_grad():
            for t in steps[:i]:
                x = self.sampler.step(self.model(x, t.expand(len(x)), labels), t, x).prev_sample
        self.model.train()
        return x

    def step(self, batch: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        assert batch is not None
        i = step % self.args.student_steps  # every step position equally often
        on_policy = bool(torch.rand((), generator=self.gen) < self.args.on_policy)
        noise, labels, x0 = self.noise[batch], self.labels[batch], self.x0[batch]
        x = self._inputs(noise, labels, x0, i, on_policy)
        t = self.sampler.timesteps[i]
        a = self.abar[t]
        eps_target = (x - a.sqrt() * x0) / (1 - a).sqrt()
        eps = self.model(x, t.expand(len(x)), labels)
        x0_pred = (x - (1 - a).sqrt() * eps) / a.sqrt()
        loss_x0, loss_eps = F.mse_loss(x0_pred, x0), F.mse_loss(eps, eps_target)
        loss = loss_x0 + loss_eps
        self.opt.zero_grad(set_to_none=True)
        self.acc.backward(loss)
        self.acc.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.warmup.step()
        self.ema.update()
        return {"loss": loss.detach(), "x0_mse": loss_x0.detach()}

    def log_fields(self) -> dict:
        return {"lr": self.warmup.get_last_lr()[0]}

    def shipped(self) -> ConditionalUNet:
        return self.ema.ema_model

    def after_step(self, trainer: Trainer, losses: dict[str, torch.Tensor]) -> None:
        if self.args.sample_every and trainer.step % self.args.sample_every == 0:
            with trainer.speed.paused():
                self._grid(trainer.out / "samples" / f"step_{trainer.step:06d}.png")

    def _grid(self, path: Path) -> None:
        net = self.ema.ema_model.eval()
        labels = torch.arange(10).repeat_interleave(8)
        out = DigitPipeline(net, self.schedule)(labels, sampler="ddim", steps=self.args.student_steps,
                                                generator=torch.Generator().manual_seed(0))
        save_grid(out.images, path, nrow=8)

    def card(self, card: dict, trainer: Trainer) -> dict:
        args = self.args
        card["training"].update(
            method="x0 distillation of the guided teacher's sampler (Luhman & Luhman 2021), several student steps, "
                   "on-policy states (see training/distill.py)",
            teacher=self.teacher_name, teacher_sampling=self.sampling.to_dict(), teacher_fingerprint=self.fingerprint,
            teacher_pairs=self.n_items, pair_seeds=f"{PAIR_SEED_BASE}.. (one per {PAIR_CHUNK} pairs)",
            on_policy=args.on_policy, ema_decay=args.ema_decay, warmup_steps=args.warmup_steps,
            optimizer="AdamW", loss="MSE of x0 + MSE of the implied noise", final_loss_ema=trainer.smoothed.get("loss"),
        )
        card["data"] = {"dataset": "the teacher's own samples (no dataset pass)", "pairs": self.n_items}
        card["schedule"] = self.schedule.config.to_dict()
        card["sampling"] = {"default": {"sampler": "ddim", "steps": args.student_steps, "guidance_scale": 1.0,
                                        "guidance_interval": None, "nfe": args.student_steps}}
        return card


def train(args: argparse.Namespace) -> dict:
    name = args.name or DEFAULT_NAME
    trainer = Trainer(args, name)
    return trainer.fit(DistillTask(args, trainer))
