"""Fidelity and coverage of generated digits against real ones, in the evaluation classifier's features.

Inception FID needs weights the project's machines cannot download, and Inception
features say little about 28x28 digits anyway; digit papers instead take the
penultimate features of a classifier trained on the digits. Here that is the
project's MNIST-M classifier (``models.digit_classifier.DigitClassifier``): the 128-d
pooled output of its ``features``, before the dropout and linear head. The figures
are comparable only with others computed on the same classifier checkpoint, never
with published Inception FIDs.

* Frechet distance (FD, the "FID" of digit papers): the distance between Gaussians
  fitted to the two feature sets. The covariance estimate's noise adds to it, so
  it is biased upward at small sample sizes: compare figures only at equal image
  counts, and read them against the real-vs-real floor at that count.
* Precision and recall (Kynkaanniemi et al., 2019, "Improved precision and recall
  metric for assessing generative models"): a set's manifold is the union of balls
  around its points, each reaching the point's k-th nearest neighbour (k = 3).
  Precision is the share of generated points inside the real manifold (are the
  digits realistic?), recall the share of real points inside the generated one
  (does the model cover the real variety?). Guidance that collapses the digits
  onto a few modes keeps precision and loses recall.

Everything is computed in float64, as pytorch-fid does: FD is a difference of traces
of similar size, which float32 would leave with few correct digits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import torch
from scipy.spatial.distance import cdist

from models.digit_classifier import DigitClassifier

K_NEAREST = 3  # the k of Kynkaanniemi et al.'s experiments
_EPS = 1e-6  # added to both covariances' diagonals when their product's square root is not finite
_CHUNK = 1024  # query points per distance block: bounds memory at 1024 x N floats


@torch.no_grad()
def classifier_features(model: DigitClassifier, images: torch.Tensor, batch: int = 1000) -> np.ndarray:
    """The 128-d penultimate features of uint8 (N, 3, 28, 28) digits, as float64 (N, 128).

    Inputs are scaled exactly as ``eval_common.classify_uint8`` scales them, so the
    features are the ones the accuracy figure's predictions come from. The model is
    put in eval mode for the call (batch-norm statistics of a batch of generated
    digits would make the features depend on the batch) and left as it was found.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    try:
        chunks = [
            model.features(images[i : i + batch].to(device).float().div(127.5).sub(1)).double().cpu()
            for i in range(0, len(images), batch)
        ]
    finally:
        model.train(was_training)
    return torch.cat(chunks).numpy()


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (unbiased, N - 1) covariance of (N, D) features, in float64."""
    x = np.asarray(features, dtype=np.float64)
    if len(x) < 2:
        raise ValueError("a covariance needs at least two feature vectors")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def frechet_from_stats(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))``: the Frechet distance of two Gaussians.

    With fewer images than feature dimensions both covariances are singular; the
    square root of their product then exists but its Schur-based computation can
    return non-finite values (retried with ``_EPS`` on both diagonals, as pytorch-fid
    does) or a tiny imaginary part from rounding (dropped: the true root of a product
    of two PSD matrices has real eigenvalues).
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(sigma1)) * _EPS
        covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(np.real(covmean))
    return max(float(value), 0.0)  # rounding can take two equal sets a hair below zero


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """FD between Gaussians fitted to two (N, D) feature sets (use equal N: the figure depends on it)."""
    return frechet_from_stats(*gaussian_stats(real), *gaussian_stats(fake))


def manifold_radii(features: np.ndarray, k: int = K_NEAREST) -> np.ndarray:
    """Each point's distance to its k-th nearest neighbour within ``features`` (itself not counted)."""
    x = np.asarray(features, dtype=np.float64)
    if len(x) <= k:
        raise ValueError(f"a k-NN manifold with k={k} needs more than {k} points, got {len(x)}")
    # Column 0 of the partition is the point itself (distance 0), so index k is the k-th neighbour.
    blocks = (cdist(x[i : i + _CHUNK], x) for i in range(0, len(x), _CHUNK))
    return np.concatenate([np.partition(block, k, axis=1)[:, k] for block in blocks])


def within_manifold(points: np.ndarray, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Whether each of ``points`` lies in at least one ball (``centres``, ``radii``), border included."""
    p, c = np.asarray(points, np.float64), np.asarray(centres, np.float64)
    blocks = (cdist(p[i : i + _CHUNK], c) for i in range(0, len(p), _CHUNK))
    return np.concatenate([(block <= radii[None, :]).any(axis=1) for block in blocks])


@dataclass(frozen=True)
class Reference:
    """Real features and what every comparison against them reuses: their Gaussian and k-NN radii."""

    features: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray
    radii: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray, k: int = K_NEAREST) -> Reference:
        """Fit once, so a sweep of many configurations pays for the real side a single time."""
        x = np.asarray(features, dtype=np.float64)
        mu, sigma = gaussian_stats(x)
        return cls(x, mu, sigma, manifold_radii(x, k))


def compare(reference: Reference, fake: np.ndarray, k: int = K_NEAREST) -> dict[str, float]:
    """``fd``, ``precision`` and ``recall`` of generated features against a real reference."""
    fake = np.asarray(fake, dtype=np.float64)
    fd = frechet_from_stats(reference.mu, reference.sigma, *gaussian_stats(fake))
    precision = within_manifold(fake, reference.features, reference.radii).mean()
    recall = within_manifold(reference.features, fake, manifold_radii(fake, k)).mean()
    return {"fd": fd, "precision": float(precision), "recall": float(recall)}


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = K_NEAREST) -> tuple[float, float]:
    """Kynkaanniemi et al.'s precision (fake in the real manifold) and recall (real in the fake manifold)."""
    scores = compare(Reference.of(real, k), fake, k)
    return scores["precision"], scores["recall"]
