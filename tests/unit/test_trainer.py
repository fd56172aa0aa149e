"""The one Trainer: a resume is the run it continues, a clock-cut run says how far it got, a run on its plan is not cut."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from models.checkpoints import load_state, read_card
from training.__main__ import main as train_main

# 12 images per split, batch 4: three steps an epoch, so step 2 is in the middle of one.
COMMANDS = {
    "digit-classifier": ["classifier"],  # a one-cycle schedule, augmentation drawn from the run's generator
    "dcgan-B": ["dcgan", "--variant", "B"],  # noise drawn from torch's global generator
    "dann-usps": ["dann", "--target", "usps"],  # EMA weights, batches drawn by the step itself
    "ddpm-digits": ["ddpm", "--base-channels", "8", "--sample-every", "1000", "--warmup-steps", "2"],  # EMA, warm-up, noise
}


def _run(name: str, data: Path, run: Path, ckpt: Path, *flags: str) -> dict:
    train_main([*COMMANDS[name], "--data", str(data), "--out", str(run), "--checkpoint-dir", str(ckpt),
                "--batch-size", "4", "--epochs", "2", "--cpu", *flags])
    return read_card(ckpt, name)["training"]


def _equal(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMMANDS))
def test_resume_continues_the_run_it_stopped(name: str, small_hw2_data: Path, tmp_path: Path) -> None:
    straight = _run(name, small_hw2_data, tmp_path / "straight", tmp_path / "a", "--max-steps", "4")
    # The same plan (DANN's schedules follow --max-steps), cut by the clock after one step, in the middle of an epoch.
    assert _run(name, small_hw2_data, tmp_path / "cut", tmp_path / "b", "--max-steps", "4", "--max-minutes", "0.00001")["steps"] == 1
    if name != "dann-usps":  # and again at the end of the first epoch (DANN's plan would change with --max-steps)
        assert _run(name, small_hw2_data, tmp_path / "cut", tmp_path / "b", "--max-steps", "3", "--resume")["epochs_completed"] == 1
    resumed = _run(name, small_hw2_data, tmp_path / "cut", tmp_path / "b", "--max-steps", "4", "--resume")
    assert straight["steps"] == resumed["steps"] == 4
    # Same batches, same augmentation, same noise, same optimiser moments: the same weights, to the bit.
    shipped_a, shipped_b = load_state(tmp_path / "a", name), load_state(tmp_path / "b", name)
    assert shipped_a.keys() == shipped_b.keys()
    assert all(torch.equal(shipped_a[k], shipped_b[k]) for k in shipped_a), "a run resumed after steps 1 and 3 differs from one run of 4 steps"
    state_a, state_b = (torch.load(p / "state.pt", weights_only=True) for p in (tmp_path / "straight", tmp_path / "cut"))
    for key in ("opt", "opt_g", "opt_d", "sched", "ema", "rng", "rng_global", "order_gen", "order_rng", "in_epoch", "step", "epoch"):
        if key in state_a:
            assert _equal(state_a[key], state_b[key]), f"{key} differs after the resume"


@pytest.mark.slow
def test_a_resume_starts_at_the_saved_step(small_hw2_data: Path, tmp_path: Path) -> None:
    _run("digit-classifier", small_hw2_data, tmp_path / "run", tmp_path / "ckpt", "--max-steps", "2")
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    assert (state["step"], state["epoch"], state["in_epoch"]) == (2, 0, 2)
    card = _run("digit-classifier", small_hw2_data, tmp_path / "run", tmp_path / "ckpt", "--resume")
    assert card["steps"] == card["steps_planned"] == 6 and card["epochs_completed"] == 2
    assert card["throughput"]["steps"] == 4, "the resumed run trained only the steps it had left"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["digit-classifier", "dann-usps"])
def test_a_run_cut_by_the_clock_says_how_far_it_got(name: str, small_hw2_data: Path, tmp_path: Path) -> None:
    card = _run(name, small_hw2_data, tmp_path / "run", tmp_path / "ckpt", "--max-minutes", "0.00001")
    assert card["steps"] == 1
    assert card["stopped_early"] is True and card["completed"] is False
    assert card["stopped_at"].startswith(f"1 of {card['steps_planned']} planned steps")
    assert card["steps_planned"] > 1


@pytest.mark.slow
@pytest.mark.parametrize(("name", "flags", "planned"), [
    ("digit-classifier", [], 6),  # the whole epoch plan
    ("dann-usps", ["--max-steps", "3"], 3),  # a step plan
    ("dcgan-B", ["--max-steps", "2"], 2),  # epochs capped by --max-steps
])
def test_a_run_that_ends_on_its_plan_is_not_stopped_early(name: str, flags: list[str], planned: int, small_hw2_data: Path,
                                                          tmp_path: Path) -> None:
    card = _run(name, small_hw2_data, tmp_path / "run", tmp_path / "ckpt", *flags)
    assert card["steps"] == card["steps_planned"] == planned
    assert card["stopped_early"] is False and card["completed"] is True
    assert "stopped_at" not in card
