"""The target protocol: adapt, val and test are disjoint, cover the layout, and never move."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.data.datasets import load_digits
from training.data.splits import PARTS, load_target, val_rows


def _keys(x: torch.Tensor) -> set[bytes]:
    return {img.numpy().tobytes() for img in x}


@pytest.mark.parametrize("domain", ["svhn", "usps"])
def test_parts_are_disjoint_and_cover_the_layout(small_hw2_data: Path, domain: str) -> None:
    parts = {p: load_target(small_hw2_data, domain, p) for p in PARTS}
    train_x, train_y = load_digits(small_hw2_data, domain, "train")
    test_x, test_y = load_digits(small_hw2_data, domain, "val")
    assert len(parts["adapt"][0]) + len(parts["val"][0]) == len(train_x)
    assert len(parts["val"][0]) == len(val_rows(len(train_x))) > 0
    assert torch.equal(parts["test"][0], test_x) and torch.equal(parts["test"][1], test_y), "test is the layout's val.csv"
    rows = val_rows(len(train_x))
    assert torch.equal(parts["val"][0], train_x[rows]) and torch.equal(parts["val"][1], train_y[rows])
    adapt, val, test = (_keys(parts[p][0]) for p in PARTS)
    assert not adapt & val and not val & test, "a val image is also in another part"


def test_val_rows_are_fixed_and_scale_with_the_split() -> None:
    assert np.array_equal(val_rows(7291), val_rows(7291)), "val must not depend on the run"
    assert len(val_rows(7291)) == len(val_rows(6400)) == 1000
    assert len(val_rows(50)) == 10, "a small layout keeps four fifths to adapt on"
    assert len(np.unique(val_rows(6400))) == 1000


def test_limit_cuts_only_the_adapt_part(small_hw2_data: Path) -> None:
    assert len(load_target(small_hw2_data, "usps", "adapt", limit=3)[0]) == 3
    assert len(load_target(small_hw2_data, "usps", "val", limit=3)[0]) == len(load_target(small_hw2_data, "usps", "val")[0])
    with pytest.raises(ValueError, match="unknown part"):
        load_target(small_hw2_data, "usps", "train")
    with pytest.raises(ValueError, match="unknown target"):
        load_target(small_hw2_data, "mnistm", "val")
