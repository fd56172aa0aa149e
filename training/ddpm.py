"""Train the class-conditional DDPM on MNIST-M digits, with EMA weights and label dropout.

    python -m training ddpm --epochs 39          # the seed's schedule (GPU)
    python -m training ddpm --base-channels 32 --max-minutes 30   # what a CPU affords
    python -m training ddpm --init-from checkpoints/ddpm-digits --warmup-steps 100 --max-minutes 5   # continue the shipped model

Classifier-free guidance comes from ``--label-dropout``: that share of labels is
replaced by the null label, so the same network also learns unconditional noise
prediction. The shipped checkpoint is the EMA network alone.

Where a run's network comes from, first match wins:
1. ``--resume`` with ``<out>/state.pt`` present: that state (network, EMA, optimiser,
   step). Given together with ``--init-from``, the state must have been started
   from that same checkpoint (same lineage), else the run stops with an error;
   this lets a cut continuation be restarted with its own command line.
2. ``--init-from``: the checkpoint's weights start both the trained network and
   its EMA copy; the optimiser is fresh, with ``--warmup-steps`` of learning-rate
   warm-up. The network and schedule come from its card, and flags that disagree
   are an error; its serving defaults (``sampling``) are carried over.
3. Otherwise a fresh network from the flags.

Every card lists the runs behind its model in ``training.lineage`` (oldest first,
this run last) with ``total_steps``/``total_epochs``/``total_wall_time_s`` over
them; ``steps`` and ``wall_time_s`` are this run's. The loop, resume states and
the ``completed`` / ``stopped_early`` / ``stopped_at`` fields are the shared
:class:`training.trainer.Trainer`'s.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import torch
from diffusers.optimization import get_constant_schedule_with_warmup
from ema_pytorch import EMA
from tqdm import tqdm

from contract.roles import DIGIT_CHECKPOINT
from models.checkpoints import load_model, read_card
from models.pipelines import DigitPipeline
from models.scheduler import NoiseSchedule, NoiseScheduleConfig, SamplingConfig
from models.unet import ConditionalUNet, UNetConfig

from .common import add_common_args, save_grid
from .data.datasets import load_digits
from .lineage import lineage_of, resolve_checkpoint, run_entry, totals
from .timing import StepProfiler
from .trainer import Task, Trainer

DEFAULT_NAME = DIGIT_CHECKPOINT
DEFAULT_SAMPLING = {"guidance_scale": 2.0, "few_step_sampler": "ddim", "few_step_steps": 25}


def add_args(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, epochs=39, batch_size=16, lr=1e-4)
    # None: taken from --init-from's card or the resumed state, else the seed's value.
    parser.add_argument("--base-channels", type=int, default=None, help="UNet width (default 64, the seed's; with --init-from, the card's)")
    parser.add_argument("--timesteps", type=int, default=None, help="diffusion steps T (default 400; with --init-from, the card's)")
    parser.add_argument("--init-from", type=Path, default=None, metavar="DIR_OR_NAME",
                        help="start from a shipped checkpoint's EMA weights: checkpoints/ddpm-digits, or a folder holding <name>.json; "
                             "fresh optimiser with --warmup-steps; --resume with an existing state.pt takes precedence (same lineage required)")
    parser.add_argument("--label-dropout", type=float, default=0.1, help="share of labels dropped to the null label (CFG)")
    parser.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the shipped weights")
    parser.add_argument("--warmup-steps", type=int, default=200, help="linear learning-rate warm-up")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="CFG scale of the sample grids and the card's serving default (default 2; with --init-from, its card's)")
    parser.add_argument("--sample-every", type=int, default=0, help="steps between sample grids (0: once per epoch)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (pays off on long GPU runs)")
    parser.add_argument("--save-every-minutes", type=float, default=10.0, help="wall time between resume states (and at each run's end)")
    parser.add_argument("--profile-seconds", type=float, default=0.0,
                        help="time each phase of the steps in the first N seconds and write <out>/profile.txt (0: off)")


@dataclass
class NetworkPlan:
    """Which network a run trains, and what it starts from."""

    config: UNetConfig
    schedule: NoiseScheduleConfig
    source: str  # what the config came from, for messages
    init_from: str | None = None  # the checkpoint this run's weights started from (kept across --resume)
    init_model: ConditionalUNet | None = None  # its weights; None when fresh or resumed
    earlier_runs: list[dict] = field(default_factory=list)  # the lineage before this run
    # How the model is served; a continued run keeps its checkpoint's choice (the sampler
    # sweep re-chooses it on the new weights).
    sampling: dict = field(default_factory=lambda: dict(DEFAULT_SAMPLING))

    @property
    def earlier_steps(self) -> int:
        return totals(self.earlier_runs)["total_steps"]


def _check_flags(args: argparse.Namespace, plan: NetworkPlan) -> None:
    """Explicit flags must agree with a config taken from a card or state, not silently lose to it."""
    wanted = {"--base-channels": (args.base_channels, plan.config.base_channels),
              "--timesteps": (args.timesteps, plan.schedule.num_train_timesteps)}
    clashes = [f"{flag} {given} (it has {have})" for flag, (given, have) in wanted.items() if given is not None and given != have]
    if clashes:
        raise SystemExit(f"the network comes from {plan.source}, which does not match {', '.join(clashes)}: drop the flag or pick another checkpoint")


def _plan_from_init(spec: Path, name: str) -> NetworkPlan:
    directory, ckpt_name = resolve_checkpoint(spec, name)
    model, card = load_model(directory, ckpt_name)
    if not isinstance(model, ConditionalUNet):
        raise SystemExit(f"--init-from {spec}: {card['kind']!r} is not a diffusion UNet")
    return NetworkPlan(
        config=model.config, schedule=NoiseScheduleConfig(**card.get("schedule", {})), source=f"the card of {directory / ckpt_name}",
        init_from=str(directory / ckpt_name), init_model=model, earlier_runs=lineage_of(card),
        sampling=_carried_sampling(card.get("sampling")),
    )


def _carried_sampling(sampling: dict | None) -> dict:
    """The serving defaults a continued run keeps: the chosen configuration, not the sweep
    tables behind it, which were measured on the earlier weights."""
    if not sampling:
        return dict(DEFAULT_SAMPLING)
    return {k: v for k, v in sampling.items() if k not in ("sweep", "selection")}


def plan_network(args: argparse.Namespace, name: str, state: dict | None) -> NetworkPlan:
    """The resumed state's network, else --init-from's, else the flags' (see the module docstring)."""
    if state is not None and "config" in state:
        plan = NetworkPlan(UNetConfig(**state["config"]), NoiseScheduleConfig(**state["schedule"]), source="the resumed state.pt",
                           init_from=state.get("init_from"), earlier_runs=state.get("earlier_runs", []),
                           sampling=state.get("sampling") or dict(DEFAULT_SAMPLING))
        if args.init_from is not None:
            directory, ckpt_name = resolve_checkpoint(args.init_from, name)
            if lineage_of(read_card(directory, ckpt_name)) != plan.earlier_runs:
                raise SystemExit(f"--resume: the state.pt in {args.out or 'runs/' + name} was not started from --init-from {args.init_from}; "
                                 "drop --resume to start over from it, or pick another --out")
    elif args.init_from is not None:
        plan = _plan_from_init(args.init_from, name)
    else:
        config = UNetConfig(**({} if args.base_channels is None else {"base_channels": args.base_channels}))
        schedule = NoiseScheduleConfig(**({} if args.timesteps is None else {"num_train_timesteps": args.timesteps}))
        plan = NetworkPlan(config, schedule, source="the flags")
    _check_flags(args, plan)
    if args.guidance_scale is not None:  # a serving default, not part of the network: the flag wins
        if "default" not in plan.sampling:
            plan.sampling = {**plan.sampling, "guidance_scale": args.guidance_scale}
        else:
            plan.sampling["default"] = {**plan.sampling["default"], "guidance_scale": args.guidance_scale}
    return plan


def _make_ema(unet: ConditionalUNet, args: argparse.Namespace, plan: NetworkPlan, device: torch.device) -> EMA:
    # The EMA copy holds only network weights: the schedule lives outside the module.
    init = plan.init_from is not None
    # A continued run's network already is an average: the EMA keeps it from step 0
    # instead of copying the online network through the warm-up, and its decay
    # ramp goes on from the earlier runs' step count rather than restarting near 0.
    ema = EMA(unet, beta=args.ema_decay, update_after_step=0 if init else args.warmup_steps, update_every=1,
              use_foreach=device.type == "cuda")
    ema.to(device)
    # EMA reads its step counter with .item() on every update: a counter on the GPU would
    # stall the CPU once per step, so it stays on the CPU.
    ema.step, ema.initted = ema.step.cpu(), ema.initted.cpu()
    if init:
        ema.initted.fill_(True)
        ema.step.fill_(plan.earlier_steps)
    return ema


def _sample_grid(ema_net: ConditionalUNet, schedule: NoiseSchedule, path: Path, guidance: float) -> None:
    labels = torch.arange(10).repeat_interleave(8)
    out = DigitPipeline(ema_net, schedule)(
        labels, sampler="ddim", steps=25, guidance_scale=guidance, generator=torch.Generator(next(ema_net.parameters()).device).manual_seed(0)
    )
    save_grid(out.images, path, nrow=8)
    ema_net.eval()


def _lineage_fields(training: dict, plan: NetworkPlan) -> dict:
    """This run (from its card's ``training`` fields) as the last of its model's lineage, and the totals over all of it."""
    lineage = [*plan.earlier_runs, run_entry({**training, "init_from": plan.init_from})]
    return {"lineage": lineage, **totals(lineage)}


class DDPMTask(Task):
    """Noise prediction with label dropout, gradient clipping, warm-up and EMA; the EMA network ships."""

    show_every = 25

    def __init__(self, args: argparse.Namespace, trainer: Trainer, plan: NetworkPlan) -> None:
        acc, self.args, self.plan = trainer.acc, args, plan
        self.acc, cuda = acc, acc.device.type == "cuda"
        images, labels = load_digits(args.data, "mnistm", "train", limit=args.limit)
        self.images, self.labels, self.n_items = images.to(acc.device), labels.to(acc.device), len(images)
        unet = (plan.init_model or ConditionalUNet(plan.config)).train()
        if cuda:
            unet = unet.to(memory_format=torch.channels_last)
        self.ema = _make_ema(unet, args, plan, acc.device)  # before prepare: it copies the plain module
        opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0, fused=cuda)
        self.warmup = get_constant_schedule_with_warmup(opt, num_warmup_steps=args.warmup_steps)
        self.model, self.opt = acc.prepare(unet, opt)
        self.forward_model = torch.compile(self.model) if args.compile else self.model
        self.schedule = NoiseSchedule(plan.schedule)
        self.guidance = SamplingConfig.card_default({"sampling": plan.sampling}).guidance_scale
        self.profiler = StepProfiler(args.profile_seconds if acc.is_main_process else 0.0, acc.device, trainer.out / "profile.txt")

    def checkpointed(self) -> dict:
        return {"model": self.model, "ema": self.ema, "opt": self.opt, "lr_sched": self.warmup}

    def extra_state(self) -> dict:
        # What the next --resume rebuilds the network and card from.
        plan = self.plan
        return {"config": plan.config.to_dict(), "schedule": plan.schedule.to_dict(), "init_from": plan.init_from,
                "earlier_runs": plan.earlier_runs, "sampling": plan.sampling}

    def step(self, batch: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        profiler, acc = self.profiler, self.acc
        with profiler.phase("batch"):
            x0 = self.images[batch].float() / 127.5 - 1
            if x0.is_cuda:
                x0 = x0.contiguous(memory_format=torch.channels_last)
        with profiler.phase("forward"), acc.autocast():
            loss = self.schedule.training_loss(self.forward_model, x0, self.labels[batch], label_dropout=self.args.label_dropout)
        with profiler.phase("backward"):
            self.opt.zero_grad(set_to_none=True)
            acc.backward(loss)
        with profiler.phase("optimizer"):
            acc.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.warmup.step()
        with profiler.phase("ema"):
            self.ema.update()
        return {"loss": loss}

    def log_fields(self) -> dict:
        return {"lr": self.warmup.get_last_lr()[0]}

    def shipped(self) -> ConditionalUNet:
        return self.ema.ema_model

    def _grid(self, trainer: Trainer, file: str) -> None:
        if self.acc.is_main_process:
            with trainer.speed.paused():
                _sample_grid(self.ema.ema_model, self.schedule, trainer.out / "samples" / file, self.guidance)

    def after_step(self, trainer: Trainer, losses: dict[str, torch.Tensor]) -> None:
        if report := self.profiler.step_done():
            tqdm.write(f"[{trainer.name}] {report}")  # tqdm.write: a line of its own, not glued to the bar
        if self.args.sample_every and trainer.step % self.args.sample_every == 0:
            self._grid(trainer, f"step_{trainer.step:06d}.png")

    def after_epoch(self, trainer: Trainer) -> None:
        if not self.args.sample_every:
            self._grid(trainer, f"epoch_{trainer.epoch:03d}.png")

    def at_end(self, trainer: Trainer) -> None:
        if report := self.profiler.close():
            print(f"[{trainer.name}] {report}")

    def card(self, card: dict, trainer: Trainer) -> dict:
        args, plan, training = self.args, self.plan, card["training"]
        training.update(optimizer="AdamW", loss="smooth L1 on the predicted noise", label_dropout=args.label_dropout,
                        ema_decay=args.ema_decay, warmup_steps=args.warmup_steps, final_loss_ema=trainer.smoothed.get("loss"))
        training.update(_lineage_fields(training, plan))
        # What the model behind this card (all its runs counted) differs in from the seed's
        # recipe, so a card never passes off a cut-down model as the full one.
        seed_recipe = {"base_channels": 64, "epochs": 39, "batch_size": 16, "lr": 1e-4, "timesteps": 400}
        here = {"base_channels": plan.config.base_channels, "epochs": training["total_epochs"], "batch_size": training["batch_size"],
                "lr": args.lr, "timesteps": plan.schedule.num_train_timesteps}
        training["differs_from_seed"] = {k: {"seed": v, "this_run": here[k]} for k, v in seed_recipe.items() if here[k] != v}
        training["full_size_command"] = "SOURCE=../shared/data OUT=out bash training/gpu_run.sh  # on one GPU, about 9 minutes"
        training["continue_command"] = "SOURCE=../shared/data OUT=out bash training/gpu_ddpm.sh  # continue the shipped model, about 9 minutes"
        card["data"] = {"dataset": "MNIST-M (built from MNIST train + BSDS500 train photos)", "root": str(args.data), "split": "digits/mnistm/train",
                        "images": self.n_items}
        card["schedule"] = plan.schedule.to_dict()
        card["sampling"] = plan.sampling
        return card


def train(args: argparse.Namespace) -> dict:
    name = args.name or DEFAULT_NAME
    trainer = Trainer(args, name)
    plan = plan_network(args, name, trainer.resumed)
    if plan.init_model is not None:
        print(f"[{name}] init from {plan.init_from} ({plan.earlier_steps} earlier steps in {len(plan.earlier_runs)} run(s)); fresh optimiser")
    return trainer.fit(DDPMTask(args, trainer, plan))
