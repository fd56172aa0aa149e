"""Diversity of generated images: mean pairwise MS-SSIM (lower is more varied).

The mode-collapse measure of Odena et al.'s AC-GAN paper: MS-SSIM between random
pairs of images of one class, averaged. A sampler that buys accuracy with
all-alike digits shows here as a value above that of real images of the class.

The window is torchmetrics' standard Gaussian (sigma 1.5, 11 taps, reflection
padding), which needs every scale to be at least 6 pixels wide: 28x28 digits take
three scales (28, 14, 7), 64x64 faces four (64 ... 8), with the first of the
standard scale weights renormalised to sum to one. Real and generated images go
through the same measure, and only the two figures side by side mean anything.
"""

from __future__ import annotations

import torch
from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

_STANDARD_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def mean_pairwise_msssim(
    images: torch.Tensor, *, max_pairs: int = 2000, scales: int = 3, seed: int = 0, batch: int = 500
) -> float:
    """Mean MS-SSIM over random distinct pairs of ``images`` ((N, 3, H, W) in [0, 1], or uint8)."""
    n = images.shape[0]
    if n < 2:
        raise ValueError("diversity needs at least two images")
    x = images.float() / 255 if images.dtype == torch.uint8 else images.float()
    gen = torch.Generator().manual_seed(seed)
    all_pairs = torch.combinations(torch.arange(n), 2)
    if len(all_pairs) > max_pairs:
        all_pairs = all_pairs[torch.randperm(len(all_pairs), generator=gen)[:max_pairs]]
    betas = torch.tensor(_STANDARD_BETAS[:scales])
    betas = tuple((betas / betas.sum()).tolist())
    values = []
    for start in range(0, len(all_pairs), batch):
        i, j = all_pairs[start : start + batch].T
        values.append(
            multiscale_structural_similarity_index_measure(
                # With the Gaussian window, kernel_size only enters torchmetrics' minimum-size
                # check (sized for an 11-tap window at every scale); the window is sigma's.
                x[i], x[j], data_range=1.0, kernel_size=3, betas=betas, reduction="none"
            )
        )
    return float(torch.cat(values).mean())


def per_label_msssim(images: torch.Tensor, labels: torch.Tensor, **kwargs: object) -> float:
    """The mean over labels of each label's mean pairwise MS-SSIM (pairs never cross labels)."""
    values = [mean_pairwise_msssim(images[labels == d], **kwargs) for d in labels.unique().tolist()]  # type: ignore[arg-type]
    return sum(values) / len(values)
