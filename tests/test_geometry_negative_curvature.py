"""Saddle points of the curve length: the lowest curvature by Lanczos and the escape along it
(geometry.negative_curvature, used by geometry.polyline_lm)."""

from __future__ import annotations

import pytest
import torch

import geometry as G
import geometry.geodesics as geodesics_module
from geometry.block_tridiagonal import block_tridiagonal_matvec, solve_spd_block_tridiagonal
from geometry.negative_curvature import (
    block_tridiagonal_hessian,
    exact_pencil,
    lanczos,
    second_order_step,
)
from geometry.polyline_lm import levenberg_marquardt
from geometry.sub_point_length import (
    sub_point_gradient,
    sub_point_length_hvp,
    sub_point_length_terms,
    sub_point_values,
)
from geometry.toy_models import LinearEmbed

pytestmark = pytest.mark.usefixtures("single_thread")


def _dense(diag: torch.Tensor, off: torch.Tensor) -> torch.Tensor:
    b, n, d, _ = diag.shape
    A = torch.zeros(b, n * d, n * d, dtype=diag.dtype)
    for j in range(n):
        A[:, j * d : (j + 1) * d, j * d : (j + 1) * d] = diag[:, j]
        if j < n - 1:
            A[:, j * d : (j + 1) * d, (j + 1) * d : (j + 2) * d] = off[:, j]
            A[:, (j + 1) * d : (j + 2) * d, j * d : (j + 1) * d] = off[:, j].transpose(1, 2)
    return A


def _spd_blocks(b: int, n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    off = 0.3 * torch.randn(b, n - 1, d, d, generator=g, dtype=torch.float64)
    r = torch.randn(b, n, d, d, generator=g, dtype=torch.float64)
    diag = r @ r.transpose(2, 3) + 3 * torch.eye(d, dtype=torch.float64)
    return diag, off


def test_block_tridiagonal_matvec_is_the_dense_product() -> None:
    diag, off = _spd_blocks(3, 5, 2, seed=0)
    v = torch.randn(3, 5, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    dense = (_dense(diag, off) @ v.reshape(3, 10, 1)).reshape(3, 5, 2)
    torch.testing.assert_close(block_tridiagonal_matvec(diag, off, v), dense)
    one = block_tridiagonal_matvec(diag[:, :1], off[:, :0], v[:, :1])
    torch.testing.assert_close(one, (diag[:, 0] @ v[:, 0, :, None])[..., 0][:, None])


@pytest.mark.parametrize("pencil", [False, True])
def test_lowest_ritz_value_is_the_lowest_eigenvalue(pencil: bool) -> None:
    """With as many steps as dimensions Lanczos is exact: the Ritz values are the eigenvalues
    of H (or of the pencil H v = theta M v) and the lowest Ritz vector is the lowest
    eigenvector, against a dense solve."""
    b, n, d = 4, 6, 2
    g = torch.Generator().manual_seed(3)
    R = torch.randn(b, n * d, n * d, generator=g, dtype=torch.float64)
    H = R + R.transpose(1, 2)
    diag, off = _spd_blocks(b, n, d, seed=4)
    M = _dense(diag, off) if pencil else torch.eye(n * d, dtype=torch.float64).expand(b, -1, -1)
    L = torch.linalg.cholesky(M)
    Li = torch.linalg.inv(L)
    lam, V = torch.linalg.eigh(Li @ H @ Li.transpose(1, 2))
    want = Li.transpose(1, 2) @ V[:, :, :1]  # (b, n d, 1) generalized eigenvectors
    want = (want / want.norm(dim=1, keepdim=True)).reshape(b, n, d)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return (H @ v.reshape(b, n * d, 1)).reshape(b, n, d)

    start = torch.randn(b, n, d, generator=g, dtype=torch.float64)
    kw = {}
    if pencil:
        kw = {
            "solve": lambda r: solve_spd_block_tridiagonal(diag, off, r),
            "mass": lambda v: block_tridiagonal_matvec(diag, off, v),
        }
    T, Q = lanczos(hvp, start, n * d, **kw)
    theta, Y = torch.linalg.eigh(T)
    torch.testing.assert_close(theta, lam, rtol=1e-8, atol=1e-8)  # the whole spectrum
    vec = torch.einsum("kbnd,bk->bnd", Q, Y[:, :, 0])
    vec = vec / vec.flatten(1).norm(dim=1)[:, None, None]
    cos = (vec * want).sum(dim=(1, 2)).abs()
    torch.testing.assert_close(cos, torch.ones(b, dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("n", "d"), [(1, 2), (2, 3), (7, 2), (8, 1)])
def test_three_d_probes_give_a_block_tridiagonal_hessian(n: int, d: int) -> None:
    """Probes on every third node recover every block of a symmetric block tridiagonal matrix
    (3 d products), against the dense matrix."""
    diag, off = _spd_blocks(3, n, d, seed=n + d)
    diag = diag - 4 * torch.eye(d, dtype=torch.float64)  # indefinite: no positivity used
    calls = []

    def hvp(v: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return block_tridiagonal_matvec(diag, off, v)

    H = block_tridiagonal_hessian(hvp, torch.zeros(3, n, d, dtype=torch.float64))
    torch.testing.assert_close(H, _dense(diag, off), rtol=0, atol=1e-12)
    assert len(calls) == min(3, n) * d


def test_the_exact_pencil_has_the_generalized_eigenvalues() -> None:
    """T = L^-1 H L^-T on the whole space: its eigenvalues are those of H v = theta M v and the
    basis is M-orthonormal, against a dense solve."""
    b, n, d = 3, 6, 2
    Hd, Ho = _spd_blocks(b, n, d, seed=11)
    Hd = Hd - 5 * torch.eye(d, dtype=torch.float64)  # negative curvature in places
    Md, Mo = _spd_blocks(b, n, d, seed=12)
    H, M = _dense(Hd, Ho), _dense(Md, Mo)
    Li = torch.linalg.inv(torch.linalg.cholesky(M))
    want = torch.linalg.eigvalsh(Li @ H @ Li.transpose(1, 2))
    out = exact_pencil(lambda v: block_tridiagonal_matvec(Hd, Ho, v), Md, Mo)
    assert out is not None
    T, Q = out
    torch.testing.assert_close(torch.linalg.eigvalsh(T), want, rtol=1e-9, atol=1e-9)
    Qf = Q.reshape(n * d, b, n * d).permute(1, 2, 0)  # (b, n d, k) columns
    eye = torch.eye(n * d, dtype=torch.float64).expand(b, -1, -1)
    torch.testing.assert_close(Qf.transpose(1, 2) @ M @ Qf, eye, rtol=0, atol=1e-9)
    # a singular M (node 0 decoupled with a zero block): its null space is left out of the
    # basis (zero vectors, zero rows and columns of T), the rest stays M-orthonormal
    Md0, Mo0 = Md.clone(), Mo.clone()
    Md0[:, 0], Mo0[:, 0] = 0.0, 0.0
    out = exact_pencil(lambda v: block_tridiagonal_matvec(Hd, Ho, v), Md0, Mo0)
    assert out is not None
    T0, Q0 = out
    Qf0 = Q0.reshape(n * d, b, n * d).permute(1, 2, 0)
    kept = Qf0.norm(dim=1) > 0  # (b, n d)
    assert (kept.sum(dim=1) == (n - 1) * d).all()
    gram = Qf0.transpose(1, 2) @ _dense(Md0, Mo0) @ Qf0
    torch.testing.assert_close(gram, torch.diag_embed(kept.double()), rtol=0, atol=1e-9)
    assert torch.isfinite(T0).all() and (T0[~kept] == 0).all()


class _Bump:
    """The graph of a tall narrow Gaussian bump over the plane, ``z -> (z, s exp(-|z|^2 / 2w^2))``:
    the straight line from (-1, 0) to (1, 0) runs over its top, a critical point of the length
    by symmetry (the gradient has no component across it) but a saddle: around the bump is
    shorter."""

    def __init__(self, height: float = 3.0, width: float = 0.3) -> None:
        self.height, self.width = height, width

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        bump = self.height * torch.exp(-z.pow(2).sum(dim=1, keepdim=True) / (2 * self.width**2))
        return torch.cat([z, bump], dim=1)


def _bump_problem(m: int = 8, n: int = 9):  # noqa: ANN202
    bump = _Bump()
    a = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    x0 = G.straight_lines(a, b, n)[:, 1:-1]

    def terms(xs, za, zb):  # noqa: ANN001, ANN202
        return sub_point_length_terms(bump.embed, xs, za, zb, m, 4096)

    def values(xs, za, zb):  # noqa: ANN001, ANN202
        return sub_point_values(bump.embed, xs, za, zb, m, 4096)

    def hessian(xs, za, zb):  # noqa: ANN001, ANN202
        return sub_point_length_hvp(bump.embed, xs, za, zb, m, 4096)

    return bump, a, b, x0, terms, values, hessian


def test_a_curve_on_a_saddle_is_not_stationary_and_leaves_it() -> None:
    """Gauss-Newton LM stops at once on the line over the bump (its gradient across the line is
    zero); with the saddle search the curve leaves the crest, goes around the bump and is
    stationary there, shorter by far."""
    bump, a, b, x0, terms, values, hessian = _bump_problem()
    with torch.no_grad():
        x_gn, st_gn, its_gn, t_gn = levenberg_marquardt(terms, x0, a, b, 1e-6, 200)
        x_s, st_s, its_s, t_s = levenberg_marquardt(
            terms, x0, a, b, 1e-6, 200, saddle_hessian=hessian, saddle_objective=values
        )
    assert bool(st_gn.all()) and bool(st_s.all())
    assert int(its_gn) == 0 and int(its_s) > 0
    assert x_gn[..., 1].abs().max() < 1e-12  # Gauss-Newton never left the crest
    assert x_s[..., 1].abs().max() > 0.3  # around the bump
    assert float(t_s.S) < 0.8 * float(t_gn.S)
    # stationary to second order: no direction of negative curvature lowers it any more
    S, _, g = sub_point_gradient(bump.embed, x_s, a, b, 8, 4096)
    _, gain = second_order_step(
        hessian(x_s, a, b), lambda xs, o: values(xs, a[o], b[o]), x_s, S, g, (b - a).norm(dim=1)
    )
    assert float(gain) <= 1e-6 * float(S)


def test_at_a_minimum_the_search_does_not_move() -> None:
    """On a linear decoder every polyline along the straight line is a minimum of the length
    (its Hessian is positive semi-definite, flat only along the line): no trial step lowers the
    length beyond roundoff, and the nodes stay on the line."""
    A = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lin = LinearEmbed(A)
    a = torch.tensor([[-1.0, 0.5], [0.3, -0.2]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0], [0.9, 1.2]], dtype=torch.float64)
    x = G.straight_lines(a, b, 9)[:, 1:-1]
    S, _, g = sub_point_gradient(lin, x, a, b, 2, 4096)
    hvp = sub_point_length_hvp(lin, x, a, b, 2, 4096)
    out, gain = second_order_step(
        hvp, lambda xs, o: sub_point_values(lin, xs, a[o], b[o], 2, 4096), x, S, g,
        (b - a).norm(dim=1),
    )  # fmt: skip
    assert (gain >= 0).all() and (gain <= 1e-12 * S).all()
    u = (b - a) / (b - a).norm(dim=1, keepdim=True)
    off_line = (out - a[:, None]) - ((out - a[:, None]) * u[:, None]).sum(-1, keepdim=True) * u[
        :, None
    ]
    assert off_line.abs().max() < 1e-9


def test_the_solver_leaves_the_saddle_from_the_straight_line() -> None:
    """connecting_geodesics from the straight line alone (no bent or graph starts) goes around
    the bump: its length is that of an Adam run from a bent start, not the crest's."""
    bump = _Bump()
    a = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    res = G.connecting_geodesics(bump.embed, a, b, num_nodes=13, bent_starts=0, auxiliary_points=0)
    crest = float(G.measure_curve_lengths(bump.embed, G.straight_lines(a, b, 13)).lengths)
    bent = G.straight_lines(a, b, 13)
    bent[0, 1:-1, 1] = 0.6 * torch.sin(torch.linspace(0, torch.pi, 13, dtype=torch.float64))[1:-1]
    ref = G.connecting_geodesics(
        bump.embed, a, b, init_curves=bent, optimizer="adam", max_iterations=3000
    )
    assert bool(res.converged.all())
    assert float(res.lengths) < 0.8 * crest
    assert float(res.lengths) <= float(ref.lengths) * 1.01
    # without the second-order steps the crest passes the Gauss-Newton test
    first = G.connecting_geodesics(
        bump.embed, a, b, num_nodes=13, bent_starts=0, auxiliary_points=0, second_order=False
    )
    assert float(first.lengths) > 0.99 * crest and bool(first.stationary.all())


def test_a_second_order_move_that_is_not_measurably_shorter_is_dropped(monkeypatch) -> None:
    """The second-order steps are judged by the objective at the curve's sub-points, which can
    cut a corner; a move is only kept where the measured length drops by more than rtol. A
    trial step that reports every curve moved but zigzags them (longer by measurement) changes
    nothing: the curves, lengths and flags are those without the second-order steps."""
    bump = _Bump()
    a = torch.tensor([[-1.0, 0.0], [-1.0, 0.1]], dtype=torch.float64)
    b = torch.tensor([[1.0, 0.0], [1.0, -0.1]], dtype=torch.float64)
    calls = []

    def zigzag(embed, x, z0, z1, m, min_decrease, chunk_size):  # noqa: ANN001, ANN202
        calls.append(x.shape)
        x[:, ::2, 1] += 0.05  # in place, as the real trial step moves its curves
        x[:, 1::2, 1] -= 0.05
        return torch.arange(x.shape[0])

    opts = {"num_nodes": 13, "bent_starts": 0, "auxiliary_points": 0}
    off = G.connecting_geodesics(bump.embed, a, b, second_order=False, **opts)
    monkeypatch.setattr(geodesics_module, "leave_sub_point_saddles", zigzag)
    res = G.connecting_geodesics(bump.embed, a, b, **opts)
    assert calls, "the second-order stage was not reached"
    zig = off.curves.clone()
    zig[:, 1:-1:2, 1] += 0.05
    zig[:, 2:-1:2, 1] -= 0.05
    assert (G.measure_curve_lengths(bump.embed, zig).lengths > off.lengths).all()
    assert torch.equal(res.curves, off.curves) and torch.equal(res.lengths, off.lengths)
    assert torch.equal(res.stationary, off.stationary)
    assert torch.equal(res.converged, off.converged)


def test_second_order_must_be_a_bool() -> None:
    z = torch.zeros(1, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="second_order must be True or False, got 'yes'"):
        G.connecting_geodesics(_Bump().embed, z, z + 1, second_order="yes")  # type: ignore[arg-type]


def test_on_a_convex_quadratic_the_best_trial_is_the_newton_step() -> None:
    """S(x) = 1/2 x^T A x + c^T x with A positive definite (condition number 1e3): with as many
    Lanczos steps as unknowns, the trust-region path's least-damped step lands within 1e-4 of
    the minimiser's value from a point far from it, where the gradient step would not."""
    b, n, d = 2, 4, 2
    g0 = torch.Generator().manual_seed(5)
    Qm, _ = torch.linalg.qr(torch.randn(b, n * d, n * d, generator=g0, dtype=torch.float64))
    eig = torch.logspace(0, 3, n * d, dtype=torch.float64)
    A = Qm @ torch.diag_embed(eig.expand(b, -1)) @ Qm.transpose(1, 2)
    c = torch.randn(b, n * d, 1, generator=g0, dtype=torch.float64)

    def quadratic(x: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        v = x.reshape(-1, n * d, 1)
        return (0.5 * v.transpose(1, 2) @ A[owner] @ v + c[owner].transpose(1, 2) @ v)[:, 0, 0]

    x = 3 * torch.randn(b, n, d, generator=g0, dtype=torch.float64)
    every = torch.arange(b)
    S = quadratic(x, every)
    g = (A @ x.reshape(b, n * d, 1) + c).reshape(b, n, d)
    x_star = -torch.linalg.solve(A, c)
    S_star = quadratic(x_star.reshape(b, n, d), every)

    def hvp(v: torch.Tensor) -> torch.Tensor:
        return (A @ v.reshape(b, n * d, 1)).reshape(b, n, d)

    scale = torch.full((b,), 100.0, dtype=torch.float64)
    _, gain = second_order_step(hvp, quadratic, x, S, g, scale, steps=n * d, ladder=12)
    torch.testing.assert_close(S - gain, S_star, rtol=0, atol=1e-4 * float((S - S_star).min()))
    # the whole pencil (3 d products): A is dense here, so it is given as one block (n = 1)
    blocks = (A[:, None], torch.zeros(b, 0, n * d, n * d, dtype=torch.float64))
    flat_x, flat_g = x.reshape(b, 1, n * d), g.reshape(b, 1, n * d)

    def flat_hvp(v: torch.Tensor) -> torch.Tensor:
        return (A @ v.reshape(b, n * d, 1)).reshape(b, 1, n * d)

    def flat_quadratic(xs: torch.Tensor, owner: torch.Tensor) -> torch.Tensor:
        return quadratic(xs.reshape(-1, n, d), owner)

    _, gain = second_order_step(
        flat_hvp, flat_quadratic, flat_x, S, flat_g, scale, ladder=12, steps=3 * n * d + 1,
        mass_blocks=blocks,
    )  # fmt: skip
    torch.testing.assert_close(S - gain, S_star, rtol=0, atol=1e-4 * float((S - S_star).min()))
