"""95% intervals for accuracies: a Student t interval for a mean over seeds, a Wilson score interval for one run.

The train extra carries no scipy, so the t quantile comes from the closed-form CDF of Student's t with an integer
number of degrees of freedom (Abramowitz & Stegun 26.7.3-4), solved by bisection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

CONFIDENCE = 0.95
T_METHOD = ("two-sided 95% Student t interval over seeds: mean ± t(0.975, n-1) · s / √n, s the sample std "
            "(an accuracy's clipped to [0, 1])")
WILSON_METHOD = "95% Wilson score interval of one run's accuracy, binomial over the split's images"


def _t_central(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with ``df`` degrees of freedom."""
    theta = math.atan(t / math.sqrt(df))
    c2 = math.cos(theta) ** 2
    series, term = 0.0, 1.0
    if df % 2:
        for k in range((df - 1) // 2):
            series += term
            term *= c2 * (2 * k + 2) / (2 * k + 3)
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * series)
    for k in range(df // 2):
        series += term
        term *= c2 * (2 * k + 1) / (2 * k + 2)
    return math.sin(theta) * series


def t_quantile(df: int, confidence: float = CONFIDENCE) -> float:
    """The t with P(|T| < t) = ``confidence``: t(0.975, df) for a two-sided 95% interval."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    lo, hi = 0.0, 1.0
    while _t_central(hi, df) < confidence:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if _t_central(mid, df) < confidence else (lo, mid)
    return (lo + hi) / 2


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    n = len(values)
    mean = math.fsum(values) / n
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0


def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Student t interval of the mean of ``values``; None for fewer than two, whose spread is unknown."""
    n = len(values)
    if n < 2:
        return None
    mean, std = mean_std(values)
    half = t_quantile(n - 1, confidence) * std / math.sqrt(n)
    return mean - half, mean + half


def correct_count(accuracy: float, images: int) -> int:
    """The number of correct images behind an accuracy on ``images`` images.

    A figure rounded to 4 decimals still names its count when images < 10,000 (the rounding moves it by less
    than half an image), which is what lets the intervals be recomputed from the stored tables.
    """
    count = round(accuracy * images)
    if abs(count / images - accuracy) > 5e-5 + 1e-9:
        raise ValueError(f"{accuracy} is no count out of {images} images")
    return count


def wilson_interval(accuracy: float, images: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of an accuracy measured on ``images`` images (binomial sampling error)."""
    p = correct_count(accuracy, images) / images
    z = NormalDist().inv_cdf((1 + confidence) / 2)
    denom = 1 + z * z / images
    centre = (p + z * z / (2 * images)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / images + z * z / (4 * images * images))
    return max(0.0, centre - half), min(1.0, centre + half)


def _rounded(interval: tuple[float, float] | None, clip: bool = False) -> list[float] | None:
    if interval is None:
        return None
    lo, hi = (max(0.0, interval[0]), min(1.0, interval[1])) if clip else interval
    return [round(lo, 4), round(hi, 4)]


def summarize(values: Sequence[float], images: int | None = None) -> dict:
    """Mean, sample std and t interval over seeds of the runs rounded as stored, so the stored runs alone
    reproduce them; with ``images`` (the runs are accuracies), each run's Wilson interval too, and the t interval
    clipped to [0, 1], since a symmetric interval near a perfect score would claim more than 100%."""
    runs = [round(float(v), 4) for v in values]
    mean, std = mean_std(runs)
    cell = {"mean": round(mean, 4), "std": round(std, 4), "ci95": _rounded(t_interval(runs), clip=images is not None),
            "runs": runs}
    if images is not None:
        cell["runs_ci95"] = [_rounded(wilson_interval(v, images)) for v in runs]
    return cell
