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
them; ``steps`` and ``wall_time_s`` are this run's. ``stopped_early`` means the
clock (``--max-minutes``) cut the run before its step plan (``steps_planned``:
the epochs, capped by ``--max-steps``), and ``stopped_at`` says how far it got.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import torch
from accelerate import Accelerator
from ema_pytorch import EMA
from torch import nn
from tqdm import tqdm

from models.checkpoints import load_model, read_card, save_model
from models.pipelines import DigitPipeline
from models.scheduler import NoiseSchedule, NoiseScheduleConfig, SamplingConfig
from models.unet import ConditionalUNet, UNetConfig

from .common import (
    Budget,
    JsonLog,
    add_common_args,
    load_state,
    make_accelerator,
    save_grid,
    save_state,
    seed_everything,
    shuffled_batches,
    steps_per_epoch,
    training_card,
)
from .data.datasets import load_digits
from .lineage import lineage_of, resolve_checkpoint, run_entry, totals
from .timing import StepProfiler, Throughput, synchronize

DEFAULT_NAME = "ddpm-digits"
DEFAULT_SAMPLING = {"guidance_scale": 2.0, "few_step_sampler": "ddim", "few_step_steps": 25}
PRINT_EVERY_S = 30.0  # throughput lines in the log; the progress bar is filtered out of GPU logs


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


def _smoothed(running: float | None, pending: list[torch.Tensor]) -> float | None:
    """Fold the losses not yet read back into the running average, and empty ``pending``."""
    values = torch.stack(pending).float().tolist() if pending else []
    pending.clear()
    for value in values:
        running = value if running is None else 0.98 * running + 0.02 * value
    return running


def _planned_steps(args: argparse.Namespace, n_images: int, world: int) -> int:
    planned = args.epochs * steps_per_epoch(n_images, args.batch_size, world)
    limit = 1 if args.dry_run else args.max_steps
    return planned if limit is None else min(planned, limit)


def _lineage_fields(training: dict, plan: NetworkPlan) -> dict:
    """This run (from its card's ``training`` fields) as the last of its model's lineage, and the totals over all of it."""
    lineage = [*plan.earlier_runs, run_entry({**training, "init_from": plan.init_from})]
    return {"lineage": lineage, **totals(lineage)}


@dataclass
class Engine:
    """What one optimiser step touches, and the part of the resume state it owns."""

    acc: Accelerator
    model: nn.Module  # as prepared by accelerate (DDP-wrapped under torchrun)
    forward_model: nn.Module  # the same, compiled with --compile
    opt: torch.optim.Optimizer
    warmup: torch.optim.lr_scheduler.LambdaLR
    ema: EMA
    schedule: NoiseSchedule

    def step(self, images: torch.Tensor, labels: torch.Tensor, label_dropout: float, profiler: StepProfiler) -> torch.Tensor:
        """One optimiser step on uint8 images; returns the loss, not read back (that would wait for the GPU)."""
        with profiler.phase("batch"):
            x0 = images.float() / 127.5 - 1
            if x0.is_cuda:
                x0 = x0.contiguous(memory_format=torch.channels_last)
        with profiler.phase("forward"), self.acc.autocast():
            loss = self.schedule.training_loss(self.forward_model, x0, labels, label_dropout=label_dropout)
        with profiler.phase("backward"):
            self.opt.zero_grad(set_to_none=True)
            self.acc.backward(loss)
        with profiler.phase("optimizer"):
            self.acc.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step()
            self.warmup.step()
        with profiler.phase("ema"):
            self.ema.update()
        return loss.detach()

    def state_dict(self) -> dict:
        return {"model": self.acc.unwrap_model(self.model).state_dict(), "ema": self.ema.state_dict(),
                "opt": self.opt.state_dict(), "lr_sched": self.warmup.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.acc.unwrap_model(self.model).load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.warmup.load_state_dict(state["lr_sched"])


def build_engine(args: argparse.Namespace, plan: NetworkPlan, acc: Accelerator) -> Engine:
    cuda = acc.device.type == "cuda"
    unet = (plan.init_model or ConditionalUNet(plan.config)).train()
    if cuda:
        unet = unet.to(memory_format=torch.channels_last)
    ema = _make_ema(unet, args, plan, acc.device)  # before prepare: it copies the plain module
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0, fused=cuda)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, args.warmup_steps)))
    model, opt = acc.prepare(unet, opt)
    forward_model = torch.compile(model) if args.compile else model
    return Engine(acc, model, forward_model, opt, warmup, ema, NoiseSchedule(plan.schedule))


def _card(args: argparse.Namespace, acc: Accelerator, budget: Budget, plan: NetworkPlan, *, step: int, epoch: int,
          planned: int, n_images: int, final_loss: float | None, throughput: dict) -> dict:
    # Only the clock cuts a run short: ending on --max-steps or on the epochs is its plan.
    stopped_early = step < planned
    card = training_card(
        args, acc, budget, epochs_completed=epoch, epochs_planned=args.epochs, steps=step, steps_planned=planned,
        stopped_early=stopped_early, optimizer="AdamW", loss="smooth L1 on the predicted noise", label_dropout=args.label_dropout,
        ema_decay=args.ema_decay, warmup_steps=args.warmup_steps, final_loss_ema=final_loss, throughput=throughput,
    )
    training = card["training"]
    if stopped_early:
        training["stopped_at"] = f"{step} of {planned} planned steps ({100 * step / max(planned, 1):.1f}%), cut by --max-minutes {args.max_minutes}"
    training.update(_lineage_fields(training, plan))
    # What the model behind this card (all its runs counted) differs in from the seed's
    # recipe, so a card never passes off a cut-down model as the full one.
    seed_recipe = {"base_channels": 64, "epochs": 39, "batch_size": 16, "lr": 1e-4, "timesteps": 400}
    here = {"base_channels": plan.config.base_channels, "epochs": training["total_epochs"], "batch_size": training["batch_size"],
            "lr": args.lr, "timesteps": plan.schedule.num_train_timesteps}
    training["differs_from_seed"] = {k: {"seed": v, "this_run": here[k]} for k, v in seed_recipe.items() if here[k] != v}
    training["full_size_command"] = "SOURCE=../shared/data OUT=out bash training/gpu_run.sh  # on one GPU, about 9 minutes"
    training["continue_command"] = "SOURCE=../shared/data OUT=out bash training/gpu_ddpm.sh  # continue the shipped model, about 9 minutes"
    card["data"] = {"dataset": "MNIST-M (built from MNIST train + BSDS500 train photos)", "root": str(args.data), "split": "digits/mnistm/train", "images": n_images}
    card["schedule"] = plan.schedule.to_dict()
    card["sampling"] = plan.sampling
    return card


def train(args: argparse.Namespace) -> dict:
    name = args.name or DEFAULT_NAME
    out = Path(args.out or f"runs/{name}")
    seed_everything(args.seed)
    acc = make_accelerator(args)
    print(f"[{name}] seed {args.seed}, device {acc.device}, precision {acc.mixed_precision}")

    state_path = out / "state.pt"
    state = load_state(state_path) if args.resume else None
    plan = plan_network(args, name, state)
    if plan.init_model is not None:
        print(f"[{name}] init from {plan.init_from} ({plan.earlier_steps} earlier steps in {len(plan.earlier_runs)} run(s)); fresh optimiser")
    images, labels = load_digits(args.data, "mnistm", "train", limit=args.limit)
    images, labels = images.to(acc.device), labels.to(acc.device)
    engine = build_engine(args, plan, acc)
    ema_net, guidance = engine.ema.ema_model, SamplingConfig.card_default({"sampling": plan.sampling}).guidance_scale

    epoch, step = 0, 0
    gen = torch.Generator().manual_seed(args.seed)
    budget = Budget(args)
    if state is not None:
        budget.earlier = state.get("wall_time_s", 0.0)
        engine.load_state_dict(state)
        epoch, step = state["epoch"], state["step"]
        gen.set_state(state["rng"])
        note = " (its start from --init-from is in the state)" if args.init_from is not None else ""
        print(f"[{name}] resumed at epoch {epoch}, step {step}{note}")

    def checkpoint() -> None:
        if acc.is_main_process:
            # config, schedule and lineage: what the next --resume rebuilds the network and card from.
            save_state(state_path, {**engine.state_dict(), "epoch": epoch, "step": step, "rng": gen.get_state(), "wall_time_s": budget.total,
                                    "config": plan.config.to_dict(), "schedule": plan.schedule.to_dict(), "init_from": plan.init_from,
                                    "earlier_runs": plan.earlier_runs, "sampling": plan.sampling})

    log = JsonLog(out / "log.jsonl", acc.is_main_process)
    running = None
    pending: list[torch.Tensor] = []  # losses not yet read back, so the GPU is not waited on every step
    saved_at = printed_at = budget.elapsed
    speed = Throughput(args.batch_size * acc.num_processes, start_step=step)
    profiler = StepProfiler(args.profile_seconds if acc.is_main_process else 0.0, acc.device, out / "profile.txt")
    # --max-steps 0 (or a resumed run already at its step plan) writes the starting weights untouched.
    stopped = budget.max_steps is not None and step >= budget.max_steps
    while epoch < args.epochs and not stopped:
        batches = list(shuffled_batches(len(images), args.batch_size, gen, rank=acc.process_index, world=acc.num_processes))
        bar = tqdm(batches, desc=f"{name} epoch {epoch + 1}/{args.epochs}", disable=not acc.is_local_main_process)
        done = 0
        for idx in bar:
            pending.append(engine.step(images[idx], labels[idx], args.label_dropout, profiler))
            step, done = step + 1, done + 1
            if report := profiler.step_done():
                tqdm.write(f"[{name}] {report}")  # tqdm.write: a line of its own, not glued to the bar
            if step % 25 == 0:
                running = _smoothed(running, pending)
                bar.set_postfix(loss=f"{running:.4f}", step=step)
            if step % 50 == 0:
                rates = speed.interval(step)  # the read-back just above waited for the GPU
                log.write(step=step, epoch=epoch, loss=running, lr=engine.warmup.get_last_lr()[0], elapsed_s=round(budget.elapsed, 1), **rates)
                if acc.is_main_process and budget.elapsed - printed_at >= PRINT_EVERY_S:
                    printed_at = budget.elapsed
                    tqdm.write(f"[{name}] step {step}, epoch {epoch + 1}, loss {running:.4f}: "
                               f"{rates['steps_per_s']:.2f} steps/s, {rates['images_per_s']:.0f} images/s")
            if args.sample_every and step % args.sample_every == 0 and acc.is_main_process:
                with speed.paused():
                    _sample_grid(ema_net, engine.schedule, out / "samples" / f"step_{step:06d}.png", guidance)
            if budget.exhausted(step):
                stopped = True
                break
        if done == len(batches):  # a stop on the last batch still completes the epoch
            epoch += 1
            if not args.sample_every and acc.is_main_process:
                with speed.paused():
                    _sample_grid(ema_net, engine.schedule, out / "samples" / f"epoch_{epoch:03d}.png", guidance)
        if not stopped and epoch < args.epochs and budget.elapsed - saved_at >= args.save_every_minutes * 60:
            with speed.paused():
                checkpoint()
            saved_at = budget.elapsed

    synchronize(acc.device)
    throughput = speed.summary(step)
    if report := profiler.close():
        print(f"[{name}] {report}")
    checkpoint()
    card = _card(args, acc, budget, plan, step=step, epoch=epoch, planned=_planned_steps(args, len(images), acc.num_processes),
                 n_images=len(images), final_loss=_smoothed(running, pending), throughput=throughput)
    if acc.is_main_process:
        path = save_model(ema_net, args.checkpoint_dir, name, card)
        print(f"[{name}] {step} steps, {epoch} epochs in {budget.elapsed:.0f}s -> {path}")
        print(f"[{name}] throughput: {throughput['steps']} steps in {throughput['seconds']}s of training: "
              f"{throughput['steps_per_s']:.2f} steps/s, {throughput['images_per_s']:.0f} images/s ({card['training']['batch_size']} images/step)")
        if card["training"]["stopped_early"]:
            print(f"[{name}] stopped early: {card['training']['stopped_at']}")
    return card
