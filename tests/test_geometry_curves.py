"""Discrete curve lengths and energies, construction and resampling (geometry.curves)."""

from __future__ import annotations

import pytest
import torch

import geometry as G
from geometry.toy_models import LinearEmbed, ToyRBFDecoder

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture()
def dec() -> ToyRBFDecoder:
    return ToyRBFDecoder(data_dim=12, seed=4).double()


def test_length_and_energy_do_not_mutate_their_input(dec: ToyRBFDecoder) -> None:
    curves = torch.randn(3, 7, 2, dtype=torch.float64)
    before = curves.clone()
    for fn in (G.curve_length, G.chord_length, G.curve_energy, G.segment_lengths):
        fn(dec.embed, curves)
        assert curves.shape == (3, 7, 2) and torch.equal(curves, before)
    one = torch.randn(7, 2, dtype=torch.float64)  # stochman unsqueezes such input in place
    with pytest.raises(ValueError, match=r"curves\[None\]"):
        G.curve_energy(dec.embed, one)
    assert one.shape == (7, 2)


def test_energy_normalisation_on_straight_lines() -> None:
    """t in [0, 1]: a constant-speed curve has E = L^2 = ||A (z1 - z0)||^2 for every N."""
    A = torch.randn(5, 3, dtype=torch.float64)
    z0, z1 = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    true = ((z1 - z0) @ A.T).norm(dim=1)
    for n in (2, 5, 33):
        line = G.straight_lines(z0, z1, n)
        torch.testing.assert_close(G.curve_length(LinearEmbed(A), line), true)
        torch.testing.assert_close(G.curve_energy(LinearEmbed(A), line), true**2)


def test_energy_at_least_length_squared(dec: ToyRBFDecoder) -> None:
    """Cauchy-Schwarz on the nodes: the energy bounds the chord sum it is made of."""
    curves = torch.randn(20, 9, 2, dtype=torch.float64)
    L, E = G.chord_length(dec.embed, curves), G.curve_energy(dec.embed, curves)
    assert (E >= L**2 * (1 - 1e-12)).all()
    assert (E > L**2 * 1.01).any()  # random curves are far from constant speed
    # Equality after reparametrizing smooth curves to constant Riemannian speed.
    t = torch.linspace(0, 1, 65, dtype=torch.float64)[None, :, None]
    a, b = curves[:, 0:1], curves[:, -1:]
    bend = torch.stack([-(b - a)[..., 1], (b - a)[..., 0]], dim=-1)  # (20, 1, 2) perpendicular
    smooth = a + t * (b - a) + 0.3 * torch.sin(torch.pi * t) * bend  # (20, 65, 2)
    cs = G.constant_speed_curves(dec.embed, smooth, num_nodes=33, num_sub=8)
    seg = G.segment_lengths(dec.embed, cs)
    L2, E2 = seg.sum(1), G.curve_energy(dec.embed, cs)
    assert (seg.std(dim=1) / seg.mean(dim=1) < 0.1).all()
    torch.testing.assert_close(E2, L2**2, rtol=1e-2, atol=0)


def test_lengths_are_differentiable(dec: ToyRBFDecoder) -> None:
    curves = torch.randn(2, 5, 2, dtype=torch.float64, requires_grad=True)
    G.curve_energy(dec.embed, curves).sum().backward()
    assert curves.grad is not None and torch.isfinite(curves.grad).all()


def test_subdivide_and_resample_keep_the_polyline() -> None:
    A = torch.randn(4, 2, dtype=torch.float64)
    curves = torch.randn(3, 6, 2, dtype=torch.float64)
    fine = G.subdivide_curves(curves, 4)
    assert fine.shape == (3, 21, 2)
    torch.testing.assert_close(fine[:, ::4], curves)
    torch.testing.assert_close(
        G.curve_length(LinearEmbed(A), fine), G.curve_length(LinearEmbed(A), curves)
    )
    res = G.resample_curves(fine, 50)
    assert res.shape == (3, 50, 2)
    torch.testing.assert_close(res[:, [0, -1]], curves[:, [0, -1]])
    # On a straight polyline with uneven nodes the resampled nodes are equally spaced.
    t = torch.tensor([0.0, 0.05, 0.1, 0.7, 1.0], dtype=torch.float64)[None, :, None]
    uneven = curves[:, :1] + t * (curves[:, -1:] - curves[:, :1])  # (3, 5, 2)
    steps = (G.resample_curves(uneven, 11)[:, 1:] - G.resample_curves(uneven, 11)[:, :-1]).norm(
        dim=2
    )
    torch.testing.assert_close(steps, steps[:, :1].expand(3, 10))
    # Repeated nodes (zero-length segments) and constant curves are fine.
    padded = torch.cat([curves, curves[:, -1:].expand(3, 4, 2)], dim=1)
    torch.testing.assert_close(G.resample_curves(padded, 50), res)
    const = torch.zeros(1, 5, 2, dtype=torch.float64)
    assert torch.equal(G.resample_curves(const, 7), torch.zeros(1, 7, 2, dtype=torch.float64))


@pytest.mark.parametrize(
    ("curves", "match"),
    [
        (torch.zeros(2, 1, 2), "at least 2 nodes"),
        (torch.zeros(2, 3, 2, 1), "shape"),
        (torch.full((1, 3, 2), float("inf")), "non-finite"),
    ],
)
def test_curve_functions_reject_bad_input(curves: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        G.curve_length(LinearEmbed(torch.eye(2)), curves)


def test_straight_lines_reject_mismatched_points() -> None:
    with pytest.raises(ValueError, match="latent dimension 3"):
        G.straight_lines(torch.zeros(2, 2), torch.zeros(2, 3), 5)
    with pytest.raises(ValueError, match="num_nodes"):
        G.straight_lines(torch.zeros(2, 2), torch.zeros(2, 2), 1)


# ------------------------------------------------------------------------------------------
# Converged lengths (measure_curve_lengths / curve_length)
# ------------------------------------------------------------------------------------------


def _fine_length(embed, curves: torch.Tensor, num_sub: int) -> torch.Tensor:
    """Independent reference: every segment split into ``num_sub`` equal chords."""
    with torch.no_grad():
        return G.chord_length(embed, G.subdivide_curves(curves, num_sub), chunk_size=50_000)


def _bent_curves(n: int, nodes: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = 2 * torch.randn(n, 1, 2, generator=g, dtype=torch.float64)
    b = 2 * torch.randn(n, 1, 2, generator=g, dtype=torch.float64)
    t = torch.linspace(0, 1, nodes, dtype=torch.float64)[None, :, None]
    perp = torch.stack([-(b - a)[..., 1], (b - a)[..., 0]], dim=-1)
    return a + t * (b - a) + 0.3 * torch.sin(torch.pi * t) * perp  # (n, nodes, 2)


def test_linear_decoder_length_is_exact() -> None:
    A = torch.randn(5, 3, dtype=torch.float64)
    curves = torch.randn(4, 6, 3, dtype=torch.float64)
    m = G.measure_curve_lengths(LinearEmbed(A), curves)
    exact = ((curves[:, 1:] - curves[:, :-1]) @ A.T).norm(dim=2)  # (4, 5)
    torch.testing.assert_close(m.segment_lengths, exact)
    torch.testing.assert_close(m.lengths, exact.sum(1))
    assert m.converged.all() and (m.errors <= 1e-12 * m.lengths).all()


@pytest.mark.parametrize("bandwidth", [0.5, 4.0, 16.0])
@pytest.mark.parametrize("rtol", [1e-3, 1e-4])
def test_measured_length_matches_a_fine_reference_on_walled_decoders(
    bandwidth: float, rtol: float
) -> None:
    """Smooth curves through steep variance bumps: within rtol of a 2048-fold subdivision,
    where the node chords undercount by whole percents; the error estimate bounds the error."""
    dec = ToyRBFDecoder(data_dim=24, num_centers=6, seed=1, bandwidth=bandwidth).double()
    curves = _bent_curves(24, 24, seed=2)
    m = G.measure_curve_lengths(dec.embed, curves, rtol=rtol)
    ref = _fine_length(dec.embed, curves, 2048)
    rel = (ref - m.lengths.detach()) / ref
    assert m.converged.all()
    assert (rel.abs() <= rtol).all(), float(rel.abs().max())
    assert (m.errors <= rtol * m.lengths).all()
    if bandwidth > 1:  # steep bumps: the chord sum on the nodes would be wrong here
        chords = G.chord_length(dec.embed, curves).detach()
        assert ((ref - chords) / ref).max() > 10 * rtol
    # the work goes where the metric is steep: far fewer points than the uniform reference
    assert m.evaluations < curves.shape[0] * 23 * 2048 / 10


def test_far_from_the_data_and_degenerate_segments() -> None:
    dec = ToyRBFDecoder(data_dim=24, num_centers=6, seed=1, bandwidth=4.0).double()
    line = G.straight_lines(torch.zeros(1, 2, dtype=torch.float64), torch.full((1, 2), 1e3), 12)
    padded = torch.cat([line, line[:, -1:].expand(1, 3, 2)], dim=1)  # zero-length segments
    # the data region is 0.3 % of the curve: its scale is given (as the solvers do from codes)
    m = G.measure_curve_lengths(dec.embed, padded, rtol=1e-3, max_piece_length=0.05)
    ref = _fine_length(dec.embed, padded, 65536)  # pieces of 0.002 near the data
    assert torch.isfinite(m.lengths).all() and m.converged.all()
    torch.testing.assert_close(m.lengths.detach(), ref, rtol=1e-3, atol=0)
    # without it the graded points next to the nodes still see the data: within 1 %
    rough = G.measure_curve_lengths(dec.embed, padded, rtol=1e-3)
    torch.testing.assert_close(rough.lengths.detach(), ref, rtol=1e-2, atol=0)
    assert float(G.chord_length(dec.embed, padded)) < 0.9 * float(ref)  # the nodes miss 18 %
    assert (m.segment_lengths[:, -3:] <= 1e-12 * m.lengths).all()
    assert (m.pieces[:, -3:] <= 4).all()  # one piece, bisected twice at most
    const = torch.zeros(2, 4, 2, dtype=torch.float64)
    assert (G.curve_length(dec.embed, const).detach().abs() <= 1e-12).all()


def test_measured_length_is_differentiable(dec: ToyRBFDecoder) -> None:
    curves = _bent_curves(2, 6, seed=5).requires_grad_(True)
    (grad,) = torch.autograd.grad(G.curve_length(dec.embed, curves, rtol=1e-5).sum(), curves)
    eps = 1e-6
    for b, i, k in [(0, 2, 0), (1, 4, 1), (0, 0, 1)]:
        up, down = curves.detach().clone(), curves.detach().clone()
        up[b, i, k] += eps
        down[b, i, k] -= eps
        fd = (_fine_length(dec.embed, up, 4096) - _fine_length(dec.embed, down, 4096))[b] / (
            2 * eps
        )
        torch.testing.assert_close(grad[b, i, k], fd, rtol=2e-3, atol=1e-6)


def test_max_depth_reports_not_converged() -> None:
    dec = ToyRBFDecoder(data_dim=24, num_centers=6, seed=1, bandwidth=16.0).double()
    curves = _bent_curves(8, 4, seed=3)
    m = G.measure_curve_lengths(dec.embed, curves, rtol=1e-6, resolution=2, max_depth=2)
    assert not m.converged.all()
    assert (m.pieces <= 2**2 * 2 * 4).all()  # never refined past max_depth


def test_a_batch_past_the_memory_bound_is_measured_like_its_curves_alone(monkeypatch) -> None:
    """A batch whose pieces exceed the in-flight bound is split, not left unrefined: the same
    converged lengths as each curve measured alone (the LAND measures ``n K`` curves at once)."""
    import geometry.curves as curves_module

    dec = ToyRBFDecoder(data_dim=24, num_centers=6, seed=1, bandwidth=16.0).double()
    curves = _bent_curves(16, 24, seed=4)
    alone = [G.measure_curve_lengths(dec.embed, curves[i : i + 1], rtol=1e-4) for i in range(16)]
    width = dec.embed(curves[0, :1]).shape[1]
    # one curve fits in a pass (its pieces in flight never exceed its evaluations); the batch's
    # first pieces alone (over a quarter of its evaluations here) do not
    bound = max(a.evaluations for a in alone) * width
    assert sum(a.evaluations for a in alone) * width > 4 * bound
    monkeypatch.setattr(curves_module, "_MAX_ACTIVE_ELEMENTS", bound)
    m = G.measure_curve_lengths(dec.embed, curves, rtol=1e-4)
    assert m.converged.all()
    torch.testing.assert_close(m.lengths, torch.cat([a.lengths for a in alone]))
    torch.testing.assert_close(m.errors, torch.cat([a.errors for a in alone]))
    assert torch.equal(m.pieces, torch.cat([a.pieces for a in alone]))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"rtol": 0.0}, "rtol"),
        ({"rtol": 1.5}, "rtol"),
        ({"resolution": 0}, "resolution"),
        ({"max_piece_length": -1.0}, "max_piece_length"),
        ({"min_depth": 3, "max_depth": 2}, "max_depth"),
        ({"max_depth": 31}, "max_depth"),
    ],
)
def test_measure_rejects_bad_options(options: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        G.measure_curve_lengths(LinearEmbed(torch.eye(2)), torch.zeros(1, 3, 2), **options)


def test_non_finite_embedding_is_an_error() -> None:
    def embed(z: torch.Tensor) -> torch.Tensor:
        return torch.where(z.norm(dim=1, keepdim=True) > 1, torch.nan, z)

    with pytest.raises(ValueError, match="non-finite"):
        G.curve_length(embed, torch.tensor([[[0.0, 0.0], [2.0, 0.0]]]))


@pytest.mark.parametrize("bad", [torch.inf, -torch.inf])
def test_infinite_embedding_between_nodes_is_an_error(bad: float) -> None:
    """An infinite value seen only at a bisection point (not at a node) is caught too."""

    def embed(z: torch.Tensor) -> torch.Tensor:
        out = torch.cat([z, z], dim=1)
        hit = (z[:, :1] - 0.5).abs() < 0.01  # (n, 1) a narrow band in the middle
        return torch.where(hit & (torch.arange(4) == 2), bad, out)

    with pytest.raises(ValueError, match=r"non-finite values on the curves \(e.g. at latent point"):
        G.measure_curve_lengths(embed, torch.tensor([[[0.0, 0.0], [1.0, 0.0]]]))


def test_large_finite_embedding_is_not_an_error() -> None:
    """Finite values whose sum overflows float32 are not mistaken for non-finite ones."""

    def embed(z: torch.Tensor) -> torch.Tensor:
        big = torch.full((z.shape[0], 8), 3e38, dtype=z.dtype)
        return torch.cat([big, z], dim=1)

    res = G.measure_curve_lengths(embed, torch.tensor([[[0.0, 0.0], [3.0, 4.0]]]))
    torch.testing.assert_close(res.lengths, torch.tensor([5.0]))
