"""Quality of connecting_geodesics on walled decoders: measured lengths, faithful objectives,
stationarity against an independent optimizer, and bad input."""

from __future__ import annotations

import pytest
import torch

import geometry as G
from geometry.toy_models import ToyRBFDecoder

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def walled() -> ToyRBFDecoder:
    """2-D decoder with steep variance walls around 8 centers (bandwidth 16)."""
    return ToyRBFDecoder(latent_dim=2, data_dim=24, num_centers=8, bandwidth=16.0, seed=4).double()


def _codes(dec: ToyRBFDecoder, n: int, seed: int = 0, spread: float = 0.2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, dec.centers.shape[0], (n,), generator=g)
    noise = torch.randn(n, dec.centers.shape[1], generator=g, dtype=dec.centers.dtype)
    return dec.centers[idx] + spread * noise


def _fine(embed, curves: torch.Tensor) -> torch.Tensor:
    return G.measure_curve_lengths(embed, curves, rtol=1e-5).lengths


def _adam_on_polyline(embed, curves: torch.Tensor, steps: int, sub: int = 16) -> torch.Tensor:
    """Independent reference: Adam on the interior nodes, objective = chord sum of the polyline
    subdivided ``sub`` times per segment (a faithful length at that resolution)."""
    x = curves[:, 1:-1].clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=1e-2 * (curves[:, -1] - curves[:, 0]).norm(dim=1).mean())
    for _ in range(steps):
        full = torch.cat([curves[:, :1], x, curves[:, -1:]], dim=1)
        loss = G.chord_length(embed, G.subdivide_curves(full, sub)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return torch.cat([curves[:, :1], x.detach(), curves[:, -1:]], dim=1)


def test_reported_lengths_are_measured_near_and_far_from_the_data(walled) -> None:
    z = _codes(walled, 24, seed=1)
    far = z[12:] + 4.0 * torch.tensor([1.0, -1.0], dtype=z.dtype)  # outside every well
    z0, z1 = torch.cat([z[:6], z[6:12]]), torch.cat([z[12:18], far[:6]])
    res = G.connecting_geodesics(walled.embed, z0, z1, num_nodes=12)
    fine = _fine(walled.embed, res.curves)
    assert (res.length_rtol == 1e-3).all()
    tol = res.length_rtol * fine + 1e-9
    assert ((res.lengths - fine).abs() <= tol).all()
    assert (res.length_errors <= tol).all()
    # the node chord sum, what the solver used to report, misses the walls by whole percents
    assert ((fine - res.chord_lengths) / fine > 0.01).any()
    assert (res.chord_lengths <= res.lengths * (1 + 1e-9)).all()


def test_node_only_objective_is_flagged_unfaithful(walled) -> None:
    """With one sub-point per segment (the classical chord energy) the solver cuts corners
    through walls; such curves are stationary but must not be reported converged."""
    z = _codes(walled, 32, seed=2)
    z0, z1 = z[:16], z[16:]
    chord = G.connecting_geodesics(walled.embed, z0, z1, num_nodes=8, sub_steps=1, max_sub_steps=1)
    cut = chord.stationary & ~chord.faithful
    assert cut.sum() >= 3
    assert not chord.converged[cut].any()
    # their measured lengths are above what the chords claimed, often by whole percents
    gap = (chord.lengths[cut] - chord.chord_lengths[cut]) / chord.lengths[cut]
    assert (gap > 1e-3).all() and (gap > 0.05).sum() >= 3
    res = G.connecting_geodesics(walled.embed, z0, z1, num_nodes=8)
    assert not (res.converged & ~res.faithful).any()
    assert (res.lengths[cut] < chord.lengths[cut]).float().mean() > 0.5


def test_converged_curves_are_stationary_for_an_independent_optimiser(walled) -> None:
    """A 300-step Adam run from the solver's converged curves does not shorten them by more than
    1 % (0.1 % on 90 %): they are minima, not saddles. (Before the negative-curvature search, 3
    of 12 were saddles on wall crests that Adam left, by 1.9 to 3.0 %.)"""
    z = _codes(walled, 24, seed=3)
    res = G.connecting_geodesics(
        walled.embed, z[:12], z[12:], num_nodes=12, max_iterations=300, max_num_nodes=12
    )  # at a fixed node count: the stationarity of the polylines themselves
    assert res.converged.float().mean() >= 0.5
    ours = _fine(walled.embed, res.curves)
    polished = _adam_on_polyline(walled.embed, res.curves, steps=300)
    theirs = _fine(walled.embed, polished)
    c = res.converged
    assert (theirs[c] >= ours[c] * 0.99).all()
    assert (theirs[c] >= ours[c] * 0.999).float().mean() >= 0.9


def test_a_worse_minimum_is_not_reported_converged(walled) -> None:
    """The chord-energy solver (one sub-point) reports stationary curves that a plain Adam run
    from the same start beats by > 1 %; the default solver finds a curve within 1 % of that
    reference or says it has not converged. (At a fixed 8 nodes it reported 4 of 16 curves
    converged 1.6-3.5 % above the reference; the default node refinement, up to 29 nodes here,
    takes them below it, or flags them where the node count has not converged.)"""
    z = _codes(walled, 32, seed=5)
    z0, z1 = z[:16], z[16:]
    old = G.connecting_geodesics(walled.embed, z0, z1, num_nodes=8, sub_steps=1, max_sub_steps=1)
    line = G.constant_speed_curves(walled.embed, G.straight_lines(z0, z1, 2), 8, num_sub=8)
    ref = _fine(walled.embed, _adam_on_polyline(walled.embed, line, steps=400))
    old_len = _fine(walled.embed, old.curves)
    worse = old.stationary & (old_len > 1.01 * ref)
    assert worse.sum() >= 2  # the defect is real for the chord objective
    assert not old.converged[worse].any()
    res = G.connecting_geodesics(walled.embed, z0, z1, num_nodes=8)
    ours = _fine(walled.embed, res.curves)
    ok = (ours <= 1.01 * ref) | ~res.converged
    assert ok.all()
    # a curve is flagged for a reason: here 8 nodes are too few, and the last node doubling
    # still gained more than node_rtol (the refined curves are shorter than at a fixed count)
    assert (res.converged | (res.node_gains > 1e-2)).all()
    fixed = G.connecting_geodesics(walled.embed, z0, z1, num_nodes=8, max_num_nodes=8)
    assert (ours <= _fine(walled.embed, fixed.curves) * (1 + 2e-3)).all()


def test_far_off_the_data_terminates_without_nan(walled) -> None:
    z0 = torch.tensor([[1e3, 1e3], [0.0, 0.0], [-1e3, 5.0]], dtype=torch.float64)
    z1 = torch.tensor([[-1e3, 1e3], [1e3, 1e3], [1e3, -5.0]], dtype=torch.float64)
    res = G.connecting_geodesics(walled.embed, z0, z1, num_nodes=10)
    for t in (res.curves, res.lengths, res.energies, res.length_errors):
        assert torch.isfinite(t).all()
    assert (res.lengths <= res.initial_lengths).all()
    # at most 100 steps per phase (energy, length) of each of the 3 coarse line starts and of
    # each of the 4 sub-point levels (4, 8, 16, 32 at 10 nodes) of the fine stage
    assert (res.iterations <= 100 * 2 * (3 + 4)).all()


def test_identical_end_points_give_zero_length_curves(walled) -> None:
    z = _codes(walled, 4, seed=6)
    z0, z1 = z.clone(), torch.cat([z[:2], z[2:].flip(0)])  # two identical pairs, two not
    res = G.connecting_geodesics(walled.embed, z0, z1, num_nodes=9)
    assert torch.equal(res.lengths[:2], torch.zeros(2, dtype=z.dtype))
    assert res.converged[:2].all() and torch.isfinite(res.curves).all()
    assert (res.curves[:2] == z[:2, None]).all()
    assert (res.lengths[2:] > 0).all()


def test_empty_batch_gives_empty_results(walled) -> None:
    z = torch.zeros(0, 2, dtype=torch.float64)
    res = G.connecting_geodesics(walled.embed, z, z, num_nodes=7)
    assert res.curves.shape == (0, 25, 2) and len(res) == 0  # 4 (7 - 1) + 1 nodes by default
    assert res.lengths.shape == (0,) and res.converged.shape == (0,)


def test_points_of_another_dtype_than_the_model_are_named() -> None:
    dec = ToyRBFDecoder(data_dim=8, seed=1)  # float32
    z = torch.zeros(2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"dtype torch\.float64.*torch\.float32"):
        G.connecting_geodesics(dec.embed, z, z + 1)


def test_global_start_and_node_refinement_reach_the_data_graph_routes(walled) -> None:
    """Codes-free defaults at d = 2 (the auxiliary graph start and node refinement) against an
    independent reference that knows the data: a graph over 400 data-like codes refined on 64
    nodes. Line starts on 24 nodes alone miss routes around the walls by whole percents."""
    z = _codes(walled, 32, seed=7)
    z0, z1 = z[:16], z[16:]
    codes = _codes(walled, 400, seed=8)
    ref = G.connecting_geodesics(
        walled.embed, z0, z1, init="graph", graph_points=codes, num_nodes=64
    )
    line = G.connecting_geodesics(walled.embed, z0, z1, auxiliary_points=0, max_num_nodes=24)
    ours = G.connecting_geodesics(walled.embed, z0, z1)  # the defaults: refined up to 93 nodes
    best = torch.minimum(_fine(walled.embed, ref.curves), _fine(walled.embed, line.curves))
    assert (_fine(walled.embed, line.curves) > 1.02 * best).sum() >= 2  # the defect is real
    ratio = _fine(walled.embed, ours.curves) / best
    assert (ratio <= 1.01).all(), ratio.max()
    assert ours.curves.shape == (16, 93, 2)
    assert (ours.lengths <= line.lengths * (1 + 2 * ours.length_rtol)).all()
