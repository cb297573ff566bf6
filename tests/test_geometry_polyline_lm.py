"""The LM objectives' gradients and minimizers (geometry.sub_point_length, geometry.node_energy)."""

from __future__ import annotations

import pytest
import torch

import geometry as G
from geometry.chord_contractions import chord_contractions
from geometry.node_energy import minimize_node_energy, node_energy_terms
from geometry.polyline_lm import levenberg_marquardt
from geometry.sub_point_length import (
    sub_point_gradient,
    sub_point_length_hvp,
    sub_point_length_terms,
    sub_point_values,
)
from geometry.sub_point_lm import has_hessian_products
from geometry.toy_models import LinearEmbed, ToyMLPDecoder, ToyRBFDecoder

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


@pytest.mark.parametrize("m", [1, 3])
@pytest.mark.parametrize("energy", [False, True])
def test_sub_point_hessian_vector_products(rbf: ToyRBFDecoder, m: int, energy: bool) -> None:
    """Half the exact Hessian times v against central differences of the terms' half gradient
    (forward-mode contractions, an independent code path), on curves split into two graphs."""
    c = _bent_curves(rbf)
    x, a, b = c[:, 1:-1], c[:, 0], c[:, -1]
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    hv = sub_point_length_hvp(rbf.embed, x, a, b, m, 2 * (x.shape[1] + 1) * m + 2, energy)(v)
    eps = 1e-5

    def half_grad(y: torch.Tensor) -> torch.Tensor:
        return sub_point_length_terms(rbf.embed, y, a, b, m, 64, energy=energy).g

    with torch.no_grad():
        fd = (half_grad(x + eps * v) - half_grad(x - eps * v)) / (2 * eps)
    assert hv.shape == x.shape and hv.dtype == torch.float64
    torch.testing.assert_close(hv, fd, rtol=1e-6, atol=1e-7 * float(fd.abs().max()))
    # symmetric: u^T H v = v^T H u
    u = torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    hu = sub_point_length_hvp(rbf.embed, x, a, b, m, 64, energy)(u)
    torch.testing.assert_close((u * hv).sum(), (v * hu).sum(), rtol=1e-10, atol=0)


@pytest.mark.parametrize("energy", [False, True])
def test_sub_point_values_are_the_terms_objective(rbf: ToyRBFDecoder, energy: bool) -> None:
    """The forward-only objective that judges LM trial steps equals the terms' S exactly."""
    c = _bent_curves(rbf)
    x, a, b = c[:, 1:-1], c[:, 0], c[:, -1]
    with torch.no_grad():
        t = sub_point_length_terms(rbf.embed, x, a, b, 3, 64, energy=energy)
        v = sub_point_values(rbf.embed, x, a, b, 3, 2 * (x.shape[1] + 1) * 3 + 2, energy)
    torch.testing.assert_close(v, t.S, rtol=1e-14, atol=0)


@pytest.mark.parametrize("energy", [False, True])
def test_sub_point_gradient_is_the_terms_gradient(rbf: ToyRBFDecoder, energy: bool) -> None:
    """The reverse-mode value and half gradient of frozen-model LM steps equal the terms' S, L
    and g (forward-mode contractions, an independent code path), on curves split into two
    graphs."""
    c = _bent_curves(rbf)
    x, a, b = c[:, 1:-1], c[:, 0], c[:, -1]
    with torch.no_grad():
        t = sub_point_length_terms(rbf.embed, x, a, b, 3, 64, energy=energy)
        S, L, g = sub_point_gradient(rbf.embed, x, a, b, 3, 2 * (x.shape[1] + 1) * 3 + 2, energy)
    torch.testing.assert_close(S, t.S, rtol=1e-14, atol=0)
    torch.testing.assert_close(L, t.L, rtol=1e-14, atol=0)
    torch.testing.assert_close(g, t.g, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("max_points", [2, 3, 7, 16])
def test_chord_contractions_in_windows_equal_one_pass(rbf: ToyRBFDecoder, max_points: int) -> None:
    """Forward-mode passes over windows of the point axis (sharing their boundary point, also
    across two curves) give the contractions of one pass."""
    pts = G.subdivide_curves(_bent_curves(rbf), 2)  # (3, 15, 2)
    one = chord_contractions(rbf.embed, pts)
    win = chord_contractions(rbf.embed, pts, max_points)
    for name in ("gram", "cross", "lo", "hi", "chords", "h_norms"):
        torch.testing.assert_close(getattr(win, name), getattr(one, name), rtol=1e-12, atol=1e-14)


def test_frozen_model_steps_reach_the_same_stationary_point() -> None:
    """LM whose accepted steps keep the Gauss-Newton matrix (exact gradients by reverse mode)
    ends stationary at the minimizer plain LM finds, with fewer forward-mode evaluations, and
    the terms it returns for stationary curves are fresh (recomputed at the final nodes)."""
    dec = ToyMLPDecoder(latent_dim=6, data_dim=40, hidden_dims=(32,), seed=1).double()
    g = torch.Generator().manual_seed(4)
    a, b = (2 * torch.randn(4, 6, generator=g, dtype=torch.float64)[:3] for _ in range(2))
    x0 = G.straight_lines(a, b, 10)[:, 1:-1]
    m = 2
    calls = {"terms": 0}

    def terms(xs: torch.Tensor, za: torch.Tensor, zb: torch.Tensor):  # noqa: ANN202
        calls["terms"] += xs.shape[0]
        return sub_point_length_terms(dec.embed, xs, za, zb, m, 4096, True)

    def values(xs: torch.Tensor, za: torch.Tensor, zb: torch.Tensor):  # noqa: ANN202
        return sub_point_values(dec.embed, xs, za, zb, m, 4096, True)

    def gradient(xs: torch.Tensor, za: torch.Tensor, zb: torch.Tensor):  # noqa: ANN202
        return sub_point_gradient(dec.embed, xs, za, zb, m, 4096, True)

    with torch.no_grad():
        x_p, st_p, _, t_p = levenberg_marquardt(terms, x0, a, b, 1e-10, 200, None, values)
        plain_calls, calls["terms"] = calls["terms"], 0
        x_f, st_f, _, t_f = levenberg_marquardt(
            terms, x0, a, b, 1e-10, 200, None, values, gradient=gradient, max_frozen=8
        )
        fresh = terms(x_f, a, b)
    assert bool(st_p.all()) and bool(st_f.all())
    assert calls["terms"] - 3 < plain_calls  # the last 3: the freshness check below
    torch.testing.assert_close(t_f.S, t_p.S, rtol=1e-7, atol=0)
    torch.testing.assert_close(x_f, x_p, rtol=0, atol=1e-4)
    for name in ("S", "g", "diag", "off"):
        torch.testing.assert_close(getattr(t_f, name), getattr(fresh, name), rtol=1e-12, atol=1e-14)


def test_frozen_model_stationarity_needs_a_fresh_matrix_at_every_step_limit() -> None:
    """Whatever the step limit, a curve reported stationary by frozen-model LM was tested on a
    fresh Gauss-Newton matrix: the returned terms equal the terms recomputed at its nodes."""
    dec = ToyMLPDecoder(latent_dim=6, data_dim=40, hidden_dims=(32,), seed=1).double()
    g = torch.Generator().manual_seed(5)
    a, b = (2 * torch.randn(6, 6, generator=g, dtype=torch.float64) for _ in range(2))
    x0 = G.straight_lines(a, b, 8)[:, 1:-1]

    def terms(xs: torch.Tensor, za: torch.Tensor, zb: torch.Tensor):  # noqa: ANN202
        return sub_point_length_terms(dec.embed, xs, za, zb, 2, 4096, True)

    def values(xs: torch.Tensor, za: torch.Tensor, zb: torch.Tensor):  # noqa: ANN202
        return sub_point_values(dec.embed, xs, za, zb, 2, 4096, True)

    def gradient(xs: torch.Tensor, za: torch.Tensor, zb: torch.Tensor):  # noqa: ANN202
        return sub_point_gradient(dec.embed, xs, za, zb, 2, 4096, True)

    seen = 0
    with torch.no_grad():
        for limit in range(1, 30):
            x, st, _, t = levenberg_marquardt(
                terms, x0, a, b, 1e-3, limit, None, values, gradient=gradient, max_frozen=8
            )
            if not bool(st.any()):
                continue
            seen += int(st.sum())
            fresh = terms(x[st], a[st], b[st])
            torch.testing.assert_close(t.diag[st], fresh.diag, rtol=1e-12, atol=1e-14)
    assert seen > 0


def test_newton_cg_steps_converge_where_gauss_newton_crawls() -> None:
    """LM on the sub-point length of a d = 6 tanh decoder from its energy minimizer (as the
    solver runs it), with and without exact Hessian products: Newton is stationary at a tight
    tolerance within the step limit and ends shorter; Gauss-Newton alone is still crawling."""
    dec = ToyMLPDecoder(latent_dim=6, data_dim=40, hidden_dims=(32,), seed=1).double()
    g = torch.Generator().manual_seed(4)
    a, b = (2 * torch.randn(4, 6, generator=g, dtype=torch.float64)[:2] for _ in range(2))
    x = G.straight_lines(a, b, 10)[:, 1:-1]
    m = 2

    def terms(xs: torch.Tensor, za: torch.Tensor, zb: torch.Tensor, energy: bool = False):  # noqa: ANN202
        return sub_point_length_terms(dec.embed, xs, za, zb, m, 4096, energy)

    def values(xs: torch.Tensor, za: torch.Tensor, zb: torch.Tensor, energy: bool = False):  # noqa: ANN202
        return sub_point_values(dec.embed, xs, za, zb, m, 4096, energy)

    def hessian(xs: torch.Tensor, za: torch.Tensor, zb: torch.Tensor):  # noqa: ANN202
        return sub_point_length_hvp(dec.embed, xs, za, zb, m, 4096)

    def energy_terms(xs: torch.Tensor, za: torch.Tensor, zb: torch.Tensor):  # noqa: ANN202
        return terms(xs, za, zb, True)

    def energy_values(xs: torch.Tensor, za: torch.Tensor, zb: torch.Tensor):  # noqa: ANN202
        return values(xs, za, zb, True)

    with torch.no_grad():
        x, st_e, _, _ = levenberg_marquardt(energy_terms, x, a, b, 1e-6, 100, None, energy_values)
        _, st_gn, _, t_gn = levenberg_marquardt(terms, x, a, b, 1e-8, 120, None, values)
        _, st_nt, its_nt, t_nt = levenberg_marquardt(
            terms, x, a, b, 1e-8, 120, None, values, hessian, 3
        )
    assert bool(st_e.all())
    assert bool(st_nt.all()) and not bool(st_gn.any())
    assert bool((t_nt.S <= t_gn.S).all())
    assert bool((values(x, a, b) > t_nt.S).all())  # the energy minimizer was not stationary


class _OnceDifferentiableTanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        out = torch.tanh(z)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        (out,) = ctx.saved_tensors
        return grad * (1 - out**2)


def test_hessian_products_are_probed_before_use() -> None:
    """An embed without second derivatives by autograd is detected (the solver then keeps the
    Gauss-Newton steps); a plain torch decoder has them."""
    w = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = torch.randn(2, 4, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    a, b = x[:, 0] + 1, x[:, -1] - 1
    assert has_hessian_products(lambda z: torch.tanh(z @ w.T), x, a, b, 2, 100)
    assert not has_hessian_products(
        lambda z: _OnceDifferentiableTanh.apply(z @ w.T), x, a, b, 2, 100
    )


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
