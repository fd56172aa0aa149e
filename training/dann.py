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

import torch
import torch.nn.functional as F
from ema_pytorch import EMA

from models.dann import DANN, reversal_coefficient
from models.pipelines import normalize_digits

from .common import add_common_args
from .data.datasets import load_digits
from .trainer import Task, Trainer

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


def run_name(args: argparse.Namespace) -> str:
    """dann-svhn (served), dann-svhn-plain, dann-svhn-source-only, dann-svhn-target-only, ..."""
    suffix = "" if args.mode == "dann" else f"-{args.mode.replace('_', '-')}"
    if args.recipe == "plain":
        suffix += "-plain"
    return args.name or f"dann-{args.target}{suffix}"


class DANNTask(Task):
    """Class loss on the source (the target in target_only mode), domain loss behind gradient reversal in dann mode."""

    n_items = None  # each step draws its source and target batches with replacement
    show_every = 1

    def __init__(self, args: argparse.Namespace, trainer: Trainer) -> None:
        acc = self.acc = trainer.acc
        self.args, self.gen = args, trainer.gen
        print(f"[{trainer.name}] mode {args.mode}, recipe {args.recipe}")
        src_x, src_y = load_digits(args.data, "mnistm", "train", limit=args.limit)
        tgt_x, tgt_y = load_digits(args.data, args.target, "train", limit=args.limit)
        val_x, val_y = load_digits(args.data, args.target, "val")
        self.tgt_x, self.val_x, self.val_y = tgt_x.to(acc.device), val_x.to(acc.device), val_y.to(acc.device)
        # The class loss sees the target only in target_only mode (the upper bound).
        cls_x, cls_y = (tgt_x, tgt_y) if args.mode == "target_only" else (src_x, src_y)
        self.cls_x, self.cls_y = cls_x.to(acc.device), cls_y.to(acc.device)
        model = DANN()
        self.ema = EMA(model, beta=0.999, update_after_step=100, update_every=1) if args.recipe == "improved" else None
        if self.ema is not None:
            self.ema.to(acc.device)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        self.model, self.opt = acc.prepare(model, opt)
        self.steps_per_epoch = max(1, len(cls_x) // args.batch_size)
        self.total = total = args.max_steps or args.epochs * self.steps_per_epoch
        decay = (lambda s: (1 + 10 * min(1.0, s / total)) ** -0.75) if args.recipe == "improved" else (lambda s: 1.0)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, decay)

    def steps_planned(self, trainer: Trainer) -> int:
        return self.total

    def checkpointed(self) -> dict:
        objects = {"model": self.model, "opt": self.opt, "sched": self.sched}
        return objects if self.ema is None else {**objects, "ema": self.ema}

    def step(self, batch: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        args, acc, gen, n = self.args, self.acc, self.gen, self.args.batch_size
        ci = torch.randint(0, len(self.cls_x), (n,), generator=gen).to(acc.device)
        ti = torch.randint(0, len(self.tgt_x), (n,), generator=gen).to(acc.device)
        alpha = reversal_coefficient(step / self.total)
        with acc.autocast():
            if args.mode == "dann":
                x = torch.cat([_prepare(self.cls_x[ci], args.recipe, gen), _prepare(self.tgt_x[ti], args.recipe, gen)])
                class_logits, domain_logits = self.model(x, alpha)
                domains = torch.cat([torch.zeros(n), torch.ones(n)]).long().to(acc.device)
                loss_cls = F.cross_entropy(class_logits[:n].float(), self.cls_y[ci])
                loss_dom = F.cross_entropy(domain_logits.float(), domains)
            else:
                class_logits, _ = self.model(_prepare(self.cls_x[ci], args.recipe, gen), 0.0)
                loss_cls = F.cross_entropy(class_logits.float(), self.cls_y[ci])
                loss_dom = torch.zeros((), device=acc.device)
        self.opt.zero_grad(set_to_none=True)
        acc.backward(loss_cls + loss_dom)
        self.opt.step()
        self.sched.step()
        if self.ema is not None:
            self.ema.update()
        return {"cls": loss_cls, "dom": loss_dom, "alpha": torch.tensor(alpha)}

    def shipped(self) -> torch.nn.Module:
        return self.ema.ema_model if self.ema is not None else self.acc.unwrap_model(self.model)

    def after_step(self, trainer: Trainer, losses: dict[str, torch.Tensor]) -> None:
        if trainer.step % self.args.eval_every == 0 or trainer.step == self.total:
            trainer.log.write(step=trainer.step, loss_cls=losses["cls"].item(), loss_dom=losses["dom"].item(), alpha=losses["alpha"].item(),
                              target_val_acc=accuracy(self.shipped(), self.val_x, self.val_y, self.args.recipe),
                              elapsed_s=round(trainer.budget.elapsed, 1))

    def card(self, card: dict, trainer: Trainer) -> dict:
        args, improved = self.args, self.args.recipe == "improved"
        target_acc = accuracy(self.shipped(), self.val_x, self.val_y, args.recipe)
        card["training"].update(
            epochs_equivalent=round(trainer.step / self.steps_per_epoch, 2), optimizer="Adam", mode=args.mode, recipe=args.recipe,
            lr_schedule="lr0 / (1 + 10p)^0.75" if improved else "constant", weights="EMA (decay 0.999)" if self.ema is not None else "last step",
        )
        card["data"] = {
            "source": "MNIST-M train (labels used)" if args.mode != "target_only" else None,
            "target": f"{args.target} train ({'labels used' if args.mode == 'target_only' else 'no labels'})",
            "evaluation": f"{args.target} val",
            "root": str(args.data),
        }
        card["preprocess"] = {"normalize": "per_image" if improved else "half", "size": 28}
        card["metrics"] = {"target_val_acc": round(target_acc, 4)}
        print(f"[{trainer.name}] {args.target} val accuracy {target_acc:.4f}")
        return card


def train(args: argparse.Namespace) -> dict:
    trainer = Trainer(args, run_name(args))
    return trainer.fit(DANNTask(args, trainer))
