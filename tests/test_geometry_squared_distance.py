"""Differentiable squared geodesic distance (geometry.squared_distance)."""

from __future__ import annotations

import pytest
import torch

import geometry as G
from geometry.toy_models import LinearEmbed, ToyRBFDecoder

pytestmark = pytest.mark.usefixtures("single_thread")

SOLVE = {"num_nodes": 32, "tolerance": 1e-10, "max_iterations": 1000}


def _pairs() -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.tensor([[-1.5, -1.0], [0.3, 1.2], [1.0, -1.2]], dtype=torch.float64)
    b = torch.tensor([[1.2, 1.4], [-1.0, -0.8], [-0.2, 0.9]], dtype=torch.float64)
    return a, b


def test_linear_decoder_closed_form_value_and_gradients() -> None:
    """h(z) = A z: L^2 = dz^T A^T A dz, d/dz0 = -2 A^T A dz, d/dz1 = 2 A^T A dz."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(7, 3, generator=g, dtype=torch.float64)
    z0 = torch.randn(5, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    z1 = torch.randn(5, 3, generator=g, dtype=torch.float64).requires_grad_(True)
    d2 = G.squared_geodesic_distance(LinearEmbed(A), z0, z1, num_nodes=8)
    M, dz = A.T @ A, (z1 - z0).detach()
    torch.testing.assert_close(d2, torch.einsum("bi,ij,bj->b", dz, M, dz), rtol=1e-12, atol=0)
    w = torch.arange(1.0, 6.0, dtype=torch.float64)  # a weighted loss: grad_output per pair
    (w * d2).sum().backward()
    torch.testing.assert_close(z0.grad, -2 * w[:, None] * dz @ M, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(z1.grad, 2 * w[:, None] * dz @ M, rtol=1e-10, atol=1e-12)


def _central_differences(embed, a, b, eps: float, **solve) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences ``(B, d)`` of the squared distance in ``a`` and in ``b``, all
    ``4 d`` perturbed problems of every pair solved in one batch."""
    B, d = a.shape
    E = eps * torch.eye(d, dtype=a.dtype)  # (d, d)
    pa = torch.cat([a[:, None] + E, a[:, None] - E, a[:, None].expand(B, 2 * d, d)], dim=1)
    pb = torch.cat([b[:, None].expand(B, 2 * d, d), b[:, None] + E, b[:, None] - E], dim=1)
    val = G.squared_geodesic_distance(embed, pa.reshape(-1, d), pb.reshape(-1, d), **solve)
    val = val.reshape(B, 4, d)  # (B, [a+, a-, b+, b-], d)
    return (val[:, 0] - val[:, 1]) / (2 * eps), (val[:, 2] - val[:, 3]) / (2 * eps)


def test_gradient_matches_finite_differences_on_a_curved_decoder(rbf: ToyRBFDecoder) -> None:
    """Consistency: the end-tangent gradient is the derivative of the value computed (the
    discrete minimal energy on the same nodes)."""
    a, b = _pairs()
    a.requires_grad_(True)
    b.requires_grad_(True)
    d2, res = G.squared_geodesic_distance(rbf.embed, a, b, return_result=True, **SOLVE)
    assert res.stationary.all() and (res.energy.iterations > 0).all()
    ga, gb = torch.autograd.grad(d2.sum(), (a, b))
    fa, fb = _central_differences(rbf.embed, a.detach(), b.detach(), 1e-5, **SOLVE)
    for grad, fd in ((ga, fa), (gb, fb)):
        err = (grad - fd).norm(dim=1) / fd.norm(dim=1)  # (B,)
        assert err.max() < 1e-4, err


def test_gradient_matches_finite_differences_of_the_converged_distance(rbf) -> None:
    """Accuracy: the gradient at 64 nodes against central differences of the squared length of
    geodesics on 128 nodes (converged in resolution: it changes by < 0.1 % from 128 to 256
    nodes on these pairs, while the 64-node gradient differs from it by about 0.3 %)."""
    a, b = _pairs()
    a.requires_grad_(True)
    b.requires_grad_(True)
    d2 = G.squared_geodesic_distance(rbf.embed, a, b, **{**SOLVE, "num_nodes": 64})
    ga, gb = torch.autograd.grad(d2.sum(), (a, b))
    fine = {**SOLVE, "num_nodes": 128}
    fa, fb = _central_differences(rbf.embed, a.detach(), b.detach(), 1e-5, **fine)
    for grad, fd in ((ga, fa), (gb, fb)):
        err = (grad - fd).norm(dim=1) / fd.norm(dim=1)  # (B,)
        assert err.max() < 1e-2, err
    # the 16-node gradient is visibly coarser: the test can tell resolutions apart
    coarse = G.squared_geodesic_distance(rbf.embed, a, b, **{**SOLVE, "num_nodes": 16})
    gc = torch.autograd.grad(coarse.sum(), (a,))[0]
    assert ((gc - fa).norm(dim=1) / fa.norm(dim=1)).max() > 1e-2


def test_symmetric_in_its_end_points(rbf) -> None:
    a, b = _pairs()
    a.requires_grad_(True)
    b.requires_grad_(True)
    d_ab = G.squared_geodesic_distance(rbf.embed, a, b, **SOLVE)
    ga, gb = torch.autograd.grad(d_ab.sum(), (a, b))
    d_ba = G.squared_geodesic_distance(rbf.embed, b, a, **SOLVE)
    gb2, ga2 = torch.autograd.grad(d_ba.sum(), (b, a))
    torch.testing.assert_close(d_ab, d_ba, rtol=1e-6, atol=0)
    torch.testing.assert_close(ga, ga2, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gb, gb2, rtol=1e-4, atol=1e-6)


def test_bad_inputs_and_unconverged_geodesics(rbf) -> None:
    a, b = _pairs()
    with pytest.raises(ValueError, match="z1 has latent dimension 3, expected 2"):
        G.squared_geodesic_distance(rbf.embed, a, torch.zeros(3, 3, dtype=a.dtype))
    with pytest.raises(ValueError, match="same shape"):
        G.squared_geodesic_distance(rbf.embed, a, b[:2])
    nan = a.clone()
    nan[1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"z0 contains non-finite values \(in 1 of 3 rows\)"):
        G.squared_geodesic_distance(rbf.embed, nan, b)
    with pytest.raises(ValueError, match="num_nodes must be an integer >= 3"):
        G.squared_geodesic_distance(rbf.embed, a, b, num_nodes=2)
    with pytest.raises(RuntimeError, match="not stationary"):
        G.squared_geodesic_distance(rbf.embed, a, b, num_nodes=32, max_iterations=1)
    with pytest.warns(RuntimeWarning, match="not stationary"):
        d2 = G.squared_geodesic_distance(
            rbf.embed, a, b, num_nodes=32, max_iterations=1, on_unconverged="warn"
        )
    assert torch.isfinite(d2).all()
