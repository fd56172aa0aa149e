"""The 95% intervals against textbook values and against scipy: Student t over seeds, Wilson per run."""

from __future__ import annotations

import math
import statistics

import pytest

from training.intervals import correct_count, summarize, t_interval, t_quantile, wilson_interval

Z95 = 1.959963984540054  # the normal 0.975 quantile


@pytest.mark.parametrize(("df", "table"), [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (29, 2.045)])
def test_t_quantile_matches_the_printed_table(df: int, table: float) -> None:
    assert t_quantile(df) == pytest.approx(table, abs=5e-4)


def test_t_quantile_matches_scipy_for_odd_and_even_degrees_of_freedom() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 41):
        for confidence in (0.9, 0.95, 0.99):
            assert t_quantile(df, confidence) == pytest.approx(stats.t.ppf((1 + confidence) / 2, df), rel=1e-9)


def test_t_interval_of_three_seeds_is_the_textbook_formula() -> None:
    runs = [0.7113, 0.7175, 0.7294]  # the served SVHN method's three seeds
    half = 4.302652729911275 * statistics.stdev(runs) / math.sqrt(3)
    lo, hi = t_interval(runs)
    assert (lo, hi) == pytest.approx((statistics.mean(runs) - half, statistics.mean(runs) + half), abs=1e-12)
    assert half == pytest.approx(0.023, abs=5e-4), "the issue's ±0.023 on the 3-seed mean"
    assert t_interval([0.5]) is None, "one run has no spread over seeds"


def test_wilson_interval_of_1138_out_of_1600_is_the_textbook_formula() -> None:
    n, p = 1600, 1138 / 1600
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 / (1 + Z95**2 / n) * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n))
    lo, hi = wilson_interval(0.7113, n)  # the stored, rounded figure still names 1,138 images
    assert (lo, hi) == pytest.approx((centre - half, centre + half), abs=1e-12)
    assert (round(lo, 4), round(hi, 4)) == (0.6886, 0.7329)
    assert math.sqrt(p * (1 - p) / n) == pytest.approx(0.011, abs=5e-4), "the issue's sampling error on SVHN"


def test_wilson_interval_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for correct, n in ((1138, 1600), (1904, 2007), (0, 1000), (1000, 1000), (7, 9)):
        ci = stats.binomtest(correct, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(correct / n, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_a_figure_that_is_no_count_of_the_images_is_refused() -> None:
    assert correct_count(0.9487, 2007) == 1904
    with pytest.raises(ValueError, match="no count"):
        correct_count(0.7120, 1600)  # 1,139.2 images


def test_summarize_stores_what_reproduces_it() -> None:
    cell = summarize([0.99, 0.996, 0.996], images=1000)
    assert cell["runs"] == [0.99, 0.996, 0.996] and cell["mean"] == 0.994
    assert cell["ci95"][1] == 1.0, "an accuracy's interval is clipped to [0, 1]"
    assert len(cell["runs_ci95"]) == 3 and cell["runs_ci95"][0][0] < 0.99 < cell["runs_ci95"][0][1]
    seconds = summarize([1.0, 2.0, 9.0])
    assert "runs_ci95" not in seconds and seconds["ci95"][0] < 0, "no clipping but for accuracies"
    assert summarize([0.5], images=10)["ci95"] is None
