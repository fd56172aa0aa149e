"""Train the class-conditional DDPM on MNIST-M digits, with EMA weights and label dropout.

    python -m training ddpm --epochs 39          # the seed's schedule (GPU)
    python -m training ddpm --base-channels 32 --max-minutes 30   # what a CPU affords

Classifier-free guidance comes from ``--label-dropout``: that share of labels is
replaced by the null label, so the same network also learns unconditional noise
prediction. The shipped checkpoint is the EMA network alone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from ema_pytorch import EMA
from tqdm import tqdm

from models.checkpoints import save_model
from models.pipelines import DigitPipeline
from models.scheduler import NoiseSchedule, NoiseScheduleConfig
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
    training_card,
)
from .data.datasets import load_digits


def add_args(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, epochs=39, batch_size=16, lr=1e-4)
    parser.add_argument("--base-channels", type=int, default=64, help="UNet width (the seed: 64)")
    parser.add_argument("--timesteps", type=int, default=400, help="diffusion steps T")
    parser.add_argument("--label-dropout", type=float, default=0.1, help="share of labels dropped to the null label (CFG)")
    parser.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay of the shipped weights")
    parser.add_argument("--warmup-steps", type=int, default=200, help="linear learning-rate warm-up")
    parser.add_argument("--guidance-scale", type=float, default=2.0, help="default CFG scale written to the card for serving")
    parser.add_argument("--sample-every", type=int, default=0, help="steps between sample grids (0: once per epoch)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet (pays off on long GPU runs)")
    parser.add_argument("--save-every-minutes", type=float, default=10.0, help="wall time between resume states (and at each run's end)")


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


def train(args: argparse.Namespace) -> dict:
    name = args.name or "ddpm-digits"
    out = Path(args.out or f"runs/{name}")
    seed_everything(args.seed)
    acc = make_accelerator(args)
    print(f"[{name}] seed {args.seed}, device {acc.device}, precision {acc.mixed_precision}")

    images, labels = load_digits(args.data, "mnistm", "train", limit=args.limit)
    images, labels = images.to(acc.device), labels.to(acc.device)
    schedule_cfg = NoiseScheduleConfig(num_train_timesteps=args.timesteps)
    schedule = NoiseSchedule(schedule_cfg)
    unet = ConditionalUNet(UNetConfig(base_channels=args.base_channels))
    if acc.device.type == "cuda":
        unet = unet.to(memory_format=torch.channels_last)
    # The EMA copy holds only network weights: the schedule lives outside the module.
    cuda = acc.device.type == "cuda"
    ema = EMA(unet, beta=args.ema_decay, update_after_step=args.warmup_steps, update_every=1, use_foreach=cuda)
    ema.to(acc.device)
    # EMA reads its step counter with .item() on every update: a counter on the GPU would
    # stall the CPU once per step, so it stays on the CPU.
    ema.step, ema.initted = ema.step.cpu(), ema.initted.cpu()
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0, fused=cuda)
    warmup = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, args.warmup_steps)))
    model, opt = acc.prepare(unet, opt)
    forward_model = torch.compile(model) if args.compile else model

    state_path = out / "state.pt"
    epoch, step = 0, 0
    gen = torch.Generator().manual_seed(args.seed)
    budget = Budget(args)
    if args.resume and (state := load_state(state_path)) is not None:
        budget.earlier = state.get("wall_time_s", 0.0)
        acc.unwrap_model(model).load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        warmup.load_state_dict(state["lr_sched"])
        epoch, step = state["epoch"], state["step"]
        gen.set_state(state["rng"])
        print(f"[{name}] resumed at epoch {epoch}, step {step}")

    log = JsonLog(out / "log.jsonl", acc.is_main_process)
    stopped = False
    running = None
    pending: list[torch.Tensor] = []  # losses not yet read back, so the GPU is not waited on every step
    saved_at = budget.elapsed

    def checkpoint() -> None:
        if not acc.is_main_process:
            return
        save_state(
            state_path,
            {
                "model": acc.unwrap_model(model).state_dict(),
                "ema": ema.state_dict(),
                "opt": opt.state_dict(),
                "lr_sched": warmup.state_dict(),
                "epoch": epoch,
                "step": step,
                "rng": gen.get_state(),
                "wall_time_s": budget.total,
            },
        )

    while epoch < args.epochs and not stopped:
        batches = list(shuffled_batches(len(images), args.batch_size, gen, rank=acc.process_index, world=acc.num_processes))
        bar = tqdm(batches, desc=f"{name} epoch {epoch + 1}/{args.epochs}", disable=not acc.is_local_main_process)
        for idx in bar:
            x0 = images[idx].float() / 127.5 - 1
            if acc.device.type == "cuda":
                x0 = x0.contiguous(memory_format=torch.channels_last)
            with acc.autocast():
                loss = schedule.training_loss(forward_model, x0, labels[idx], label_dropout=args.label_dropout)
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            acc.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            warmup.step()
            ema.update()
            step += 1
            pending.append(loss.detach())
            if step % 25 == 0:
                running = _smoothed(running, pending)
                bar.set_postfix(loss=f"{running:.4f}", step=step)
            if step % 50 == 0:
                log.write(step=step, epoch=epoch, loss=running, lr=warmup.get_last_lr()[0], elapsed_s=round(budget.elapsed, 1))
            if args.sample_every and step % args.sample_every == 0 and acc.is_main_process:
                _sample_grid(ema.ema_model, schedule, out / "samples" / f"step_{step:06d}.png", args.guidance_scale)
            if budget.exhausted(step):
                stopped = True
                break
        if not stopped:
            epoch += 1
            if not args.sample_every and acc.is_main_process:
                _sample_grid(ema.ema_model, schedule, out / "samples" / f"epoch_{epoch:03d}.png", args.guidance_scale)
        if stopped or epoch >= args.epochs or budget.elapsed - saved_at >= args.save_every_minutes * 60:
            checkpoint()
            saved_at = budget.elapsed

    running = _smoothed(running, pending)
    card = training_card(
        args, acc, budget, epochs_completed=epoch, epochs_planned=args.epochs, steps=step, stopped_early=stopped,
        optimizer="AdamW", loss="smooth L1 on the predicted noise", label_dropout=args.label_dropout,
        ema_decay=args.ema_decay, final_loss_ema=running,
    )
    # What this run changed from the seed's recipe, so a card never passes off a cut-down model as the full one.
    seed_recipe = {"base_channels": 64, "epochs": 39, "batch_size": 16, "lr": 1e-4, "timesteps": 400}
    here = {"base_channels": args.base_channels, "epochs": epoch, "batch_size": args.batch_size * acc.num_processes,
            "lr": args.lr, "timesteps": args.timesteps}
    card["training"]["differs_from_seed"] = {k: {"seed": v, "this_run": here[k]} for k, v in seed_recipe.items() if here[k] != v}
    card["training"]["full_size_command"] = "SOURCE=../shared/data OUT=out bash training/gpu_run.sh  # on one GPU, about 9 minutes"
    card["data"] = {"dataset": "MNIST-M (built from MNIST train + BSDS500 train photos)", "root": str(args.data), "split": "digits/mnistm/train", "images": len(images)}
    card["schedule"] = schedule_cfg.to_dict()
    card["sampling"] = {"guidance_scale": args.guidance_scale, "few_step_sampler": "ddim", "few_step_steps": 25}
    if acc.is_main_process:
        path = save_model(ema.ema_model, args.checkpoint_dir, name, card)
        print(f"[{name}] {step} steps, {epoch} epochs in {budget.elapsed:.0f}s -> {path}")
    return card
