"""Every training command runs end to end on a small slice, writes a loadable checkpoint, and resumes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from models.checkpoints import load_model, read_card
from training.__main__ import main as train_main
from training.common import REPO

COMMANDS = {
    "dcgan-A": ["dcgan", "--variant", "A"],
    "dcgan-B": ["dcgan", "--variant", "B"],
    "ddpm-digits": ["ddpm", "--base-channels", "8"],
    "dann-usps": ["dann", "--target", "usps"],
    "dann-svhn-plain": ["dann", "--target", "svhn", "--method", "dann_plain"],
    "dann-svhn-vada": ["dann", "--target", "svhn", "--method", "vada"],
    "dann-svhn-target-only": ["dann", "--target", "svhn", "--method", "target_only"],
    "digit-classifier": ["classifier"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(COMMANDS))
def test_train_then_resume(name: str, small_hw2_data: Path, tmp_path: Path) -> None:
    common = ["--data", str(small_hw2_data), "--out", str(tmp_path / "run"), "--checkpoint-dir", str(tmp_path / "ckpt"),
              "--batch-size", "4", "--epochs", "3", "--cpu"]
    train_main([*COMMANDS[name], *common, "--max-steps", "2"])
    first = read_card(tmp_path / "ckpt", name)
    assert first["training"]["steps"] == 2
    assert (tmp_path / "run" / "state.pt").is_file()

    train_main([*COMMANDS[name], *common, "--max-steps", "3", "--resume"])
    card = read_card(tmp_path / "ckpt", name)
    assert card["training"]["steps"] == 3, "resume continues from step 2 instead of starting over"
    if (REPO / ".git").exists():
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        assert card["training"]["code_revision"].removesuffix("+dirty") == head, "the card names the code it ran"
    assert card["training"]["command"].startswith(f"python -m training {' '.join(COMMANDS[name])} --data "), "the card holds the run's own command"
    assert card["training"]["wall_time_s"] >= first["training"]["wall_time_s"]
    model, _ = load_model(tmp_path / "ckpt", name)
    assert not model.training
    # Inference weights only: no discriminator, no optimiser state in the shipped file.
    assert not list((tmp_path / "ckpt").glob("*disc*"))


@pytest.mark.slow
def test_dcgan_snapshots_and_the_choice_of_the_one_to_ship(small_hw2_data: Path, tmp_path: Path) -> None:
    import torch

    from models.checkpoints import load_state
    from training.evaluate import main as evaluate_main

    ckpt, run = tmp_path / "ckpt", tmp_path / "run"
    train_main(["dcgan", "--variant", "B", "--data", str(small_hw2_data), "--out", str(run), "--checkpoint-dir", str(ckpt),
                "--batch-size", "8", "--epochs", "3", "--snapshot-every", "1", "--cpu"])
    snapshots = sorted(p.stem for p in (run / "snapshots").glob("epoch_*.json"))
    assert snapshots == ["epoch_0001", "epoch_0002", "epoch_0003"]

    evaluate_main(["faces-snapshots", "--variant", "B", "--run", str(run), "--checkpoint-dir", str(ckpt), "--n", "4", "--device", "cpu"])
    card = read_card(ckpt, "dcgan-B")
    chosen = card["training"]["selected_snapshot"]
    assert sorted(int(epoch) for epoch in chosen["candidates"]) == [1, 2, 3]  # JSON keys are strings
    assert chosen["candidates"][str(chosen["epoch"])] == max(chosen["candidates"].values())
    assert card["training"]["epochs_trained"] == 3
    assert card["training"]["epochs_completed"] == chosen["epoch"]
    shipped, snapshot = load_state(ckpt, "dcgan-B"), load_state(run / "snapshots", f"epoch_{chosen['epoch']:04d}")
    assert shipped.keys() == snapshot.keys()
    assert all(torch.equal(shipped[k], snapshot[k]) for k in shipped), "the shipped weights are the chosen snapshot's"


def test_report_refuses_unknown_parts_and_keeps_the_digit_caption(tmp_path: Path) -> None:
    from training.report import DIGITS_CAPTION
    from training.report import main as report_main

    with pytest.raises(SystemExit):
        report_main(["--parts", "faces,charts", "--out", str(tmp_path)])
    # Tables alone quote how an earlier run drew the digit grid.
    (tmp_path / DIGITS_CAPTION).write_text("ddpm-400, guidance 2, seed 0\n")
    shipped = Path(__file__).resolve().parents[2] / "checkpoints"
    report_main(["--parts", "tables", "--checkpoint-dir", str(shipped), "--out", str(tmp_path)])
    assert "(ddpm-400, guidance 2, seed 0)" in (tmp_path / "README.md").read_text()


def _ddpm(data: Path, run: Path, ckpt: Path, *flags: str) -> dict:
    """A tiny diffusion run (no sample grids) and the card it wrote."""
    train_main(["ddpm", "--data", str(data), "--out", str(run), "--checkpoint-dir", str(ckpt), "--batch-size", "4",
                "--epochs", "2", "--sample-every", "1000", "--warmup-steps", "2", "--cpu", *flags])
    return read_card(ckpt, "ddpm-digits")


@pytest.fixture()
def tiny_ddpm(small_hw2_data: Path, tmp_path: Path) -> Path:
    """A 2-step checkpoint, 8 channels wide, to continue from."""
    _ddpm(small_hw2_data, tmp_path / "run0", tmp_path / "ckpt0", "--base-channels", "8", "--max-steps", "2")
    return tmp_path / "ckpt0"


def test_ddpm_init_from_starts_at_the_checkpoint_weights(small_hw2_data: Path, tiny_ddpm: Path, tmp_path: Path) -> None:
    import torch

    from models.checkpoints import load_state

    # No --base-channels: the width comes from the card.
    card = _ddpm(small_hw2_data, tmp_path / "run1", tmp_path / "ckpt1", "--init-from", str(tiny_ddpm / "ddpm-digits"), "--max-steps", "0")
    assert card["config"]["base_channels"] == 8
    start, init = load_state(tmp_path / "ckpt1", "ddpm-digits"), load_state(tiny_ddpm, "ddpm-digits")
    assert start.keys() == init.keys()
    assert all(torch.equal(start[k], init[k]) for k in init), "step 0 of a continued run is the init checkpoint"
    assert card["training"]["steps"] == 0 and card["training"]["total_steps"] == 2
    assert card["training"]["stopped_early"] is False


def test_ddpm_init_from_chains_the_lineage(small_hw2_data: Path, tiny_ddpm: Path, tmp_path: Path) -> None:
    first = read_card(tiny_ddpm, "ddpm-digits")["training"]
    # A folder is enough: the run's name (ddpm-digits) picks the card in it.
    second = _ddpm(small_hw2_data, tmp_path / "run1", tmp_path / "ckpt1", "--init-from", str(tiny_ddpm), "--max-steps", "3")["training"]
    assert [run["steps"] for run in second["lineage"]] == [2, 3]
    assert second["lineage"][0]["command"] == first["command"] and second["lineage"][0]["hardware"] == first["hardware"]
    assert second["lineage"][1]["init_from"] == str(tiny_ddpm / "ddpm-digits")
    assert second["steps"] == 3 and second["total_steps"] == 5
    assert second["total_epochs"] == sum(run["epochs"] for run in second["lineage"])
    assert second["total_wall_time_s"] == pytest.approx(first["wall_time_s"] + second["wall_time_s"], abs=0.2)
    assert second["stopped_early"] is False, "ending on --max-steps is the plan, not an early stop"

    third = _ddpm(small_hw2_data, tmp_path / "run2", tmp_path / "ckpt2", "--init-from", str(tmp_path / "ckpt1" / "ddpm-digits.json"),
                  "--max-steps", "1")["training"]
    assert [run["steps"] for run in third["lineage"]] == [2, 3, 1], "earlier lineages are flattened, not nested"
    assert third["total_steps"] == 6


def test_ddpm_init_from_refuses_flags_that_contradict_the_card(small_hw2_data: Path, tiny_ddpm: Path, tmp_path: Path) -> None:
    for flags in (["--base-channels", "16"], ["--timesteps", "100"]):
        with pytest.raises(SystemExit, match=flags[0]):
            _ddpm(small_hw2_data, tmp_path / "run1", tmp_path / "ckpt1", "--init-from", str(tiny_ddpm), *flags, "--max-steps", "1")
    # Agreeing flags are fine.
    _ddpm(small_hw2_data, tmp_path / "run1", tmp_path / "ckpt1", "--init-from", str(tiny_ddpm), "--base-channels", "8", "--max-steps", "0")


def test_ddpm_resume_of_a_continued_run_keeps_its_lineage(small_hw2_data: Path, tiny_ddpm: Path, tmp_path: Path) -> None:
    run, ckpt = tmp_path / "run1", tmp_path / "ckpt1"
    _ddpm(small_hw2_data, run, ckpt, "--init-from", str(tiny_ddpm), "--max-steps", "2")
    # --resume wins over --init-from when the state exists (the same command restarts a cut run)...
    card = _ddpm(small_hw2_data, run, ckpt, "--init-from", str(tiny_ddpm), "--resume", "--max-steps", "3")["training"]
    assert card["steps"] == 3 and [r["steps"] for r in card["lineage"]] == [2, 3] and card["total_steps"] == 5
    # ...and also without it: the lineage travels in state.pt.
    card = _ddpm(small_hw2_data, run, ckpt, "--resume", "--max-steps", "4")["training"]
    assert [r["steps"] for r in card["lineage"]] == [2, 4]
    # A state started from another checkpoint is not silently resumed.
    _ddpm(small_hw2_data, tmp_path / "fresh", tmp_path / "other", "--base-channels", "8", "--max-steps", "1")
    with pytest.raises(SystemExit, match="not started from"):
        _ddpm(small_hw2_data, tmp_path / "fresh", tmp_path / "other", "--init-from", str(tiny_ddpm), "--resume", "--max-steps", "2")


def test_ddpm_run_cut_by_the_clock_says_how_far_it_got(small_hw2_data: Path, tmp_path: Path) -> None:
    card = _ddpm(small_hw2_data, tmp_path / "run", tmp_path / "ckpt", "--base-channels", "8", "--max-minutes", "0.00001")["training"]
    assert card["stopped_early"] is True
    assert card["steps"] == 1 and card["steps_planned"] == 6  # 12 images, batch 4, 2 epochs
    assert card["stopped_at"].startswith("1 of 6 planned steps")
    assert card["throughput"]["steps"] == 1 and card["throughput"]["images_per_s"] > 0


def test_lineage_of_an_old_card_and_of_nested_lineages() -> None:
    from training.lineage import lineage_of, totals

    old = {"training": {"command": "a", "hardware": "gpu", "wall_time_s": 10, "steps": 100, "epochs_completed": 2, "seed": 0}}
    assert lineage_of(old) == [{"command": "a", "hardware": "gpu", "wall_time_s": 10, "steps": 100, "epochs": 2}]
    nested = {"training": {"lineage": [{"lineage": [{"steps": 1, "epochs": 1}, {"steps": 2}]}, {"steps": 3, "wall_time_s": 1.5}]}}
    assert [run["steps"] for run in lineage_of(nested)] == [1, 2, 3]
    assert totals(lineage_of(nested)) == {"total_steps": 6, "total_epochs": 1, "total_wall_time_s": 1.5}


def test_step_profiler_reports_a_window_cut_short(tmp_path: Path) -> None:
    import torch

    from training.timing import StepProfiler

    profiler = StepProfiler(600.0, torch.device("cpu"), tmp_path / "profile.txt")
    for _ in range(7):
        with profiler.phase("forward"):
            torch.ones(8, 8) @ torch.ones(8, 8)
        assert profiler.step_done() is None
    report = profiler.close()
    assert report is not None and "first 7 steps" in report and "forward" in report
    assert "torch.profiler, steps 5..7" in (tmp_path / "profile.txt").read_text()
    assert profiler.close() is None and profiler.step_done() is None
