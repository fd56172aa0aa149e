"""What every training command shares: flags, device and precision, budgets, resume states, grids, cards."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from torchvision.utils import save_image

from contract.settings import REPO


def add_common_args(parser: argparse.ArgumentParser, *, epochs: int, batch_size: int, lr: float | None) -> None:
    parser.add_argument("--data", type=Path, default=Path("data/hw2_data"), help="root of the course layout (built by `python -m training.data`, or the course's hw2_data/)")
    parser.add_argument("--epochs", type=int, default=epochs, help="passes over the training set")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="batch size per process")
    parser.add_argument("--lr", type=float, default=lr, help="learning rate" + (" (default: the method's)" if lr is None else ""))
    parser.add_argument("--seed", type=int, default=0, help="random seed (printed, stored in the card)")
    parser.add_argument("--out", type=Path, default=None, help="run folder for resume state, logs and sample grids (default runs/<name>)")
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("checkpoints"), help="where the inference checkpoint and its card are written")
    parser.add_argument("--name", default=None, help="checkpoint name (default depends on the model)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/state.pt if it exists")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training images (smoke tests)")
    parser.add_argument("--max-minutes", type=float, default=None, help="stop cleanly after this much wall time and save what was trained")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimiser steps")
    parser.add_argument("--dry-run", action="store_true", help="one step, then save: a smoke test of the whole path")
    parser.add_argument("--cpu", action="store_true", help="train on the CPU even if CUDA is available")
    parser.add_argument("--mixed-precision", choices=["auto", "no", "bf16", "fp16"], default="auto", help="auto: bf16 on CUDA, none on CPU")


def make_accelerator(args: argparse.Namespace) -> Accelerator:
    """One engine for CPU, one GPU and ``torchrun``/``accelerate launch`` multi-GPU (DDP)."""
    cpu = args.cpu or not torch.cuda.is_available()
    precision = args.mixed_precision
    if precision == "auto":
        precision = "no" if cpu else "bf16"
    if cpu:
        # Attention softmax and small activations underflow to subnormals, which x86 handles very slowly.
        torch.set_flush_denormal(True)
    if not cpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    # Pinned index batches copied without a wait, so the host keeps queuing steps ahead of the GPU.
    return Accelerator(cpu=cpu, mixed_precision=precision, dataloader_config=DataLoaderConfiguration(non_blocking=True))


def hardware(accelerator: Accelerator) -> str:
    if accelerator.device.type == "cuda":
        name = torch.cuda.get_device_name(accelerator.device)
        return f"{accelerator.num_processes} x {name}"
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


class Budget:
    """Stops a run on --max-minutes / --max-steps / --dry-run, whichever comes first."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.start = time.monotonic()
        self.earlier = 0.0  # wall time of the runs this one resumes
        self.max_seconds = None if args.max_minutes is None else args.max_minutes * 60
        self.max_steps = 1 if args.dry_run else args.max_steps

    @property
    def elapsed(self) -> float:
        """Seconds of this process; --max-minutes applies to it."""
        return time.monotonic() - self.start

    @property
    def total(self) -> float:
        """Seconds of the whole training, resumed segments included."""
        return self.earlier + self.elapsed

    def exhausted(self, step: int) -> bool:
        if self.max_steps is not None and step >= self.max_steps:
            return True
        return self.max_seconds is not None and self.elapsed >= self.max_seconds


def save_state(path: Path, state: dict) -> None:
    """Atomic write, so a run killed mid-save still resumes from the previous state."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict | None:
    if not path.is_file():
        return None
    return torch.load(path, map_location="cpu", weights_only=True)


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    """Images in [0, 1] -> one PNG grid."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.float().clamp(0, 1), path, nrow=nrow, padding=2)


def command_line(argv: list[str] | None = None, module: str = "training") -> str:
    """The command that produced this run (or measurement), as recorded in the model card.

    Paths inside the checkout are written relative to it, so a card names no
    machine's folders and its command reruns from any clone.
    """
    return f"python -m {module} " + " ".join(shlex.quote(_relative(a)) for a in (sys.argv if argv is None else argv)[1:])


def _relative(arg: str) -> str:
    path = Path(arg)
    if path.is_absolute() and path.resolve().is_relative_to(REPO):
        return str(path.resolve().relative_to(REPO))
    return arg


def code_revision() -> str | None:
    """The git commit the code ran at, ``+dirty`` when files differ from it; None outside a git checkout.

    The shipped cards, metrics and report are outputs, not code: the evaluation commands rewrite them as they go.
    """
    try:
        run = partial(subprocess.run, cwd=REPO, capture_output=True, text=True, timeout=10, check=True)
        commit = run(["git", "rev-parse", "HEAD"]).stdout.strip()
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!checkpoints", ":!docs"]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def training_card(args: argparse.Namespace, accelerator: Accelerator, budget: Budget, revision: str | None, **extra) -> dict:
    """The card fields a training run knows; ``save_model`` adds kind, config and weights.

    ``revision`` is ``code_revision()`` as the run started: the code it imported, whatever was committed since.
    """
    return {
        "training": {
            "command": getattr(args, "command", None) or command_line(),
            "code_revision": revision,  # with the command, what reruns this training exactly
            "hardware": hardware(accelerator),
            "wall_time_s": round(budget.total, 1),
            "seed": args.seed,
            "batch_size": args.batch_size * accelerator.num_processes,
            "lr": args.lr,
            "mixed_precision": accelerator.mixed_precision,
            "torch": torch.__version__,
            "finished": time.strftime("%Y-%m-%d"),
            **extra,
        },
    }


class JsonLog:
    """One JSON object per line; what the report and the card read back."""

    def __init__(self, path: Path, enabled: bool = True) -> None:
        self.path, self.enabled = path, enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
