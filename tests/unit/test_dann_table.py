"""The DANN table end to end on a small layout: runs to one plan per seed, a resumable sweep,
val and test columns, seed 0 shipped under the served names, and the evaluation of what ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.checkpoints import list_cards
from training.dann_table import main as table_main
from training.evaluate import main as evaluate_main


@pytest.mark.slow
def test_table_sweep_ship_and_evaluate(small_hw2_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, table_file, shipped = tmp_path / "table", tmp_path / "report" / "dann_table.json", tmp_path / "ckpt"
    flags = ["--data", str(small_hw2_data), "--root", str(root), "--table", str(table_file), "--targets", "usps",
             "--methods", "dann,dann_st", "--seeds", "0,1", "--steps", "2"]
    table_main(flags)
    table = json.loads(table_file.read_text())
    assert table["steps"] == 2 and table["shipped_seed"] == 0
    for method in ("dann", "dann_st"):
        row = table["rows"]["usps"][method]
        assert row["seeds"] == [0, 1]
        for part in ("val", "test"):
            assert len(row[part]["runs"]) == 2 and all(0 <= v <= 1 for v in row[part]["runs"])
            assert len(row[part]["ci95"]) == 2 and len(row[part]["runs_ci95"]) == 2
    assert table["served_method"] == "dann_st" and "ci95" in table["intervals"]
    cards = list_cards(root / "checkpoints")
    assert {c["training"]["steps_planned"] for c in cards.values()} == {2}
    assert all(c["training"]["completed"] for c in cards.values())
    assert cards["dann-usps-dann-st-s1"]["training"]["method"] == "dann_st"

    written = {p: p.stat().st_mtime_ns for p in (root / "checkpoints").glob("*.safetensors")}
    capsys.readouterr()
    table_main(flags)
    assert "4 of 4 runs already done; training 0" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in written} == written, "a completed run was trained again"

    table_main([*flags, "--ship", "--checkpoint-dir", str(shipped)])
    served = list_cards(shipped)
    assert set(served) == {"dann-usps", "dann-usps-dann"}
    assert served["dann-usps"]["training"]["seed"] == 0 and served["dann-usps"]["training"]["method"] == "dann_st"
    assert served["dann-usps"]["training"]["table_run"]["run"] == "dann-usps-dann-st-s0"

    evaluate_main(["dann", "--data", str(small_hw2_data), "--checkpoint-dir", str(shipped), "--device", "cpu"])
    metrics = json.loads((shipped / "metrics.json").read_text())
    figures = {k for k in metrics if "ci95" not in k and "seed_mean" not in k}
    assert figures == {"dann_usps_test", "dann_usps_val", "dann_usps_dann"}
    for key in ("dann_usps_test", "dann_usps_dann", "dann_usps_test_seed_mean"):
        assert metrics[f"{key}_ci95_lo"] <= metrics[key] <= metrics[f"{key}_ci95_hi"], key
    card = list_cards(shipped)["dann-usps"]["metrics"]
    assert card["target_test_acc"] == metrics["dann_usps_test"]
    assert list_cards(shipped)["dann-usps"]["evaluation"]["dann"]["command"].startswith("python -m training.evaluate dann --data ")
    assert card["target_test_images"] == table["splits"]["usps"]["test"]
    assert table["rows"]["usps"]["dann_st"]["test"]["runs"][0] == pytest.approx(metrics["dann_usps_test"], abs=1e-4)
