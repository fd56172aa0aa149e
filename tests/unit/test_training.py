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
