"""Every training command runs end to end on a small slice, writes a loadable checkpoint, and resumes."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.checkpoints import load_model, read_card
from training.__main__ import main as train_main

COMMANDS = {
    "dcgan-A": ["dcgan", "--variant", "A"],
    "dcgan-B": ["dcgan", "--variant", "B"],
    "ddpm-digits": ["ddpm", "--base-channels", "8"],
    "dann-usps": ["dann", "--target", "usps", "--mode", "dann"],
    "dann-svhn-source-only-plain": ["dann", "--target", "svhn", "--mode", "source_only", "--recipe", "plain"],
    "dann-svhn-target-only": ["dann", "--target", "svhn", "--mode", "target_only"],
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
    assert card["training"]["wall_time_s"] >= first["training"]["wall_time_s"]
    model, _ = load_model(tmp_path / "ckpt", name)
    assert not model.training
    # Inference weights only: no discriminator, no optimiser state in the shipped file.
    assert not list((tmp_path / "ckpt").glob("*disc*"))
