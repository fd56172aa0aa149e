"""Train DANN from MNIST-M to SVHN or USPS, by one of the methods of the DANN table.

    python -m training dann --target svhn                        # the served method
    python -m training dann --target usps --method source_only   # the lower bound
    python -m training dann --target svhn --method dann_plain    # the seed's recipe

Every method trains the seed's DANN network (``models.dann``, the served model)
and reads the target through the protocol of ``training.data.splits``: it adapts
to the ``adapt`` images (no labels), logs accuracy on ``val``, and never reads
``test``. Methods (``METHODS``):

- ``dann_plain``: the seed's settings: Adam 1e-4, images scaled with mean = std =
  0.5, the paper's 2/(1+exp(-10p))-1 reversal coefficient.
- ``dann``: the improved recipe: per-image standardisation, augmentation (random
  translation, channel shuffle and colour inversion), Adam 1e-3 with the paper's
  annealing lr0 / (1 + 10p)^0.75, and EMA weights (the shipped ones).
- ``vada``: ``dann`` plus conditional-entropy minimisation and virtual adversarial
  training on the target (VADA, Shu et al. 2018). Not a row of the table: on the
  tuning seed its entropy term drove MNIST-M -> SVHN onto one class within 500
  steps, and VAT costs about 1.6x a DANN step.
- ``dann_st``: ``dann`` plus self-training from a mean teacher (self-ensembling,
  French et al. 2018) with AdaMatch's pseudo-labels (Berthelot et al. 2021): the
  EMA model labels the plain target image, its probabilities aligned to the
  source's class distribution; where that label is confident (``--threshold``
  relative to the teacher's confidence on the source) the student learns it on
  the augmented image, with AdaMatch's warm-up of the weight.
- ``source_only`` / ``target_only``: the bounds, with the improved recipe (the
  target-only bound learns from the labels of the ``adapt`` split).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from ema_pytorch import EMA

from contract.roles import DANN_CHECKPOINTS
from models.dann import DANN, reversal_coefficient
from models.pipelines import normalize_digits

from .common import add_common_args
from .data.datasets import load_digits
from .data.splits import load_target
from .eval_common import accuracy as eval_accuracy
from .trainer import Task, Trainer

SOURCE_VAL_IMAGES = 2000  # MNIST-M val images behind the label-free source accuracy in the log


@dataclass(frozen=True)
class Method:
    """One row of the DANN table: what the class loss sees and which unsupervised target losses join it."""

    mode: str  # source_only | dann | target_only
    summary: str
    recipe: str = "improved"  # plain | improved
    entropy: float = 0.0  # weight of the target's conditional entropy
    vat: float = 0.0  # weight of virtual adversarial training on the target
    self_training: float = 0.0  # weight of the mean teacher's confident pseudo-labels

    @property
    def lr(self) -> float:
        return 1e-4 if self.recipe == "plain" else 1e-3


METHODS: dict[str, Method] = {
    "source_only": Method("source_only", "trained on MNIST-M only (lower bound)"),
    "dann_plain": Method("dann", "DANN, the seed's recipe", recipe="plain"),
    "dann": Method("dann", "DANN, improved recipe"),
    "vada": Method("dann", "DANN + conditional entropy + VAT (VADA)", entropy=0.1, vat=1.0),
    "dann_st": Method("dann", "DANN + mean-teacher self-training (AdaMatch pseudo-labels)", self_training=1.0),
    "target_only": Method("target_only", "trained on the target's adapt split with labels (upper bound)"),
}
SERVED_METHOD = "dann_st"


def add_args(parser: argparse.ArgumentParser) -> None:
    add_common_args(parser, epochs=3, batch_size=64, lr=None)
    parser.add_argument("--target", choices=["svhn", "usps"], required=True, help="target domain")
    parser.add_argument("--method", choices=list(METHODS), default=SERVED_METHOD, help="see the module docstring (default: the served method)")
    for loss in ("entropy", "vat", "self_training"):
        parser.add_argument(f"--{loss.replace('_', '-')}-weight", dest=loss, type=float, default=None, help=f"override the method's {loss} weight")
    parser.add_argument("--threshold", type=float, default=0.9, help="dann_st: the teacher's confidence above which a pseudo-label counts")
    parser.add_argument("--vat-eps", type=float, default=2.0, help="vada: L2 radius of the adversarial perturbation (standardised pixels)")
    parser.add_argument("--eval-every", type=int, default=500, help="steps between source/target-val accuracy lines in the log (monitoring only)")


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


def accuracy(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, recipe: str) -> float:
    """Accuracy on uint8 images, in eval mode; the model's mode is left as it was."""
    was_training = model.training
    model.eval()
    value = eval_accuracy(lambda x: model.classify(_prepare(x, recipe, None)), images, labels)
    model.train(was_training)
    return value


def conditional_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean entropy of the predicted class distributions: low when decision boundaries avoid the data."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1).mean()


def _unit(d: torch.Tensor) -> torch.Tensor:
    return d / d.flatten(1).norm(dim=1).clamp(min=1e-12)[:, None, None, None]


def vat_loss(model: DANN, x: torch.Tensor, logits: torch.Tensor, eps: float, generator: torch.Generator, xi: float = 1e-6) -> torch.Tensor:
    """Virtual adversarial training (Miyato et al.): the KL divergence between the predictions at ``x``
    and at ``x`` moved by ``eps`` along the most sensitive direction (one power iteration)."""
    p = logits.detach().softmax(1)
    d = (xi * _unit(torch.randn(x.shape, generator=generator).to(x.device))).requires_grad_()
    kl = F.kl_div(model.classify(x + d).log_softmax(1), p, reduction="batchmean")
    (grad,) = torch.autograd.grad(kl, d)
    return F.kl_div(model.classify(x + eps * _unit(grad)).log_softmax(1), p, reduction="batchmean")


def warm_up(progress: float) -> float:
    """AdaMatch's weight of the unlabeled loss: 0 at the start, a half-cosine up to 1 at half of the plan."""
    return 0.5 - math.cos(min(math.pi, 2 * math.pi * progress)) / 2


def run_name(args: argparse.Namespace) -> str:
    """dann-svhn (the served method), dann-svhn-source-only, dann-svhn-plain, dann-svhn-vada, ..."""
    suffix = {SERVED_METHOD: "", "dann_plain": "-plain"}.get(args.method, "-" + args.method.replace("_", "-"))
    return args.name or DANN_CHECKPOINTS[args.target] + suffix


class DANNTask(Task):
    """Class loss on the source (the target in target_only mode), domain loss behind gradient reversal,
    and the method's unsupervised losses on the target."""

    n_items = None  # each step draws its source and target batches with replacement
    show_every = 1

    def __init__(self, args: argparse.Namespace, trainer: Trainer) -> None:
        acc = self.acc = trainer.acc
        self.args, self.gen = args, trainer.gen
        overrides = {k: getattr(args, k) for k in ("entropy", "vat", "self_training") if getattr(args, k, None) is not None}
        self.method = replace(METHODS[args.method], **overrides)
        method, recipe = self.method, self.method.recipe
        print(f"[{trainer.name}] method {args.method}: {method.summary}")
        src_x, src_y = load_digits(args.data, "mnistm", "train", limit=args.limit)
        tgt_x, tgt_y = load_target(args.data, args.target, "adapt", limit=args.limit)
        val_x, val_y = load_target(args.data, args.target, "val")
        sval_x, sval_y = load_digits(args.data, "mnistm", "val", limit=SOURCE_VAL_IMAGES)
        self.sizes = {"source": len(src_x), "adapt": len(tgt_x), "val": len(val_x)}
        self.tgt_x = tgt_x.to(acc.device)
        self.val = (val_x.to(acc.device), val_y.to(acc.device))
        self.source_val = (sval_x.to(acc.device), sval_y.to(acc.device))
        # The class loss sees the target only in target_only mode (the upper bound).
        cls_x, cls_y = (tgt_x, tgt_y) if method.mode == "target_only" else (src_x, src_y)
        self.cls_x, self.cls_y = cls_x.to(acc.device), cls_y.to(acc.device)
        model = DANN()
        self.ema = EMA(model, beta=0.999, update_after_step=100, update_every=1) if recipe == "improved" else None
        if self.ema is not None:
            self.ema.to(acc.device)
        opt = torch.optim.Adam(model.parameters(), lr=args.lr)
        self.model, self.opt = acc.prepare(model, opt)
        self.steps_per_epoch = max(1, len(cls_x) // args.batch_size)
        self.total = total = args.max_steps or args.epochs * self.steps_per_epoch
        decay = (lambda s: (1 + 10 * min(1.0, s / total)) ** -0.75) if recipe == "improved" else (lambda s: 1.0)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, decay)

    def steps_planned(self, trainer: Trainer) -> int:
        return self.total

    def checkpointed(self) -> dict:
        objects = {"model": self.model, "opt": self.opt, "sched": self.sched}
        return objects if self.ema is None else {**objects, "ema": self.ema}

    def _pseudo_labels(self, source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """AdaMatch's pseudo-labels from the EMA teacher on the un-augmented images: the target's
        probabilities aligned to the source's class distribution (so no class takes over), kept where
        their confidence passes ``--threshold`` times the teacher's mean confidence on the source."""
        teacher = self.ema.ema_model
        teacher.eval()
        with torch.no_grad():
            probs = teacher.classify(_prepare(torch.cat([source, target]), "improved", None)).float().softmax(1)
        p_source, p_target = probs[: len(source)], probs[len(source) :]
        aligned = p_target * (p_source.mean(0) / p_target.mean(0).clamp(min=1e-6))
        aligned = aligned / aligned.sum(1, keepdim=True)
        confidence, labels = aligned.max(1)
        threshold = self.args.threshold * p_source.max(1).values.mean()
        return labels, (confidence >= threshold).float()

    def step(self, batch: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        args, acc, gen, n, method = self.args, self.acc, self.gen, self.args.batch_size, self.method
        ci = torch.randint(0, len(self.cls_x), (n,), generator=gen).to(acc.device)
        ti = torch.randint(0, len(self.tgt_x), (n,), generator=gen).to(acc.device)
        progress = step / self.total
        alpha = reversal_coefficient(progress)
        zero = torch.zeros((), device=acc.device)
        losses = {"cls": zero, "dom": zero, "ent": zero, "vat": zero, "st": zero, "mask": zero}
        with acc.autocast():
            if method.mode == "dann":
                target = _prepare(self.tgt_x[ti], method.recipe, gen)
                class_logits, domain_logits = self.model(torch.cat([_prepare(self.cls_x[ci], method.recipe, gen), target]), alpha)
                domains = torch.cat([torch.zeros(n), torch.ones(n)]).long().to(acc.device)
                losses["cls"] = F.cross_entropy(class_logits[:n].float(), self.cls_y[ci])
                losses["dom"] = F.cross_entropy(domain_logits.float(), domains)
                target_logits = class_logits[n:].float()
                if method.entropy:
                    losses["ent"] = conditional_entropy(target_logits)
                if method.vat:
                    losses["vat"] = vat_loss(acc.unwrap_model(self.model), target, target_logits, args.vat_eps, gen)
                if method.self_training:
                    labels, mask = self._pseudo_labels(self.cls_x[ci], self.tgt_x[ti])
                    losses["st"] = (F.cross_entropy(target_logits, labels, reduction="none") * mask).mean()
                    losses["mask"] = mask.mean()
            else:
                class_logits, _ = self.model(_prepare(self.cls_x[ci], method.recipe, gen), 0.0)
                losses["cls"] = F.cross_entropy(class_logits.float(), self.cls_y[ci])
        total = (losses["cls"] + losses["dom"] + method.entropy * losses["ent"] + method.vat * losses["vat"]
                 + method.self_training * warm_up(progress) * losses["st"])
        self.opt.zero_grad(set_to_none=True)
        acc.backward(total)
        self.opt.step()
        self.sched.step()
        if self.ema is not None:
            self.ema.update()
        return {k: v for k, v in losses.items() if v is not zero} | {"alpha": torch.tensor(alpha)}

    def shipped(self) -> torch.nn.Module:
        return self.ema.ema_model if self.ema is not None else self.acc.unwrap_model(self.model)

    def accuracies(self) -> dict[str, float]:
        """Source val (label-free selection could use it) and target val accuracy (the only target labels read)."""
        model, recipe = self.shipped(), self.method.recipe
        return {"source_val_acc": round(accuracy(model, *self.source_val, recipe), 4),
                "target_val_acc": round(accuracy(model, *self.val, recipe), 4)}

    def after_step(self, trainer: Trainer, losses: dict[str, torch.Tensor]) -> None:
        if trainer.step % self.args.eval_every == 0 or trainer.step == self.total:
            trainer.log.write(step=trainer.step, **{k: round(v.item(), 4) for k, v in losses.items()},
                              **self.accuracies(), elapsed_s=round(trainer.budget.elapsed, 1))

    def card(self, card: dict, trainer: Trainer) -> dict:
        args, method = self.args, self.method
        card["training"].update(
            epochs_equivalent=round(trainer.step / self.steps_per_epoch, 2), optimizer="Adam", method=args.method,
            method_summary=method.summary, losses={k: v for k, v in asdict(method).items() if isinstance(v, float) and v},
            recipe=method.recipe, lr_schedule="lr0 / (1 + 10p)^0.75" if method.recipe == "improved" else "constant",
            weights="EMA (decay 0.999)" if self.ema is not None else "last step",
        )
        if method.self_training:
            card["training"].update(threshold=args.threshold, unlabeled_warm_up="AdaMatch half-cosine to 1 at half the plan")
        if method.vat:
            card["training"]["vat_eps"] = args.vat_eps
        card["data"] = {
            "source": f"MNIST-M train, {self.sizes['source']} images with labels" if method.mode != "target_only" else None,
            "target": f"{args.target} adapt split, {self.sizes['adapt']} images "
                      f"({'labels used' if method.mode == 'target_only' else 'no labels'})",
            "protocol": "training.data.splits: adapt / val (selection only) / test (report only)",
            "monitoring": f"{args.target} val split ({self.sizes['val']} images); MNIST-M val (first {SOURCE_VAL_IMAGES})",
            "root": str(args.data),
        }
        card["preprocess"] = {"normalize": "per_image" if method.recipe == "improved" else "half", "size": 28}
        card["metrics"] = self.accuracies() | {"target_val_images": self.sizes["val"]}
        print(f"[{trainer.name}] {args.target} val accuracy {card['metrics']['target_val_acc']:.4f}")
        return card


def train(args: argparse.Namespace) -> dict:
    args.lr = args.lr or METHODS[args.method].lr
    trainer = Trainer(args, run_name(args))
    return trainer.fit(DANNTask(args, trainer))
