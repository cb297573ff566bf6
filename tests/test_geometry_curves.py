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
    for fn in (G.curve_length, G.curve_energy, G.segment_lengths):
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
    curves = torch.randn(20, 9, 2, dtype=torch.float64)
    L, E = G.curve_length(dec.embed, curves), G.curve_energy(dec.embed, curves)
    assert (E >= L**2 * (1 - 1e-12)).all()
    assert (E > L**2 * 1.01).any()  # random curves are far from constant speed
    # Equality after reparametrising smooth curves to constant Riemannian speed.
    t = torch.linspace(0, 1, 65, dtype=torch.float64)[None, :, None]
    a, b = curves[:, 0:1], curves[:, -1:]
    bend = torch.stack([-(b - a)[..., 1], (b - a)[..., 0]], dim=-1)  # (20, 1, 2) perpendicular
    smooth = a + t * (b - a) + 0.3 * torch.sin(torch.pi * t) * bend  # (20, 65, 2)
    cs = G.constant_speed_curves(dec.embed, smooth, n_nodes=33, n_sub=8)
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
    with pytest.raises(ValueError, match="n_nodes"):
        G.straight_lines(torch.zeros(2, 2), torch.zeros(2, 2), 1)
