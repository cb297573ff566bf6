"""Code-like latent points for geometry tests."""

from __future__ import annotations

import torch

from geometry.toy_models import ToyRBFDecoder


def codes_near_centers(
    dec: ToyRBFDecoder, n: int, spread: float = 0.5, seed: int = 0
) -> torch.Tensor:
    """``(n, d)`` points: a center of ``dec`` drawn uniformly, plus Gaussian noise of std
    ``spread`` (dtype of the centers)."""
    g = torch.Generator().manual_seed(seed)
    k, d = dec.centers.shape
    idx = torch.randint(0, k, (n,), generator=g)
    return dec.centers[idx] + spread * torch.randn(n, d, generator=g, dtype=dec.centers.dtype)
