"""Train the evaluation classifier on real MNIST-M: the judge of generated digits.

    python -m training classifier --epochs 3
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from models.digit_classifier import DigitClassifier

from .common import add_common_args
from .data.datasets import load_digits
from .eval_common import accuracy as eval_accuracy
from .trainer import Task, Trainer


def add_args(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, epochs=3, batch_size=128, lr=2e-3)


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """``images`` uint8 (N, 3, 28, 28)."""
    model.eval()
    return eval_accuracy(lambda x: model(x.float() / 127.5 - 1), images, labels)


def _translate(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    dx, dy = torch.randint(0, 5, (2,), generator=generator).tolist()
    return F.pad(x, (2, 2, 2, 2), mode="replicate")[:, :, dy : dy + 28, dx : dx + 28]


class ClassifierTask(Task):
    """Cross-entropy on randomly translated real MNIST-M digits, AdamW with a one-cycle schedule."""

    def __init__(self, args: argparse.Namespace, trainer: Trainer) -> None:
        acc = self.acc = trainer.acc
        x, y = load_digits(args.data, "mnistm", "train", limit=args.limit)
        vx, vy = load_digits(args.data, "mnistm", "val")
        self.x, self.y, self.vx, self.vy = (t.to(acc.device) for t in (x, y, vx, vy))
        self.n_items, self.gen = len(self.x), trainer.gen
        model = DigitClassifier()
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
        total = max(1, args.epochs * (len(self.x) // args.batch_size))
        self.sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=total)
        self.model, self.opt = acc.prepare(model, opt)

    def checkpointed(self) -> dict:
        return {"model": self.model, "opt": self.opt, "sched": self.sched}

    def step(self, batch: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        self.model.train()
        with self.acc.autocast():
            loss = F.cross_entropy(self.model(_translate(self.x[batch].float() / 127.5 - 1, self.gen)).float(), self.y[batch])
        self.opt.zero_grad(set_to_none=True)
        self.acc.backward(loss)
        self.opt.step()
        if step < self.sched.total_steps - 1:
            self.sched.step()
        return {"loss": loss}

    def after_epoch(self, trainer: Trainer) -> None:
        trainer.log.write(epoch=trainer.epoch, step=trainer.step, val_acc=accuracy(self.shipped(), self.vx, self.vy))

    def shipped(self) -> torch.nn.Module:
        return self.acc.unwrap_model(self.model)

    def card(self, card: dict, trainer: Trainer) -> dict:
        val_acc = accuracy(self.shipped(), self.vx, self.vy)
        card["training"]["optimizer"] = "AdamW, one-cycle"
        card["data"] = {"dataset": "MNIST-M", "train": "digits/mnistm/train", "evaluation": "digits/mnistm/val", "root": str(trainer.args.data)}
        card["purpose"] = "judges generated digits; trained on real MNIST-M only"
        card["metrics"] = {"mnistm_val_acc": round(val_acc, 4)}
        print(f"[{trainer.name}] MNIST-M val accuracy {val_acc:.4f}")
        return card


def train(args: argparse.Namespace) -> dict:
    trainer = Trainer(args, args.name or "digit-classifier")
    return trainer.fit(ClassifierTask(args, trainer))
