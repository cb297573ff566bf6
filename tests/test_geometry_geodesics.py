"""Batched connecting geodesics (geometry.geodesics) and the exp / log maps (geometry.maps)."""

from __future__ import annotations

import math

import pytest
import torch

import geometry as G
import geometry.geodesics as geodesics_module
import geometry.sub_point_lm as sub_point_lm_module
from geometry import block_tridiagonal
from geometry.sub_point_lm import SubPointLM
from geometry.toy_models import (
    LinearEmbed,
    SphereEmbed,
    ToyConvDecoder,
    ToyMLPDecoder,
    ToyRBFDecoder,
)
from tests.helpers.curves import distance_to_segment

pytestmark = pytest.mark.usefixtures("single_thread")


def _codes(dec: ToyRBFDecoder, n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = dec.centers.shape[0]
    idx = torch.randint(0, k, (n,), generator=g)
    return dec.centers[idx] + 0.3 * torch.randn(
        n, dec.centers.shape[1], generator=g, dtype=dec.centers.dtype
    )


def test_linear_decoder_geodesics_are_straight_lines() -> None:
    A = torch.randn(6, 3, dtype=torch.float64)
    emb = LinearEmbed(A)
    z0, z1 = torch.randn(8, 3, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    # Start from bent curves so that the solver has to straighten them.
    t = torch.linspace(0, 1, 9, dtype=torch.float64)[None, :, None]
    bent = (
        z0[:, None]
        + t * (z1 - z0)[:, None]
        + torch.sin(torch.pi * t) * torch.randn(8, 1, 3, dtype=torch.float64)
    )
    res = G.connecting_geodesics(emb, z0, z1, init_curves=bent, num_nodes=20, tolerance=1e-12)
    true = ((z1 - z0) @ A.T).norm(dim=1)
    assert res.converged.all() and not res.reverted.any()
    assert (res.initial_lengths > true * 1.05).all()
    torch.testing.assert_close(res.lengths, true, rtol=1e-9, atol=0)
    assert (distance_to_segment(res.curves).max(dim=1).values < 1e-3 * (z1 - z0).norm(dim=1)).all()
    assert (res.energies >= res.lengths**2 * (1 - 1e-9)).all()


def test_sphere_geodesics_match_great_circles() -> None:
    g = torch.Generator().manual_seed(1)
    B = 24
    theta = 0.6 + (math.pi - 1.2) * torch.rand(
        2, B, generator=g, dtype=torch.float64
    )  # off the poles
    phi = -1.2 + 2.4 * torch.rand(2, B, generator=g, dtype=torch.float64)
    z0, z1 = torch.stack([theta[0], phi[0]], 1), torch.stack([theta[1], phi[1]], 1)
    sphere = SphereEmbed(radius=2.0)
    res = G.connecting_geodesics(sphere, z0, z1, num_nodes=32)
    gc = sphere.great_circle(z0, z1)
    assert res.converged.all()
    assert ((res.lengths - gc).abs() / gc < 0.01).all()
    straight = G.curve_length(sphere, G.straight_lines(z0, z1, 32))
    assert ((straight - gc) / gc > 0.01).sum() >= 5  # the test is not trivially passed


def test_node_refinement_converges_sphere_lengths_to_great_circles() -> None:
    """A polyline of few latent nodes is longer than the great circle by O(N^-2); refining the
    node count until the length changes by less than node_rtol brings it within about that."""
    g = torch.Generator().manual_seed(2)
    theta = 0.6 + (math.pi - 1.2) * torch.rand(2, 16, generator=g, dtype=torch.float64)
    phi = -1.5 + 3.0 * torch.rand(2, 16, generator=g, dtype=torch.float64)
    z0, z1 = torch.stack([theta[0], phi[0]], 1), torch.stack([theta[1], phi[1]], 1)
    sphere = SphereEmbed()
    gc = sphere.great_circle(z0, z1)
    coarse = G.connecting_geodesics(sphere, z0, z1, num_nodes=4, max_num_nodes=4)
    fine = G.connecting_geodesics(sphere, z0, z1, num_nodes=4, max_num_nodes=60, node_rtol=1e-3)
    assert coarse.curves.shape == (16, 4, 2) and fine.curves.shape == (16, 49, 2)
    assert coarse.node_gains.isnan().all()
    gap_coarse, gap_fine = (coarse.lengths - gc) / gc, (fine.lengths - gc) / gc
    assert (gap_fine > -1e-9).all() and (gap_fine <= gap_coarse + 1e-9).all()
    assert (gap_coarse > 1e-3).sum() >= 4  # the coarse polylines are measurably too long
    c = fine.converged
    assert c.float().mean() >= 0.75
    assert (fine.node_gains[c] <= 1e-3).all() and (gap_fine[c] < 1e-3).all()
    assert (fine.node_gains[~c].isnan() | (fine.node_gains[~c] > 1e-3)).all()
    # the returned curves are the measured polylines, with their end points
    remeasured = G.measure_curve_lengths(sphere, fine.curves, rtol=1e-6).lengths
    torch.testing.assert_close(remeasured, fine.lengths, rtol=2e-3, atol=0)
    assert torch.equal(fine.curves[:, 0], z0) and torch.equal(fine.curves[:, -1], z1)


def test_node_refinement_keeps_linear_geodesics_and_zero_length_pairs() -> None:
    A = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    z0 = torch.randn(4, 3, dtype=torch.float64)
    z1 = torch.cat([torch.randn(3, 3, dtype=torch.float64), z0[3:]])  # last pair: z0 == z1
    res = G.connecting_geodesics(LinearEmbed(A), z0, z1, num_nodes=6, max_num_nodes=21)
    assert res.curves.shape == (4, 21, 3)
    true = ((z1 - z0) @ A.T).norm(dim=1)
    torch.testing.assert_close(res.lengths, true, rtol=1e-6, atol=1e-12)
    assert res.converged.all() and (res.node_gains[:3].abs() < 1e-6).all()
    assert (res.curves[3] == z0[3]).all()


def test_geodesics_are_never_longer_and_often_shorter_than_straight_lines(
    rbf: ToyRBFDecoder,
) -> None:
    z = _codes(rbf, 96)
    z0, z1 = z[:48], z[48:]
    res = G.connecting_geodesics(rbf.embed, z0, z1, num_nodes=16)
    assert res.converged.float().mean() > 0.95
    # Compare at a common fine resolution, not only on the optimization nodes.
    fine = G.curve_length(rbf.embed, res.curves, rtol=1e-5)
    line = G.curve_length(rbf.embed, G.straight_lines(z0, z1, 2), rtol=1e-5)
    assert (res.lengths <= res.initial_lengths).all()
    assert (fine <= line * 1.002).all()
    assert (fine < 0.98 * line).float().mean() > 0.5
    assert (res.iterations > 0).any()


def test_passes_on_a_wide_decoder_are_bounded_and_change_nothing(monkeypatch) -> None:
    """On a decoder with D' = 2^14 the LM terms' forward-mode passes and Hessian graphs hold at
    most 2^22 embedded values (256 rows here: one curve of 144 rows per pass) instead of
    chunk_size rows; a narrow decoder keeps chunk_size. The curves, iterations and flags are
    those of the unbounded passes (d = 4, so the Newton steps run too)."""
    wide = ToyMLPDecoder(latent_dim=4, data_dim=1 << 14, hidden_dims=(16,), seed=3).double()
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert sub_point_lm_module.pass_rows(wide.embed, z, 8192) == 256
    assert sub_point_lm_module.pass_rows(wide.embed, z, 64) == 64
    narrow = ToyMLPDecoder(latent_dim=4, data_dim=200, seed=3).double()
    assert sub_point_lm_module.pass_rows(narrow.embed, z, 8192) == 8192
    opts = {"num_nodes": 8, "bent_starts": 0}
    bounded = G.connecting_geodesics(wide.embed, z[:3], z[3:], **opts)
    monkeypatch.setattr(sub_point_lm_module, "PASS_ELEMENTS", 1 << 40)
    unbounded = G.connecting_geodesics(wide.embed, z[:3], z[3:], **opts)
    torch.testing.assert_close(bounded.curves, unbounded.curves, rtol=1e-9, atol=1e-12)
    assert torch.equal(bounded.iterations, unbounded.iterations)
    assert torch.equal(bounded.converged, unbounded.converged) and bool(bounded.converged.all())


def test_batch_of_one_equals_same_pair_in_large_batch(rbf: ToyRBFDecoder) -> None:
    """Without the batch-wide auxiliary graph start a pair's result ignores its batch."""
    z = _codes(rbf, 80, seed=5)
    opts = {"num_nodes": 12, "auxiliary_points": 0}
    big = G.connecting_geodesics(rbf.embed, z[:40], z[40:], **opts)
    for i in (0, 17, 39):
        one = G.connecting_geodesics(rbf.embed, z[i : i + 1], z[40 + i : 41 + i], **opts)
        torch.testing.assert_close(one.curves[0], big.curves[i], rtol=1e-7, atol=1e-9)
        assert one.iterations[0] == big.iterations[i]


def test_auxiliary_graph_start_is_seeded_and_only_shortens(rbf: ToyRBFDecoder) -> None:
    """The default d = 2 global start (a kNN graph over the batch's end points and seeded
    uniform points) gives the same curves on every call, and no pair comes out longer than
    without it beyond the measurement tolerance (the shorter result is kept per pair). The
    second-order steps act on each pair's kept curve after that choice, so the invariant is
    that of the choice: checked without them."""
    z = _codes(rbf, 48, seed=6)
    a = G.connecting_geodesics(rbf.embed, z[:24], z[24:], num_nodes=12)
    b = G.connecting_geodesics(rbf.embed, z[:24], z[24:], num_nodes=12)
    assert torch.equal(a.curves, b.curves) and torch.equal(a.iterations, b.iterations)
    a = G.connecting_geodesics(rbf.embed, z[:24], z[24:], num_nodes=12, second_order=False)
    off = G.connecting_geodesics(
        rbf.embed, z[:24], z[24:], num_nodes=12, auxiliary_points=0, second_order=False
    )
    slack = 2 * a.length_rtol * off.lengths
    assert (a.lengths <= off.lengths + slack).all()


def test_no_curve_is_returned_longer_than_its_initial_curve(
    rbf: ToyRBFDecoder, monkeypatch
) -> None:
    """Force the optimizer to return worse curves: they must be replaced and flagged (the
    second-order steps, which would go on from the reverted starts, are off)."""
    z = _codes(rbf, 10, seed=2)

    def bad_lm(embed, x, z0, z1, *args, **kwargs):
        B, n, d = x.shape
        worse = x + 0.5 * torch.randn_like(x)
        worse[: B // 2] = x[: B // 2]  # half of them unchanged
        curves = torch.cat([z0[:, None], worse, z1[:, None]], dim=1)
        L = G.measure_curve_lengths(embed, curves).lengths.double()  # a faithful objective
        ok = torch.ones(B, dtype=torch.bool)
        its = torch.ones(B, dtype=torch.long)
        return SubPointLM(worse, ok, its, L, torch.zeros(B, dtype=L.dtype))

    z0, z1 = z[0:10:2], z[1:10:2]
    start = G.connecting_geodesics(
        rbf.embed, z0, z1, num_nodes=10, max_iterations=0, max_num_nodes=10
    ).curves
    monkeypatch.setattr(geodesics_module, "sub_point_lm", bad_lm)
    one_level = dict(sub_steps=4, max_sub_steps=4)  # one LM call for all curves
    res = G.connecting_geodesics(
        rbf.embed, z0, z1, num_nodes=10, init_curves=start, reparametrize=False,
        second_order=False, max_num_nodes=10, **one_level,
    )  # fmt: skip
    assert (res.lengths <= res.initial_lengths).all()
    assert not res.reverted[:2].any() and res.converged[:2].all()
    assert res.reverted[3:].all() and not res.converged[3:].any()
    torch.testing.assert_close(res.curves[3:], start[3:])


def test_random_initial_curves_only_get_shorter(rbf: ToyRBFDecoder) -> None:
    z = _codes(rbf, 20, seed=7)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)[None, :, None]
    wiggly = z[:10, None] + t * (z[10:] - z[:10])[:, None]
    wiggly[:, 1:-1] += 0.8 * torch.randn(10, 5, 2, dtype=torch.float64)
    res = G.connecting_geodesics(rbf.embed, z[:10], z[10:], init_curves=wiggly, num_nodes=14)
    assert (res.lengths <= res.initial_lengths).all()
    assert torch.equal(res.curves[:, 0], z[:10]) and torch.equal(res.curves[:, -1], z[10:])


def test_unconverged_curves_are_flagged(rbf: ToyRBFDecoder) -> None:
    z = _codes(rbf, 12, seed=3)
    line = G.straight_lines(z[:6], z[6:], 2)  # given curves: one stage, no coarse one
    res = G.connecting_geodesics(
        rbf.embed, z[:6], z[6:], init_curves=line, max_iterations=1, tolerance=0.0,
        max_num_nodes=24,
    )  # fmt: skip
    assert not res.converged.any()
    assert (res.iterations == 1).all()  # one length step (the fine stage has no energy phase)


def test_zero_length_pairs_and_two_nodes(rbf: ToyRBFDecoder) -> None:
    z = _codes(rbf, 3)
    res = G.connecting_geodesics(rbf.embed, z, z.clone(), num_nodes=8)
    assert res.converged.all() and (res.lengths < 1e-12).all()
    two = G.connecting_geodesics(rbf.embed, z, z.flip(0), num_nodes=2)
    assert two.curves.shape == (3, 2, 2) and two.converged.all()


@pytest.mark.parametrize("d", [1, 3, 5])
def test_other_latent_dimensions(d: int) -> None:
    dec = ToyRBFDecoder(latent_dim=d, data_dim=16, num_centers=4, seed=d).double()
    z = _codes(dec, 8, seed=d)
    res = G.connecting_geodesics(dec.embed, z[:4], z[4:], num_nodes=10, max_iterations=1000)
    assert res.curves.shape == (4, 37, d)  # the default node refinement: up to 4 (10 - 1) + 1
    assert res.stationary.all() and res.faithful.all()
    assert (res.lengths <= res.initial_lengths).all()
    # converged also says that the last node doubling gained at most node_rtol
    assert torch.equal(res.converged, res.node_gains <= 1e-2)


def test_conv_decoder_geodesics() -> None:
    dec = ToyConvDecoder(latent_dim=2).double()
    z = torch.randn(8, 2, dtype=torch.float64)
    res = G.connecting_geodesics(dec.embed, z[:4], z[4:], num_nodes=10)
    assert res.converged.all() and (res.lengths <= res.initial_lengths).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_device_preserved(dtype: torch.dtype) -> None:
    dec = ToyRBFDecoder(data_dim=16, seed=1).to(dtype)
    z = _codes(dec, 8).to(dtype)
    res = G.connecting_geodesics(dec.embed, z[:4], z[4:], num_nodes=10)
    for t in (res.curves, res.lengths, res.energies, res.initial_lengths):
        assert t.dtype == dtype and t.device == z.device
    assert res.converged.dtype == torch.bool and res.iterations.dtype == torch.long
    assert res.stationary.all() and res.faithful.all()
    if dtype == torch.float64:  # float32 roundoff can keep a length measurement from converging
        assert res.converged.all()


def test_adam_and_graph_initialisation(rbf: ToyRBFDecoder) -> None:
    z = _codes(rbf, 60, seed=9)
    z0, z1 = z[:4], z[4:8]
    adam = G.connecting_geodesics(
        rbf.embed, z0, z1, num_nodes=12, optimizer="adam", max_iterations=200
    )
    assert (adam.lengths <= adam.initial_lengths).all()
    assert (adam.lengths < 0.9 * adam.initial_lengths).any()
    line = G.connecting_geodesics(rbf.embed, z0, z1, num_nodes=12)
    graph = G.connecting_geodesics(
        rbf.embed, z0, z1, num_nodes=12, init="graph", graph_points=z[8:], graph_k=10
    )
    assert graph.converged.all()
    # The graph path starts in a good homotopy class: never clearly worse than the line start.
    assert (graph.lengths <= line.lengths * 1.01).all()


def test_block_tridiagonal_solver_matches_dense() -> None:
    b, n, d = 3, 40, 4  # n * d > 128: the block Thomas path
    J = torch.randn(b, n + 1, 6, d, dtype=torch.float64)
    diag = 2 * J[:, :-1].transpose(2, 3) @ J[:, :-1] + torch.eye(d, dtype=torch.float64)
    off = -J[:, :-2].transpose(2, 3) @ J[:, 1:-1]
    rhs = torch.randn(b, n, d, dtype=torch.float64)
    x = block_tridiagonal.solve_block_tridiagonal(diag, off, rhs)
    torch.testing.assert_close(x, block_tridiagonal._solve_dense(diag, off, rhs))
    torch.testing.assert_close(block_tridiagonal.solve_spd_block_tridiagonal(diag, off, rhs), x)


def test_geodesics_leave_no_parameter_gradients(rbf: ToyRBFDecoder) -> None:
    dec = ToyRBFDecoder(data_dim=8, seed=2)
    z = _codes(dec, 4)
    G.connecting_geodesics(dec.embed, z[:2], z[2:], num_nodes=6)
    G.connecting_geodesics(dec.embed, z[:2], z[2:], num_nodes=6, optimizer="adam", max_iterations=5)
    assert all(p.grad is None for p in dec.parameters())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(z0=torch.zeros(3, 2), z1=torch.zeros(3, 3)), "different latent dimensions"),
        (dict(z0=torch.zeros(3, 2), z1=torch.zeros(2, 2)), "same number of points"),
        (dict(z0=torch.zeros(3, 2), z1=torch.ones(3, 2), num_nodes=1), "num_nodes"),
        (dict(z0=torch.zeros(3, 2), z1=torch.full((3, 2), float("nan"))), "non-finite"),
        (dict(z0=torch.zeros(2, 2), z1=torch.ones(2, 2), optimizer="sgd"), "optimizer"),
        (
            dict(z0=torch.zeros(2, 2), z1=torch.ones(2, 2), init_curves=torch.zeros(2, 4, 2)),
            "end points",
        ),
        (
            dict(z0=torch.zeros(2, 2), z1=torch.ones(2, 2), init_curves=torch.zeros(3, 4, 2)),
            "init_curves",
        ),
        (dict(z0=torch.zeros(2, 2), z1=torch.ones(2, 2), init="graph"), "graph_points"),
        (dict(z0=torch.zeros(2, 2), z1=torch.ones(2, 2), rtol=0.0), "rtol"),
        (dict(z0=torch.zeros(2, 2), z1=torch.ones(2, 2), tolerance=-1.0), "tolerance"),
        (dict(z0=torch.zeros(2), z1=torch.ones(2)), r"shape \(B, d\)"),
        (dict(z0=torch.zeros(2, 2), z1=torch.full((2, 2), float("inf"))), "non-finite"),
        (dict(z0=torch.zeros(2, 2), z1=torch.ones(2, 2), max_num_nodes=10), "max_num_nodes"),
        (dict(z0=torch.zeros(2, 2), z1=torch.ones(2, 2), node_rtol=0.0), "node_rtol"),
        (dict(z0=torch.zeros(2, 2), z1=torch.ones(2, 2), auxiliary_points=-1), "auxiliary_points"),
        (dict(z0=torch.zeros(2, 2), z1=torch.ones(2, 2), start_slack=-0.5), "start_slack"),
    ],
)
def test_bad_input_is_named(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        G.connecting_geodesics(LinearEmbed(torch.eye(2)), **kwargs)


# ------------------------------------------------------------------------------------ maps


def test_graph_start_on_a_disconnected_graph_falls_back_to_the_line(rbf: ToyRBFDecoder) -> None:
    """Codes in two far clusters leave the kNN graph without a path between them: beside the
    line that graph start is the straight segment; as the only start it is a clear error."""
    g = torch.Generator().manual_seed(0)
    near = 0.1 * torch.randn(30, 2, generator=g, dtype=torch.float64)
    pts = torch.cat([near, near.flip(0) + 20.0])
    z0, z1 = pts[:2], pts[-2:]
    res = G.connecting_geodesics(rbf.embed, z0, z1, graph_points=pts, graph_k=5, num_nodes=8)
    line = G.connecting_geodesics(rbf.embed, z0, z1, num_nodes=8)
    assert res.converged.all() and torch.isfinite(res.lengths).all()
    torch.testing.assert_close(res.lengths, line.lengths, rtol=1e-3, atol=0)
    with pytest.raises(G.DisconnectedGraphError, match="have no graph path"):
        G.connecting_geodesics(
            rbf.embed, z0, z1, graph_points=pts, graph_k=5, num_nodes=8, init="graph"
        )
