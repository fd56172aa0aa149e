"""Train the evaluation classifier on real MNIST-M: the judge of generated digits.

    python -m training classifier --epochs 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.checkpoints import save_model
from models.digit_classifier import DigitClassifier

from .common import (
    Budget,
    JsonLog,
    add_common_args,
    load_state,
    make_accelerator,
    save_state,
    seed_everything,
    shuffled_batches,
    training_card,
)
from .data.datasets import load_digits


def add_args(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, epochs=3, batch_size=128, lr=2e-3)


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 1024) -> float:
    """``images`` uint8 (N, 3, 28, 28)."""
    model.eval()
    correct = sum(
        (model(images[i : i + batch].float() / 127.5 - 1).argmax(1) == labels[i : i + batch]).sum().item()
        for i in range(0, len(images), batch)
    )
    return correct / max(1, len(images))


def _translate(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    dx, dy = torch.randint(0, 5, (2,), generator=generator).tolist()
    return F.pad(x, (2, 2, 2, 2), mode="replicate")[:, :, dy : dy + 28, dx : dx + 28]


def train(args: argparse.Namespace) -> dict:
    name = args.name or "digit-classifier"
    out = Path(args.out or f"runs/{name}")
    seed_everything(args.seed)
    acc = make_accelerator(args)
    x, y = load_digits(args.data, "mnistm", "train", limit=args.limit)
    vx, vy = load_digits(args.data, "mnistm", "val")
    x, y, vx, vy = (t.to(acc.device) for t in (x, y, vx, vy))
    model = DigitClassifier()
    steps_per_epoch = len(x) // args.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=max(1, args.epochs * steps_per_epoch))
    model, opt = acc.prepare(model, opt)
    gen = torch.Generator().manual_seed(args.seed)
    log = JsonLog(out / "log.jsonl", acc.is_main_process)
    budget = Budget(args)
    step, epoch, stopped = 0, 0, False
    state_path = out / "state.pt"
    if args.resume and (state := load_state(state_path)) is not None:
        acc.unwrap_model(model).load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        epoch, step, budget.earlier = state["epoch"], state["step"], state["wall_time_s"]
        gen.set_state(state["rng"])
        print(f"[{name}] resumed at epoch {epoch}, step {step}")
    while epoch < args.epochs and not stopped:
        model.train()
        for idx in tqdm(list(shuffled_batches(len(x), args.batch_size, gen)), desc=f"{name} epoch {epoch + 1}", disable=not acc.is_local_main_process):
            with acc.autocast():
                loss = F.cross_entropy(model(_translate(x[idx].float() / 127.5 - 1, gen)).float(), y[idx])
            opt.zero_grad(set_to_none=True)
            acc.backward(loss)
            opt.step()
            if step < sched.total_steps - 1:
                sched.step()
            step += 1
            if budget.exhausted(step):
                stopped = True
                break
        epoch += 0 if stopped else 1
        log.write(epoch=epoch, step=step, val_acc=accuracy(acc.unwrap_model(model), vx, vy))
        if acc.is_main_process:
            save_state(state_path, {"model": acc.unwrap_model(model).state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                                    "epoch": epoch, "step": step, "rng": gen.get_state(), "wall_time_s": budget.total})
    val_acc = accuracy(acc.unwrap_model(model), vx, vy)
    card = training_card(args, acc, budget, epochs_completed=epoch, steps=step, stopped_early=stopped, optimizer="AdamW, one-cycle")
    card["data"] = {"dataset": "MNIST-M", "train": "digits/mnistm/train", "evaluation": "digits/mnistm/val", "root": str(args.data)}
    card["purpose"] = "judges generated digits; trained on real MNIST-M only"
    card["metrics"] = {"mnistm_val_acc": round(val_acc, 4)}
    if acc.is_main_process:
        path = save_model(acc.unwrap_model(model), args.checkpoint_dir, name, card)
        print(f"[{name}] MNIST-M val accuracy {val_acc:.4f} after {epoch} epochs ({budget.elapsed:.0f}s) -> {path}")
    return card
