"""Riemannian and Euclidean random walks (geometry.sampling)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

import geometry as G
from geometry.sampling import WALK_KINDS
from geometry.toy_models import LinearEmbed, SphereEmbed, ToyMLPDecoder, ToyRBFDecoder

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


@pytest.mark.parametrize("kind", WALK_KINDS)
def test_flat_directions_are_clamped(kind: str) -> None:
    emb = LinearEmbed(torch.tensor([[1.0, 0.0]], dtype=torch.float64))  # metric diag(1, 0)
    z0 = torch.zeros(4000, 2, dtype=torch.float64)
    w = G.random_walk(
        emb,
        z0,
        1,
        0.01,
        eigenvalue_floor=1e-4,
        generator=torch.Generator().manual_seed(0),
        kind=kind,
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


# ------------------------------------------------------------------ Brownian drift and walk


def _reverse_mode_drift(embed, z: torch.Tensor) -> torch.Tensor:
    """``-1/2 M^{jk} Gamma^i_{jk}`` with ``M`` and its derivatives by reverse mode, per point."""
    from torch.func import jacrev, vmap

    def metric_one(x: torch.Tensor) -> torch.Tensor:  # (d,) -> (d, d)
        J = jacrev(lambda y: embed(y[None])[0].flatten())(x)  # (D', d)
        return J.T @ J

    M = vmap(metric_one)(z)  # (B, d, d)
    dM = vmap(jacrev(metric_one))(z)  # (B, d, d, d): dM[b, k, l, j] = d_j M_kl
    Minv = torch.linalg.inv(M)
    # Gamma^i_{jk} = 1/2 M^{il} (d_j M_lk + d_k M_lj - d_l M_jk)
    t = dM.permute(0, 3, 1, 2)  # (B, j, l, k): d_j M_lk
    lower = t.permute(0, 2, 1, 3) + t.permute(0, 2, 3, 1) - t  # (B, l, j, k)
    gamma = 0.5 * torch.einsum("bil,bljk->bijk", Minv, lower)
    return -0.5 * torch.einsum("bjk,bijk->bi", Minv, gamma)


def _finite_difference_drift(embed, z: torch.Tensor, h: float = 1e-5) -> torch.Tensor:
    """``(1/2) (1/sqrt(det M)) d_j (sqrt(det M) M^{ij})`` with central differences in float64."""

    def weighted_inverse(x: torch.Tensor) -> torch.Tensor:  # (B, d) -> (B, d, d)
        M = G.metric_tensor(embed, x)
        return torch.linalg.det(M).sqrt()[:, None, None] * torch.linalg.inv(M)

    B, d = z.shape
    div = torch.zeros(B, d, dtype=z.dtype)
    for j in range(d):
        e = torch.zeros(d, dtype=z.dtype)
        e[j] = h
        div += (weighted_inverse(z + e)[:, :, j] - weighted_inverse(z - e)[:, :, j]) / (2 * h)
    vol = torch.linalg.det(G.metric_tensor(embed, z)).sqrt()
    return 0.5 * div / vol[:, None]


def test_drift_closed_forms() -> None:
    # 1-D chart h(z) = exp(z): M = exp(2z), b = (1/2) e^{-z} d/dz e^{-z} = -e^{-2z} / 2
    z = torch.linspace(-1.5, 1.5, 7, dtype=torch.float64)[:, None]
    torch.testing.assert_close(
        G.brownian_drift(torch.exp, z), -0.5 * torch.exp(-2 * z), rtol=1e-12, atol=0
    )
    # sphere of radius r in (theta, phi): M = r^2 diag(1, sin^2 theta), b = (cot(theta)/(2 r^2), 0)
    g = torch.Generator().manual_seed(0)
    theta = 0.2 + 2.7 * torch.rand(50, generator=g, dtype=torch.float64)
    z = torch.stack([theta, 6 * torch.rand(50, generator=g, dtype=torch.float64)], dim=1)
    expected = torch.stack([theta.cos() / theta.sin() / (2 * 1.5**2), 0 * theta], dim=1)
    torch.testing.assert_close(
        G.brownian_drift(SphereEmbed(1.5), z), expected, rtol=1e-10, atol=1e-12
    )


@pytest.mark.parametrize("latent_dim", [2, 3])
def test_drift_matches_independent_computations_on_nonlinear_decoders(latent_dim: int) -> None:
    if latent_dim == 2:
        dec = ToyRBFDecoder(data_dim=24, num_centers=6, seed=3).double()
        z = dec.sample_data(40, seed=1)
    else:
        dec = ToyMLPDecoder(latent_dim=3, data_dim=30, hidden_dims=(16,), seed=2).double()
        z = dec.sample_data(40, seed=1)
    b = G.brownian_drift(dec.embed, z, chunk_size=7)  # several chunks
    assert b.shape == z.shape and b.abs().max() > 1e-2  # a drift far from zero to compare
    torch.testing.assert_close(b, _reverse_mode_drift(dec.embed, z), rtol=1e-8, atol=1e-10)
    scale = b.abs().max()
    torch.testing.assert_close(
        b, _finite_difference_drift(dec.embed, z), rtol=1e-5, atol=1e-6 * float(scale)
    )
    M, dM = G.metric_and_derivatives(dec.embed, z)
    torch.testing.assert_close(M, G.metric_tensor(dec.embed, z), rtol=1e-12, atol=1e-14)
    assert dM.shape == (40, latent_dim, latent_dim, latent_dim)


def test_drift_uses_the_floored_inverse_where_the_metric_is_nearly_singular() -> None:
    # M = diag(1, sin^2 theta); with the clamped inverse M^{phi phi} = 1 / max(sin^2, floor):
    # b^theta = (1/2) (1/2) tr(M^-1 d_theta M) = sin(theta) cos(theta) / (2 max(sin^2, floor))
    theta = torch.tensor([1e-4, 2e-4, 0.5], dtype=torch.float64)
    z = torch.stack([theta, torch.zeros(3, dtype=torch.float64)], dim=1)
    b = G.brownian_drift(SphereEmbed(), z, eigenvalue_floor=1e-6)
    sin2 = theta.sin() ** 2
    expected = theta.sin() * theta.cos() / (2 * torch.clamp(sin2, min=1e-6))
    torch.testing.assert_close(b[:, 0], expected, rtol=1e-9, atol=0)
    assert b[0, 0] < 0.02 * theta[0].cos() / theta[0].sin() / 2  # far below the exact drift


def test_linear_decoder_brownian_walk_has_no_drift_and_inverse_metric_covariance() -> None:
    A = torch.tensor([[3.0, 1.0], [0.0, 0.5], [1.0, 1.0]], dtype=torch.float64)
    z = torch.randn(30, 2, dtype=torch.float64)
    assert torch.equal(G.brownian_drift(LinearEmbed(A), z), torch.zeros_like(z))
    z0 = torch.zeros(20000, 2, dtype=torch.float64)
    s = 0.1
    brown = G.random_walk(
        LinearEmbed(A), z0, 1, s, kind="brownian", generator=torch.Generator().manual_seed(0)
    )
    first = G.random_walk(LinearEmbed(A), z0, 1, s, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(brown, first, rtol=1e-12, atol=1e-14)  # same noise, no drift
    steps = (brown[:, 1] - z0) / s
    torch.testing.assert_close(steps.T.cov(), torch.linalg.inv(A.T @ A), rtol=0.05, atol=0.005)


def test_brownian_step_is_the_first_order_step_plus_the_drift() -> None:
    dec = ToyRBFDecoder(data_dim=24, num_centers=6, seed=3).double()
    z0 = dec.sample_data(16, seed=2)
    s = 0.03
    brown = G.random_walk(
        dec.embed, z0, 1, s, kind="brownian", generator=torch.Generator().manual_seed(5)
    )
    first = G.random_walk(dec.embed, z0, 1, s, generator=torch.Generator().manual_seed(5))
    drift = G.brownian_drift(dec.embed, z0)
    assert (drift * s**2).abs().max() > 1e-3  # the drift moves the points measurably
    torch.testing.assert_close(brown[:, 1] - first[:, 1], s**2 * drift, rtol=1e-9, atol=1e-12)


def _sphere_walk_end_theta(kind: str) -> np.ndarray:
    """End polar angles (mod pi) of 4000 walks of 300 steps started from the uniform sphere."""
    n = 4000
    g = torch.Generator().manual_seed(0)
    theta = torch.arccos(1 - 2 * torch.rand(n, generator=g, dtype=torch.float64))
    z0 = torch.stack([theta, 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)], 1)
    gen = torch.Generator().manual_seed(1)
    w = G.random_walk(SphereEmbed(), z0, 300, 0.1, kind=kind, generator=gen)
    assert torch.isfinite(w).all()
    # (theta, phi) and (-theta, phi + pi) are the same point: theta mod pi is the polar angle
    return torch.remainder(w[:, -1, 0], math.pi).numpy()


def test_brownian_walk_keeps_the_riemannian_volume_and_the_first_order_walk_does_not() -> None:
    """On the sphere chart the stationary density of Brownian motion w.r.t. d theta d phi is
    proportional to sqrt(det M) = sin(theta): starting from it, the Brownian walk keeps it
    (chi-square on 20 equal-probability bins, level 0.001), and the driftless walk spreads
    towards a uniform theta (rejected; E[cos^2 theta] = 1/3 on the sphere, 1/2 if uniform)."""
    edges = np.arccos(1 - 2 * np.linspace(0, 1, 21))
    edges[-1] = math.pi
    results = {}
    for kind in ("brownian", "first_order"):
        theta = _sphere_walk_end_theta(kind)
        counts = np.histogram(theta, edges)[0]
        results[kind] = (chisquare(counts).pvalue, float(np.mean(np.cos(theta) ** 2)))
    assert results["brownian"][0] > 1e-3
    assert abs(results["brownian"][1] - 1 / 3) < 0.02  # SE ~0.005
    assert results["first_order"][0] < 1e-10
    assert results["first_order"][1] > 0.45


def test_walk_kind_is_validated() -> None:
    emb = LinearEmbed(torch.eye(2))
    with pytest.raises(ValueError, match=r"kind must be one of \('first_order', 'brownian'\)"):
        G.random_walk(emb, torch.zeros(2, 2), 3, 0.1, kind="drift")
    with pytest.raises(ValueError, match="kind='brownian' needs metric=True"):
        G.random_walk(emb, torch.zeros(2, 2), 3, 0.1, metric=False, kind="brownian")
    with pytest.raises(ValueError, match="eigenvalue_floor"):
        G.brownian_drift(emb, torch.zeros(2, 2), eigenvalue_floor=0.0)
