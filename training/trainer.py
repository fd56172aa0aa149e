"""One training loop for every model: seed, resume, budget, progress, log, resume states, card, shipped weights.

A model hands the :class:`Trainer` a :class:`Task`: its optimiser step, the
objects whose state a resume needs (modules, optimisers, schedulers, EMA: the
``register_for_checkpointing`` of accelerate, kept in one ``state.pt`` so a
killed save never leaves half a state) and its card fields. Everything else
lives here once, in the manner of lucidrains' ``Trainer``.

A run's plan is in optimiser steps: the epochs (``--epochs``), capped by
``--max-steps`` (one step for ``--dry-run``). A run that ends on its plan is
``completed`` and not ``stopped_early``; one cut by ``--max-minutes`` is
``stopped_early`` and ``stopped_at`` says how far it got. A resume continues at
the saved step, mid-epoch included (the shuffle's state as the epoch began is in the state),
with the optimiser, scheduler, EMA and every random generator as they were.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from models.checkpoints import save_model

from .common import (
    Budget,
    JsonLog,
    code_revision,
    load_state,
    make_accelerator,
    save_state,
    training_card,
)
from .timing import Throughput, synchronize

PRINT_EVERY_S = 30.0  # throughput lines in the log; the progress bar is filtered out of GPU logs


class Task:
    """What one model supplies; the hooks default to doing nothing."""

    #: rows the Trainer shuffles into index batches each epoch; None: ``step`` draws its own batch
    n_items: int | None = None
    #: steps between loss read-backs (each waits for the GPU) and between log lines
    show_every, log_every = 10, 50

    def checkpointed(self) -> dict[str, Any]:
        """Objects with ``state_dict``/``load_state_dict`` that a resume restores, by their key in ``state.pt``."""
        raise NotImplementedError

    def step(self, batch: torch.Tensor | None, step: int) -> dict[str, torch.Tensor]:
        """One optimiser step; returns its losses as tensors, not read back (that would wait for the GPU)."""
        raise NotImplementedError

    def shipped(self) -> nn.Module:
        """The module the checkpoint holds (inference weights only)."""
        raise NotImplementedError

    def card(self, card: dict, trainer: Trainer) -> dict:
        """The Trainer's card, with this model's fields added."""
        return card

    def steps_planned(self, trainer: Trainer) -> int | None:
        """Steps of a run without epochs (``n_items`` None); epoch runs plan ``--epochs`` worth."""
        return None

    def log_fields(self) -> dict:
        """Values of this model added to each log line (a learning rate, say)."""
        return {}

    def extra_state(self) -> dict:
        """Plain values saved beside the checkpointed objects (what the next --resume rebuilds from)."""
        return {}

    def after_step(self, trainer: Trainer, losses: dict[str, torch.Tensor]) -> None: ...

    def after_epoch(self, trainer: Trainer) -> None: ...

    def before_save(self, trainer: Trainer) -> None: ...

    def at_end(self, trainer: Trainer) -> None: ...


def _rng_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "random": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["random"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class Trainer:
    """Runs a :class:`Task` to its plan or its budget, then writes the resume state, the card and the weights."""

    def __init__(self, args: argparse.Namespace, name: str) -> None:
        self.args, self.name = args, name
        self.revision = code_revision()  # now: the card names the code this process imported
        self.out = Path(args.out or f"runs/{name}")
        self.state_path = self.out / "state.pt"
        set_seed(args.seed)
        self.acc = make_accelerator(args)
        print(f"[{name}] seed {args.seed}, device {self.acc.device}, precision {self.acc.mixed_precision}")
        self.resumed = load_state(self.state_path) if args.resume else None  # read before the task builds: it may shape it
        self.budget = Budget(args)
        self.log = JsonLog(self.out / "log.jsonl", self.acc.is_main_process)
        self.gen = torch.Generator().manual_seed(args.seed)  # the tasks' own draws (augmentation, batches of their own)
        self.order_gen = torch.Generator().manual_seed(args.seed)  # the DataLoader's shuffle
        self.step = self.epoch = 0
        self.order_rng: torch.Tensor | None = None  # ``order_gen`` as this epoch began: its batch order, again
        self.in_epoch = 0  # batches of this epoch done
        self._batches: Any = None
        self.smoothed: dict[str, float] = {}
        self._pending: list[dict[str, torch.Tensor]] = []

    # -- the plan -------------------------------------------------------------------------------
    def _loader(self, n_items: int) -> DataLoader:
        """Index batches, shuffled each epoch; ``accelerator.prepare`` shards them across processes (DDP)."""
        batch = max(1, min(self.args.batch_size, n_items // self.acc.num_processes))  # a slice smaller than one batch still trains
        loader = DataLoader(range(n_items), batch_size=batch, shuffle=True, drop_last=True, generator=self.order_gen,
                            pin_memory=self.acc.device.type == "cuda")
        return self.acc.prepare(loader)

    def planned(self, task: Task, loader: DataLoader | None) -> int:
        plan = task.steps_planned(self) if loader is None else self.args.epochs * len(loader)
        assert plan is not None, "a task without n_items plans its own steps"
        return plan if self.budget.max_steps is None else min(plan, self.budget.max_steps)

    def _next_batch(self, loader: DataLoader | None) -> torch.Tensor | None:
        if loader is None:
            return None
        if self._batches is None:
            if self.in_epoch == 0:
                self.order_rng = self.order_gen.get_state()
            else:  # a resumed epoch: its order again, less the batches done
                self.order_gen.set_state(self.order_rng)
            self._batches = iter(self.acc.skip_first_batches(loader, self.in_epoch) if self.in_epoch else loader)
        return next(self._batches)

    # -- state ----------------------------------------------------------------------------------
    def _unwrapped(self, obj: Any) -> Any:
        return self.acc.unwrap_model(obj) if isinstance(obj, nn.Module) else obj

    def save(self, task: Task) -> None:
        if not self.acc.is_main_process:
            return
        task.before_save(self)
        objects = {key: self._unwrapped(obj).state_dict() for key, obj in task.checkpointed().items()}
        save_state(self.state_path, {**objects, **task.extra_state(), "epoch": self.epoch, "step": self.step,
                                     "rng": self.gen.get_state(), "rng_global": _rng_state(), "wall_time_s": self.budget.total,
                                     "order_rng": self.order_rng, "order_gen": self.order_gen.get_state(), "in_epoch": self.in_epoch})

    def _restore(self, task: Task, state: dict) -> None:
        for key, obj in task.checkpointed().items():
            self._unwrapped(obj).load_state_dict(state[key])
        self.epoch, self.step, self.budget.earlier = state.get("epoch", 0), state["step"], state.get("wall_time_s", 0.0)
        self.gen.set_state(state["rng"])
        if "rng_global" in state:
            _set_rng_state(state["rng_global"])
        if "order_gen" in state:  # older states start a new epoch
            self.order_gen.set_state(state["order_gen"])
            self.order_rng, self.in_epoch = state["order_rng"], state["in_epoch"]
        print(f"[{self.name}] resumed at epoch {self.epoch}, step {self.step}")

    # -- the loop -------------------------------------------------------------------------------
    def fit(self, task: Task) -> dict:
        if self.resumed is not None:
            self._restore(task, self.resumed)
        loader = None if task.n_items is None else self._loader(task.n_items)
        planned = self.planned(task, loader)
        self.task, self._printed_at = task, self.budget.elapsed
        epochs = self.args.epochs if task.n_items is not None else None
        self.speed = Throughput(self.args.batch_size * self.acc.num_processes, start_step=self.step)
        bar = tqdm(total=planned, initial=min(self.step, planned), desc=self.name, disable=not self.acc.is_local_main_process)
        saved_at, stopped = self.budget.elapsed, False
        while self.step < planned and (epochs is None or self.epoch < epochs) and not stopped:
            losses = task.step(self._next_batch(loader), self.step)
            self.step, self.in_epoch = self.step + 1, self.in_epoch + 1
            bar.update(1)
            self._losses(losses, bar)
            task.after_step(self, losses)
            stopped = self.budget.exhausted(self.step)
            if loader is not None and self.in_epoch == len(loader):  # a stop on the last batch still completes the epoch
                self.epoch, self.in_epoch, self._batches = self.epoch + 1, 0, None
                task.after_epoch(self)
                if not stopped and self.budget.elapsed - saved_at >= getattr(self.args, "save_every_minutes", 0.0) * 60:
                    with self.speed.paused():
                        self.save(task)
                    saved_at = self.budget.elapsed
        bar.close()
        return self._finish(task, planned)

    def _losses(self, losses: dict[str, torch.Tensor], bar: tqdm) -> None:
        self._pending.append({k: v.detach() for k, v in losses.items()})
        if self.step % self.task.show_every == 0:
            self.read_back()
            bar.set_postfix({k: f"{v:.4f}" for k, v in self.smoothed.items()}, refresh=False)
        if self.step % self.task.log_every == 0:
            rates = self.speed.interval(self.step)  # the read-back above waited for the device
            self.log.write(step=self.step, epoch=self.epoch, **self.smoothed, **self.task.log_fields(), elapsed_s=round(self.budget.elapsed, 1), **rates)
            if self.acc.is_main_process and self.budget.elapsed - self._printed_at >= PRINT_EVERY_S:
                self._printed_at = self.budget.elapsed
                tqdm.write(f"[{self.name}] step {self.step}, epoch {self.epoch + 1}: "
                           f"{rates['steps_per_s']:.2f} steps/s, {rates['images_per_s']:.0f} images/s")

    def read_back(self) -> dict[str, float]:
        """Fold the losses not yet read back into running averages (0.98), in one device wait."""
        if self._pending:
            keys = list(self._pending[0])
            values = torch.stack([torch.stack([p[k].float().reshape(()) for k in keys]) for p in self._pending]).tolist()
            for row in values:
                for key, value in zip(keys, row, strict=True):
                    self.smoothed[key] = value if key not in self.smoothed else 0.98 * self.smoothed[key] + 0.02 * value
            self._pending.clear()
        return self.smoothed

    def _finish(self, task: Task, planned: int) -> dict:
        synchronize(self.acc.device)
        throughput = self.speed.summary(self.step)
        task.at_end(self)
        self.read_back()
        self.save(task)
        stopped_early = self.step < planned  # only the clock cuts a run short of its plan
        fields = {"steps": self.step, "steps_planned": planned, "stopped_early": stopped_early, "completed": not stopped_early,
                  "throughput": throughput}
        if task.n_items is not None:
            fields.update(epochs_completed=self.epoch, epochs_planned=self.args.epochs)
        if stopped_early:
            fields["stopped_at"] = (f"{self.step} of {planned} planned steps ({100 * self.step / max(planned, 1):.1f}%), "
                                    f"cut by --max-minutes {self.args.max_minutes}")
        card = task.card(training_card(self.args, self.acc, self.budget, self.revision, **fields), self)
        if self.acc.is_main_process:
            path = save_model(task.shipped(), self.args.checkpoint_dir, self.name, card)
            print(f"[{self.name}] {self.step} steps, {self.epoch} epochs in {self.budget.elapsed:.0f}s -> {path}")
            print(f"[{self.name}] throughput: {throughput['steps']} steps in {throughput['seconds']}s of training: "
                  f"{throughput['steps_per_s']:.2f} steps/s, {throughput['images_per_s']:.0f} images/s")
            if stopped_early:
                print(f"[{self.name}] stopped early: {fields['stopped_at']}")
        return card
