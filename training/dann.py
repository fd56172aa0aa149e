"""Train DANN (or its source-only / target-only bounds) from MNIST-M to SVHN or USPS.

    python -m training dann --target svhn --mode dann
    python -m training dann --target usps --mode source_only
    python -m training dann --target svhn --mode dann --recipe plain   # the seed's settings

Recipes:
- ``plain``: the seed's settings: Adam 1e-4, batch 64, images scaled with
  mean = std = 0.5, the paper's 2/(1+exp(-10p))-1 reversal coefficient.
- ``improved`` (default): per-image standardisation, augmentation (random
  translation, channel shuffle and colour inversion), the paper's learning-rate
  annealing lr0 / (1 + 10p)^0.75, and EMA weights. The shipped checkpoint is the
  last EMA state: target labels are used only to report accuracy, never to pick a
  checkpoint.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F
from ema_pytorch import EMA
from tqdm import tqdm

from models.checkpoints import save_model
from models.dann import DANN, reversal_coefficient
from models.pipelines import normalize_digits

from .common import (
    Budget,
    JsonLog,
    add_common_args,
    load_state,
    make_accelerator,
    save_state,
    seed_everything,
    training_card,
)
from .data.datasets import load_digits

MODES = ("source_only", "dann", "target_only")


def add_args(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, epochs=10, batch_size=64, lr=1e-4)
    parser.add_argument("--target", choices=["svhn", "usps"], required=True, help="target domain")
    parser.add_argument("--mode", choices=MODES, default="dann", help="what to train on (source_only and target_only are the bounds)")
    parser.add_argument("--recipe", choices=["plain", "improved"], default="improved", help="see the module docstring")
    parser.add_argument("--eval-every", type=int, default=500, help="steps between target-val accuracy lines in the log (monitoring only)")


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random +-2 px translation, channel shuffle and inversion of [0, 1] images (N, 3, 28, 28)."""
    n = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    dx, dy = torch.randint(0, 5, (2,), generator=generator).tolist()
    x = padded[:, :, dy : dy + 28, dx : dx + 28]
    perm = torch.stack([torch.randperm(3, generator=generator) for _ in range(n)]).to(x.device)
    x = torch.gather(x, 1, perm[:, :, None, None].expand_as(x))
    invert = (torch.rand(n, generator=generator) < 0.5).to(x.device)[:, None, None, None]
    return torch.where(invert, 1 - x, x)


def _prepare(x_uint8: torch.Tensor, recipe: str, generator: torch.Generator | None) -> torch.Tensor:
    x = x_uint8.float() / 255
    if recipe == "improved" and generator is not None:
        x = augment(x, generator)
    return normalize_digits(x, "per_image" if recipe == "improved" else "half")


@torch.no_grad()
def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, recipe: str, batch: int = 1024) -> float:
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(images), batch):
        x = _prepare(images[i : i + batch], recipe, None)
        correct += (model.classify(x).argmax(1) == labels[i : i + batch]).sum().item()
    model.train(was_training)
    return correct / max(1, len(images))


def train(args: argparse.Namespace) -> dict:
    # dann-svhn (served), dann-svhn-plain, dann-svhn-source-only, dann-svhn-target-only, ...
    suffix = "" if args.mode == "dann" else f"-{args.mode.replace('_', '-')}"
    if args.recipe == "plain":
        suffix += "-plain"
    name = args.name or f"dann-{args.target}{suffix}"
    out = Path(args.out or f"runs/{name}")
    seed_everything(args.seed)
    acc = make_accelerator(args)
    print(f"[{name}] seed {args.seed}, device {acc.device}, mode {args.mode}, recipe {args.recipe}")

    src_x, src_y = load_digits(args.data, "mnistm", "train", limit=args.limit)
    tgt_x, tgt_y = load_digits(args.data, args.target, "train", limit=args.limit)
    val_x, val_y = load_digits(args.data, args.target, "val")
    src_x, src_y, tgt_x, tgt_y = (t.to(acc.device) for t in (src_x, src_y, tgt_x, tgt_y))
    val_x, val_y = val_x.to(acc.device), val_y.to(acc.device)
    # The class loss sees the target only in target_only mode (the upper bound).
    cls_x, cls_y = (tgt_x, tgt_y) if args.mode == "target_only" else (src_x, src_y)

    model = DANN()
    ema = EMA(model, beta=0.999, update_after_step=100, update_every=1) if args.recipe == "improved" else None
    if ema is not None:
        ema.to(acc.device)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    model, opt = acc.prepare(model, opt)
    steps_per_epoch = max(1, len(cls_x) // args.batch_size)
    total_steps = args.max_steps or args.epochs * steps_per_epoch
    if args.recipe == "improved":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 + 10 * min(1.0, s / total_steps)) ** -0.75)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    state_path = out / "state.pt"
    step = 0
    gen = torch.Generator().manual_seed(args.seed)
    budget = Budget(args)
    if args.resume and (state := load_state(state_path)) is not None:
        budget.earlier = state.get("wall_time_s", 0.0)
        acc.unwrap_model(model).load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        step = state["step"]
        gen.set_state(state["rng"])
        print(f"[{name}] resumed at step {step}")

    log = JsonLog(out / "log.jsonl", acc.is_main_process)
    bar = tqdm(total=total_steps, initial=step, desc=name, disable=not acc.is_local_main_process)
    stopped = False
    while step < total_steps:
        ci = torch.randint(0, len(cls_x), (args.batch_size,), generator=gen).to(acc.device)
        ti = torch.randint(0, len(tgt_x), (args.batch_size,), generator=gen).to(acc.device)
        alpha = reversal_coefficient(step / total_steps)
        with acc.autocast():
            if args.mode == "dann":
                x = torch.cat([_prepare(cls_x[ci], args.recipe, gen), _prepare(tgt_x[ti], args.recipe, gen)])
                class_logits, domain_logits = model(x, alpha)
                domains = torch.cat([torch.zeros(args.batch_size), torch.ones(args.batch_size)]).long().to(acc.device)
                loss_cls = F.cross_entropy(class_logits[: args.batch_size].float(), cls_y[ci])
                loss_dom = F.cross_entropy(domain_logits.float(), domains)
            else:
                class_logits, _ = model(_prepare(cls_x[ci], args.recipe, gen), 0.0)
                loss_cls = F.cross_entropy(class_logits.float(), cls_y[ci])
                loss_dom = torch.zeros((), device=acc.device)
        loss = loss_cls + loss_dom
        opt.zero_grad(set_to_none=True)
        acc.backward(loss)
        opt.step()
        sched.step()
        if ema is not None:
            ema.update()
        step += 1
        bar.update(1)
        bar.set_postfix(cls=f"{loss_cls.item():.3f}", dom=f"{loss_dom.item():.3f}", alpha=f"{alpha:.2f}")
        if step % args.eval_every == 0 or step == total_steps:
            net = ema.ema_model if ema is not None else acc.unwrap_model(model)
            log.write(step=step, loss_cls=loss_cls.item(), loss_dom=loss_dom.item(), alpha=alpha,
                      target_val_acc=accuracy(net, val_x, val_y, args.recipe), elapsed_s=round(budget.elapsed, 1))
        if budget.exhausted(step):
            stopped = True
            break
    bar.close()
    final = ema.ema_model if ema is not None else acc.unwrap_model(model)
    if acc.is_main_process:
        save_state(state_path, {"model": acc.unwrap_model(model).state_dict(), "opt": opt.state_dict(),
                                "sched": sched.state_dict(), "ema": ema.state_dict() if ema is not None else {},
                                "step": step, "rng": gen.get_state(), "wall_time_s": budget.total})
    target_acc = accuracy(final, val_x, val_y, args.recipe)
    card = training_card(
        args, acc, budget, steps=step, steps_planned=total_steps, epochs_equivalent=round(step / steps_per_epoch, 2),
        stopped_early=stopped, optimizer="Adam", mode=args.mode, recipe=args.recipe,
        lr_schedule="lr0 / (1 + 10p)^0.75" if args.recipe == "improved" else "constant",
        weights="EMA (decay 0.999)" if ema is not None else "last step",
    )
    card["data"] = {
        "source": "MNIST-M train (labels used)" if args.mode != "target_only" else None,
        "target": f"{args.target} train ({'labels used' if args.mode == 'target_only' else 'no labels'})",
        "evaluation": f"{args.target} val",
        "root": str(args.data),
    }
    card["preprocess"] = {"normalize": "per_image" if args.recipe == "improved" else "half", "size": 28}
    card["metrics"] = {"target_val_acc": round(target_acc, 4)}
    if acc.is_main_process:
        path = save_model(final, args.checkpoint_dir, name, card)
        print(f"[{name}] {step} steps in {budget.elapsed:.0f}s, {args.target} val accuracy {target_acc:.4f} -> {path}")
    return card
