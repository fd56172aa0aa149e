"""The digit evaluation's pieces: the diversity measure and the rule that picks the served sampler."""

from __future__ import annotations

import pytest
import torch

from models.pipelines import count_nfe
from models.scheduler import NoiseSchedule
from training.diversity import mean_pairwise_msssim, per_label_msssim
from training.evaluate_digits import (
    GRID,
    MAX_NFE,
    MSSSIM_TOLERANCE,
    config_label,
    select_default,
)


def test_msssim_is_one_for_copies_and_low_for_noise() -> None:
    one = torch.rand(1, 3, 28, 28)
    assert mean_pairwise_msssim(one.repeat(6, 1, 1, 1)) == pytest.approx(1.0, abs=1e-4)
    noise = torch.rand(40, 3, 28, 28, generator=torch.Generator().manual_seed(0))
    assert mean_pairwise_msssim(noise) < 0.2
    as_uint8 = (noise * 255).round().to(torch.uint8)
    assert mean_pairwise_msssim(as_uint8) == pytest.approx(mean_pairwise_msssim(as_uint8.float() / 255))


def test_per_label_msssim_never_pairs_across_labels() -> None:
    a, b = torch.zeros(1, 3, 28, 28), torch.ones(1, 3, 28, 28)
    images = torch.cat([a.repeat(3, 1, 1, 1), b.repeat(3, 1, 1, 1)])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    assert per_label_msssim(images, labels) == pytest.approx(1.0, abs=1e-4)  # each label is all copies


def _row(label: str, nfe: int, accuracy: float, msssim: float) -> dict:
    return {"label": label, "nfe": nfe, "accuracy": accuracy, "msssim": msssim}


def test_selection_keeps_the_nfe_budget_and_refuses_collapsed_digits() -> None:
    real = 0.10
    rows = [
        _row("costly", MAX_NFE + 1, 0.99, 0.10),
        _row("collapsed", MAX_NFE, 0.98, real + MSSSIM_TOLERANCE + 0.01),
        _row("good", MAX_NFE, 0.95, 0.12),
        _row("as good, more varied", 9, 0.95, 0.11),
        _row("worse", 8, 0.90, 0.10),
    ]
    assert select_default(rows, real)["label"] == "as good, more varied"
    with pytest.raises(SystemExit, match="no configuration"):
        select_default(rows[:2], real)


def test_grid_rows_are_distinct_and_the_budget_has_candidates() -> None:
    labels = [config_label(c) for c in GRID]
    assert len(set(labels)) == len(labels)
    schedule = NoiseSchedule()
    nfes = [count_nfe(c.sampler, c.steps, c.guidance_scale, c.guidance_interval, schedule) for c in GRID]
    assert sum(n <= MAX_NFE for n in nfes) >= 10
