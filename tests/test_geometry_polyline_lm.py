"""The LM objectives' gradients and minimizers (geometry.sub_point_length, geometry.node_energy)."""

from __future__ import annotations

import pytest
import torch

import geometry as G
from geometry.node_energy import minimize_node_energy, node_energy_terms
from geometry.sub_point_length import sub_point_length_terms
from geometry.toy_models import LinearEmbed, ToyRBFDecoder

pytestmark = pytest.mark.usefixtures("single_thread")


def _bent_curves(dec: ToyRBFDecoder, n: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 2, generator=g, dtype=torch.float64)
    b = torch.randn(3, 2, generator=g, dtype=torch.float64)
    bend = 0.1 * torch.randn(3, n, 2, generator=g, dtype=torch.float64)
    bend[:, 0] = bend[:, -1] = 0
    return G.straight_lines(a, b, n) + bend


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("energy", [False, True])
def test_sub_point_terms_have_the_exact_gradient(rbf: ToyRBFDecoder, m: int, energy: bool) -> None:
    """Half gradient of L = sum lambda_i (or (N - 1) sum lambda_i^2) against autograd, with the
    segment lengths read through m sub-points (subdivide_curves)."""
    c = _bent_curves(rbf)
    N = c.shape[1]
    x = c[:, 1:-1].clone().requires_grad_(True)
    full = torch.cat([c[:, :1], x, c[:, -1:]], dim=1)
    lam = G.segment_lengths(rbf.embed, G.subdivide_curves(full, m)).reshape(3, N - 1, m).sum(2)
    S = (N - 1) * lam.pow(2).sum(1) if energy else lam.sum(1)
    (grad,) = torch.autograd.grad(S.sum(), x)
    t = sub_point_length_terms(rbf.embed, c[:, 1:-1], c[:, 0], c[:, -1], m, 64, energy=energy)
    torch.testing.assert_close(t.S, S.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(2 * t.g, grad, rtol=1e-9, atol=1e-11)


def test_node_energy_terms_and_minimizer(rbf: ToyRBFDecoder) -> None:
    c = _bent_curves(rbf)
    x = c[:, 1:-1].clone().requires_grad_(True)
    E = G.curve_energy(rbf.embed, torch.cat([c[:, :1], x, c[:, -1:]], dim=1))
    (grad,) = torch.autograd.grad(E.sum(), x)
    t = node_energy_terms(rbf.embed, c[:, 1:-1], c[:, 0], c[:, -1], chunk_size=16)  # chunked
    torch.testing.assert_close(t.S, E.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(2 * t.g, grad, rtol=1e-9, atol=1e-11)
    res = minimize_node_energy(rbf.embed, c)
    assert res.stationary.all() and (res.energies < E.detach()).all()
    # at the minimizer the interior gradient (autograd, independent of the LM terms) vanishes
    y = res.curves[:, 1:-1].clone().requires_grad_(True)
    E_min = G.curve_energy(rbf.embed, torch.cat([c[:, :1], y, c[:, -1:]], dim=1))
    (g_min,) = torch.autograd.grad(E_min.sum(), y)
    torch.testing.assert_close(E_min.detach(), res.energies, rtol=1e-12, atol=0)
    assert (g_min.flatten(1).norm(dim=1) < 1e-3 * grad.flatten(1).norm(dim=1)).all()


def test_node_energy_of_a_linear_decoder_is_the_straight_line() -> None:
    A = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    a, b = torch.zeros(2, 2, dtype=torch.float64), torch.ones(2, 2, dtype=torch.float64)
    start = G.straight_lines(a, b, 6) + 0.2 * torch.tensor([0.0, 1.0], dtype=torch.float64)
    start[:, 0], start[:, -1] = a, b
    res = minimize_node_energy(LinearEmbed(A), start, tolerance=1e-14)
    torch.testing.assert_close(res.curves, G.straight_lines(a, b, 6), rtol=0, atol=1e-7)
    dz = b - a
    torch.testing.assert_close(res.energies, torch.einsum("bi,ij,bj->b", dz, A.T @ A, dz))
