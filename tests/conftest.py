"""Shared fixtures: the raw datasets and a small hw2_data tree built from them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL_LIMIT = 12  # images per split in the shared small build: enough to cover every code path


@pytest.fixture(scope="session")
def data_source() -> Path:
    """The raw datasets: $DATA_SOURCE, else ``<repo>/../shared/data``."""
    path = Path(os.environ.get("DATA_SOURCE") or REPO.parent / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"raw datasets not found at {path}; set DATA_SOURCE to the shared data folder")
    return path


@pytest.fixture(scope="session")
def small_hw2_data(data_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """All four parts built with seed 0 and ``SMALL_LIMIT`` images per split."""
    from training.data.build import build_all

    out = tmp_path_factory.mktemp("hw2_small") / "hw2_data"
    build_all(data_source, out, seed=0, limit=SMALL_LIMIT, workers=1, progress=False)
    return out
