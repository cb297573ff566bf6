"""Riemannian and Euclidean random walks (geometry.sampling)."""

from __future__ import annotations

import pytest
import torch

import geometry as G
from geometry.toy_models import LinearEmbed, ToyRBFDecoder

pytestmark = pytest.mark.usefixtures("single_thread")


def test_walk_shape_seeding_and_start() -> None:
    dec = ToyRBFDecoder(data_dim=12, seed=1)
    z0 = torch.randn(5, 2)
    w1 = G.random_walk(dec.embed, z0, 7, 0.05, generator=torch.Generator().manual_seed(3))
    w2 = G.random_walk(dec.embed, z0, 7, 0.05, generator=torch.Generator().manual_seed(3))
    w3 = G.random_walk(dec.embed, z0, 7, 0.05, generator=torch.Generator().manual_seed(4))
    assert w1.shape == (5, 8, 2) and w1.dtype == z0.dtype
    assert torch.equal(w1[:, 0], z0) and torch.equal(w1, w2) and not torch.equal(w1, w3)
    assert G.random_walk(dec.embed, z0, 0, 0.1).shape == (5, 1, 2)


def test_riemannian_step_covariance_is_inverse_metric() -> None:
    A = torch.tensor([[3.0, 1.0], [0.0, 0.5], [1.0, 1.0]], dtype=torch.float64)
    z0 = torch.zeros(20000, 2, dtype=torch.float64)
    s = 0.1
    gen = torch.Generator().manual_seed(0)
    steps = (G.random_walk(LinearEmbed(A), z0, 1, s, generator=gen)[:, 1] - z0) / s
    torch.testing.assert_close(steps.T.cov(), torch.linalg.inv(A.T @ A), rtol=0.05, atol=0.005)
    eu = (G.random_walk(LinearEmbed(A), z0, 1, s, metric=False, generator=gen)[:, 1] - z0) / s
    torch.testing.assert_close(eu.T.cov(), torch.eye(2, dtype=torch.float64), rtol=0.05, atol=0.02)


def test_flat_directions_are_clamped() -> None:
    emb = LinearEmbed(torch.tensor([[1.0, 0.0]], dtype=torch.float64))  # metric diag(1, 0)
    z0 = torch.zeros(4000, 2, dtype=torch.float64)
    w = G.random_walk(
        emb, z0, 1, 0.01, eigenvalue_floor=1e-4, generator=torch.Generator().manual_seed(0)
    )
    step = (w[:, 1] - z0) / 0.01
    assert torch.isfinite(step).all()
    torch.testing.assert_close(
        step.std(0), torch.tensor([1.0, 100.0], dtype=torch.float64), rtol=0.05, atol=0
    )


def test_bad_arguments_are_named() -> None:
    emb = LinearEmbed(torch.eye(2))
    with pytest.raises(ValueError, match="step_size"):
        G.random_walk(emb, torch.zeros(2, 2), 3, 0.0)
    with pytest.raises(ValueError, match="num_steps"):
        G.random_walk(emb, torch.zeros(2, 2), -1, 0.1)
    with pytest.raises(ValueError, match="shape"):
        G.random_walk(emb, torch.zeros(2), 3, 0.1)
