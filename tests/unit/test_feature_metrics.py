"""Frechet distance and k-NN precision / recall on the evaluation classifier's features, and their wiring
into the digit evaluation (the real reference, its floor, rows cached before the figures existed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.checkpoints import load_model
from models.loading import EVAL_CLASSIFIER
from training.common import REPO
from training.data.datasets import load_digits
from training.eval_common import classify_uint8
from training.evaluate_digits import _feature_cells, measure, real_reference
from training.feature_metrics import (
    classifier_features,
    frechet_distance,
    frechet_from_stats,
    gaussian_stats,
    precision_recall,
)


def _exact(n: int, mean: np.ndarray, root: np.ndarray, seed: int) -> np.ndarray:
    """``n`` points whose sample mean is ``mean`` and sample covariance ``root @ root.T``, up to rounding."""
    z = np.random.default_rng(seed).normal(size=(n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # whitened: covariance exactly I
    return z @ root.T + mean


def _cloud(n: int, d: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d))


def test_fd_of_a_set_with_itself_is_zero_also_with_fewer_points_than_dimensions() -> None:
    for n, d in ((300, 16), (50, 128)):  # the second: singular covariances, as 10 digits per label give
        x = _cloud(n, d, seed=n) * np.linspace(0.1, 3, d)
        assert frechet_distance(x, x) == pytest.approx(0, abs=1e-6 * np.trace(np.cov(x, rowvar=False)))


def test_fd_of_a_shifted_copy_is_the_squared_shift_and_grows_with_it() -> None:
    x = _cloud(400, 16, seed=1)
    direction = np.random.default_rng(2).normal(size=16)
    values = [frechet_distance(x, x + s * direction) for s in (0.5, 1.0, 2.0)]
    assert values == pytest.approx([s * s * direction @ direction for s in (0.5, 1.0, 2.0)], rel=1e-6)
    assert values[0] < values[1] < values[2]


def test_fd_matches_the_closed_form_for_diagonal_gaussians() -> None:
    d = 6
    a, b = np.linspace(0.5, 3, d), np.linspace(2, 0.2, d)
    mu1, mu2 = np.zeros(d), np.arange(d) / 3
    x, y = _exact(500, mu1, np.diag(np.sqrt(a)), seed=3), _exact(700, mu2, np.diag(np.sqrt(b)), seed=4)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-8)


def test_fd_matches_the_closed_form_for_a_scaled_full_covariance() -> None:
    # S2 = c^2 S1 gives tr(S1 + S2 - 2 (S1 S2)^(1/2)) = tr(S1) (1 - c)^2, whatever S1's rotation.
    root = np.random.default_rng(5).normal(size=(8, 8))
    c, shift = 1.7, np.full(8, 0.25)
    x, y = _exact(400, np.zeros(8), root, seed=6), _exact(400, shift, c * root, seed=7)
    expected = shift @ shift + np.trace(root @ root.T) * (1 - c) ** 2
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-8)


def test_fd_agrees_with_the_symmetric_form_for_non_commuting_covariances() -> None:
    # tr (S1 S2)^(1/2) = tr (S1^(1/2) S2 S1^(1/2))^(1/2): an independent route through eigh only.
    rng = np.random.default_rng(8)
    r1, r2 = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = r1 @ r1.T, r2 @ r2.T
    w, v = np.linalg.eigh(s1)
    half = (v * np.sqrt(w)) @ v.T
    expected = np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.linalg.eigvalsh(half @ s2 @ half)).sum()
    assert frechet_from_stats(np.zeros(5), s1, np.zeros(5), s2) == pytest.approx(expected, rel=1e-8)


def test_precision_and_recall_are_one_for_identical_sets_and_high_for_a_fresh_sample() -> None:
    real = _cloud(400, 8, seed=9)
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    precision, recall = precision_recall(real, _cloud(400, 8, seed=10))
    assert 0.75 < precision < 1 and 0.75 < recall < 1


def test_points_off_the_real_manifold_lower_precision_and_keep_recall() -> None:
    real = _cloud(300, 8, seed=11)
    far = _cloud(300, 8, seed=12) + 50  # fifty standard deviations away on every axis
    assert precision_recall(real, np.concatenate([real, far])) == (0.5, 1.0)


def test_collapsed_samples_keep_precision_and_lose_recall() -> None:
    real = _cloud(400, 8, seed=13)
    collapsed = _cloud(400, 8, seed=14) * 0.05  # all near the mode: realistic, not varied
    precision, recall = precision_recall(real, collapsed)
    assert precision > 0.95 and recall < 0.1


def test_gaussian_stats_refuse_a_single_point() -> None:
    with pytest.raises(ValueError, match="at least two"):
        gaussian_stats(np.zeros((1, 4)))


# ---------------------------------------------------------------- the shipped classifier on real digits
@pytest.fixture(scope="module")
def mnistm(data_source: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MNIST-M alone, its first 200 images per split: a few of every label, built in about a second."""
    from training.data.build import build_all

    out = tmp_path_factory.mktemp("mnistm") / "hw2_data"
    build_all(data_source, out, seed=0, limit=200, parts=["mnistm"], workers=1, verify=False, progress=False)
    return out


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    model, _ = load_model(REPO / "checkpoints", EVAL_CLASSIFIER)
    return model


def test_features_are_the_128d_input_of_the_classifier_head(mnistm: Path, classifier: torch.nn.Module) -> None:
    images, _ = load_digits(mnistm, "mnistm", "val", limit=20)
    features = classifier_features(classifier, images)
    assert features.shape == (20, 128) and features.dtype == np.float64 and np.isfinite(features).all()
    assert features.std(axis=0).max() > 0  # not constant: the digits differ
    # Same scaling as the accuracy figure: the head on these features predicts what classify_uint8 predicts.
    logits = classifier.head(torch.from_numpy(features).float())
    assert torch.equal(logits.argmax(1), classify_uint8(classifier, images))


def test_features_do_not_depend_on_the_batch_even_for_a_model_in_train_mode(
    mnistm: Path, classifier: torch.nn.Module
) -> None:
    images, _ = load_digits(mnistm, "mnistm", "val", limit=12)
    classifier.train()
    try:
        one_by_one = classifier_features(classifier, images, batch=1)
        assert classifier.training  # left as found
    finally:
        classifier.eval()
    np.testing.assert_allclose(one_by_one, classifier_features(classifier, images, batch=12), rtol=1e-5, atol=1e-6)


def test_real_reference_is_per_label_cached_and_has_a_floor(mnistm: Path, classifier: torch.nn.Module) -> None:
    real = real_reference(classifier, mnistm, 3)
    assert real.reference.features.shape == (30, 128)
    assert set(real.floor) == {"fd", "precision", "recall"} and real.floor["fd"] > 0
    assert real_reference(classifier, mnistm, 3) is real  # a sweep scores every row against one reference
    with pytest.raises(SystemExit, match="fewer than"):
        real_reference(classifier, mnistm, 40)  # 200 val digits cannot hold 80 of every label
    with pytest.raises(ValueError, match="sample size"):
        measure(None, classifier, None, per_digit=5, seed=0, batch=10, real=real)  # type: ignore[arg-type]


def test_rows_cached_before_the_feature_metrics_print_dashes() -> None:
    assert _feature_cells({"label": "old", "accuracy": 0.9}) == "FD       -  precision     -  recall     -"
    assert _feature_cells({"fd": 1.5, "precision": 0.8, "recall": 0.25}) == "FD   1.500  precision 0.800  recall 0.250"
