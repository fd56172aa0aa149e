"""The stored DANN table and ``checkpoints/metrics.json`` agree with the table's own per-run figures: every
statistic and interval recomputes from the stored runs, and the served models' intervals are their seed-0 runs'."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from training.dann_intervals import interval_metrics, metric_key, summarize_table
from training.intervals import t_interval, wilson_interval

REPO = Path(__file__).resolve().parents[2]
TABLE = json.loads((REPO / "docs" / "report" / "dann_table.json").read_text())
METRICS = json.loads((REPO / "checkpoints" / "metrics.json").read_text())
SERVED = TABLE["served_method"]


def test_the_stored_table_recomputes_from_its_runs() -> None:
    assert summarize_table(copy.deepcopy(TABLE)) == TABLE, "rerun python -m training.dann_table --summarize"


@pytest.mark.parametrize("target", sorted(TABLE["rows"]))
def test_each_shipped_checkpoint_is_its_rows_seed_0_run(target: str) -> None:
    for method, row in TABLE["rows"][target].items():
        run = row["test"]["runs"][row["seeds"].index(TABLE["shipped_seed"])]
        assert METRICS[metric_key(target, method, SERVED)] == pytest.approx(run, abs=1e-9), (target, method)
    assert metric_key(target, SERVED, SERVED) == f"dann_{target}_test", "the served model's key"


def test_metrics_json_holds_the_tables_intervals_and_no_others() -> None:
    expected = interval_metrics(TABLE)
    assert {k: METRICS.get(k) for k in expected} == expected, "rerun python -m training.dann_table --summarize"
    stale = {k for k in METRICS if k.startswith("dann_") and ("ci95" in k or "seed_mean" in k)} - set(expected)
    assert not stale, f"interval keys no table row gives: {sorted(stale)}"


@pytest.mark.parametrize("target", sorted(TABLE["rows"]))
def test_the_served_models_intervals_recompute_from_the_stored_figures(target: str) -> None:
    images, key = TABLE["splits"][target]["test"], f"dann_{target}_test"
    lo, hi = wilson_interval(METRICS[key], images)
    assert (METRICS[f"{key}_ci95_lo"], METRICS[f"{key}_ci95_hi"]) == (round(lo, 4), round(hi, 4))
    runs = TABLE["rows"][target][SERVED]["test"]["runs"]
    assert len(runs) >= 3 and METRICS[f"{key}_seed_mean"] == round(sum(runs) / len(runs), 4)
    lo, hi = t_interval(runs)
    assert (METRICS[f"{key}_seed_mean_ci95_lo"], METRICS[f"{key}_seed_mean_ci95_hi"]) == (round(lo, 4), round(hi, 4))
