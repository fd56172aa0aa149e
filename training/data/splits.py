"""The evaluation protocol of domain adaptation: three disjoint splits of each target domain.

=========  ======================================  =====================================
part       USPS                                    SVHN (the 8,000 images at hand)
=========  ======================================  =====================================
``adapt``  canonical train less ``val``: 6,291     file images 1-6,400 less ``val``: 5,400
``val``    1,000 of the canonical train            1,000 of file images 1-6,400
``test``   canonical test: 2,007                   file images 6,401-8,000: 1,600
=========  ======================================  =====================================

``adapt`` is what training adapts to, images only (labels only for the
target-only bound). ``val`` holds the only target labels any choice may read
(methods, hyper-parameters, step plans). ``test`` is the course's ``val`` folder
(``digits/<domain>/val.csv``), read only to report the shipped models and the
table, never to choose anything.

``val`` is a fixed random draw (``VAL_SEED``) from the layout's ``train.csv``,
so it does not depend on file order, and it is the same in every run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .datasets import load_digits

TARGETS: tuple[str, ...] = ("svhn", "usps")
PARTS: tuple[str, ...] = ("adapt", "val", "test")
VAL_SIZE = 1000
VAL_SEED = 2022


def val_rows(n_train: int) -> np.ndarray:
    """Row numbers of ``train.csv`` that form the target val split (sorted)."""
    size = min(VAL_SIZE, n_train // 5)  # a small layout (tests) keeps four fifths to adapt on
    return np.sort(np.random.default_rng(VAL_SEED).permutation(n_train)[:size])


def load_target(root: Path, domain: str, part: str, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One part of a target domain's protocol: uint8 (N, 3, 28, 28) images and int64 labels.

    ``limit`` keeps the first N images of ``adapt`` (smoke tests); val and test are always whole.
    """
    if domain not in TARGETS:
        raise ValueError(f"unknown target domain {domain!r}; choose from {list(TARGETS)}")
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}; choose from {list(PARTS)}")
    if part == "test":
        return load_digits(root, domain, "val")
    x, y = load_digits(root, domain, "train")
    in_val = np.zeros(len(y), dtype=bool)
    in_val[val_rows(len(y))] = True
    keep = torch.from_numpy(in_val if part == "val" else ~in_val)
    x, y = x[keep], y[keep]
    return (x[:limit], y[:limit]) if part == "adapt" else (x, y)
