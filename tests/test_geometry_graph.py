"""kNN graphs, shortest paths and geodesic distance matrices (geometry.graph, .distances)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import geometry as G
from geometry.toy_models import LinearEmbed, ToyRBFDecoder
from tests.helpers.latent_codes import codes_near_centers

pytestmark = pytest.mark.usefixtures("single_thread")


def test_graph_distances_close_to_refined_geodesics(rbf: ToyRBFDecoder) -> None:
    """Stated tolerance: graph distances (k=40, edges to rtol 1e-3) are upper bounds of the
    refined geodesic lengths up to rtol, with a median relative excess below 5 %."""
    z = codes_near_centers(rbf, 200)
    graph = G.build_graph(rbf.embed, z, k=40, rtol=1e-3)
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(0, 200, (60,), generator=g), torch.randint(0, 200, (60,), generator=g)
    keep = src != tgt
    src, tgt = src[keep], tgt[keep]
    refined, glen, res = G.refined_pair_distances(rbf.embed, graph, src, tgt, num_nodes=16)
    line = G.connecting_geodesics(rbf.embed, z[src], z[tgt], num_nodes=16)
    line_len = G.curve_length(rbf.embed, line.curves, rtol=1e-4)
    ref = torch.minimum(refined, line_len)
    assert res is not None
    assert (refined <= glen).all()
    rel = (glen - ref) / ref
    assert (rel > -2e-3).all()
    assert rel.median() < 0.05
    assert (rel > 1e-3).any()  # the graph is not exact: refinement does something
    D = G.geodesic_distance_matrix(rbf.embed, z, k=40, progress=False)
    torch.testing.assert_close(D[src, tgt], glen)


def test_shortest_path_curves_have_the_graph_lengths(rbf: ToyRBFDecoder) -> None:
    z = codes_near_centers(rbf, 80, seed=2)
    graph = G.knn_graph(rbf.embed, z, k=12, rtol=1e-3)
    src, tgt = torch.tensor([0, 5, 7, 9]), torch.tensor([50, 5, 60, 1])
    curves, lengths = G.shortest_path_curves(graph, src, tgt)
    assert curves.shape[0] == 4 and curves.shape[2] == 2
    torch.testing.assert_close(curves[:, 0], z[src])
    torch.testing.assert_close(curves[:, -1], z[tgt])
    # graph lengths are the lengths of the path polylines, finely measured, within rtol
    with torch.no_grad():
        fine = G.chord_length(rbf.embed, G.subdivide_curves(curves, 1024), chunk_size=50_000)
    torch.testing.assert_close(lengths, fine, rtol=1e-3, atol=1e-10)
    assert graph.unconverged_edges == 0
    assert lengths[1] == 0
    D = G.graph_distances(graph, src.numpy(), tgt.numpy())
    np.testing.assert_allclose(np.diag(D), lengths.numpy())


def test_disconnected_graph_raises_clear_error_or_gives_inf() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 2, generator=g, dtype=torch.float64) * 0.3 - torch.tensor(
        [6.0, 0.0], dtype=torch.float64
    )
    b = torch.randn(20, 2, generator=g, dtype=torch.float64) * 0.3 + torch.tensor(
        [6.0, 0.0], dtype=torch.float64
    )
    z = torch.cat([a, b])
    emb = LinearEmbed(torch.eye(2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"2 connected components of sizes \[30, 20\].*increase k"):
        G.geodesic_distance_matrix(emb, z, k=5, progress=False)
    with pytest.raises(G.DisconnectedGraphError):
        G.connecting_geodesics(emb, a[:1], b[:1], init="graph", graph_points=z, graph_k=5)
    D = G.geodesic_distance_matrix(emb, z, k=5, on_disconnected="inf", progress=False)
    assert torch.isinf(D[:30, 30:]).all() and torch.isinf(D[30:, :30]).all()
    assert torch.isfinite(D[:30, :30]).all() and torch.isfinite(D[30:, 30:]).all()
    Dr = G.geodesic_distance_matrix(
        emb, z[25:35], method="refined", k=4, on_disconnected="inf", progress=False
    )
    assert torch.isinf(Dr[:5, 5:]).all() and torch.isfinite(Dr[:5, :5]).all()
    # Larger k connects the clusters.
    assert torch.isfinite(G.geodesic_distance_matrix(emb, z, k=25, progress=False)).all()


def _two_clusters() -> tuple[torch.Tensor, LinearEmbed]:
    g = torch.Generator().manual_seed(0)
    shift = torch.tensor([6.0, 0.0], dtype=torch.float64)
    a = torch.randn(30, 2, generator=g, dtype=torch.float64) * 0.3 - shift
    b = torch.randn(20, 2, generator=g, dtype=torch.float64) * 0.3 + shift
    return torch.cat([a, b]), LinearEmbed(torch.eye(2, dtype=torch.float64))


def test_pairs_need_only_be_connected_pairwise_and_bad_indices_are_named() -> None:
    z, emb = _two_clusters()
    graph = G.knn_graph(emb, z, k=5)
    # each pair inside its own component: fine, even though the components differ
    curves, lengths = G.shortest_path_curves(graph, [0, 30], [1, 31])
    assert torch.isfinite(lengths).all() and curves.shape[1] >= 2
    no_path = r"1 of 2 pairs have no graph path.*nodes 0 and 40"
    with pytest.raises(G.DisconnectedGraphError, match=no_path):
        G.shortest_path_curves(graph, [0, 30], [40, 31])
    with pytest.raises(G.DisconnectedGraphError, match="1 of 2 pairs"):
        G.refined_pair_distances(emb, graph, [0, 30], [40, 31])
    for bad, match in (
        ([0, 50], r"outside \[0, 50\) \(e.g. 50\)"),
        ([-1], "e.g. -1"),
        ([0.5], "whole-number"),
    ):
        with pytest.raises(ValueError, match=match):
            G.shortest_path_curves(graph, [0] * len(bad), bad)
        with pytest.raises(ValueError, match=match):
            G.graph_distances(graph, [0], bad, on_disconnected="inf")


def test_pairs_without_a_hop_still_give_segments() -> None:
    z, emb = _two_clusters()
    graph = G.knn_graph(emb, z, k=5)
    curves, lengths = G.shortest_path_curves(graph, [0, 3], [40, 3], on_disconnected="inf")
    assert curves.shape == (2, 2, 2) and torch.isinf(lengths[0]) and lengths[1] == 0
    torch.testing.assert_close(curves[0], torch.stack([z[0], z[40]]))
    refined, glen, res = G.refined_pair_distances(
        emb, graph, [0, 3], [40, 3], on_disconnected="inf"
    )
    assert torch.isinf(refined[0]) and refined[1] == 0 and res is not None and len(res) == 1


def test_refined_distances_are_batch_independent_and_the_graph_owns_its_nodes(
    rbf: ToyRBFDecoder,
) -> None:
    z = codes_near_centers(rbf, 40, seed=3)
    graph = G.build_graph(rbf.embed, z, k=10)
    src, tgt = torch.arange(0, 20), torch.arange(20, 40)
    one, glen1, res1 = G.refined_pair_distances(rbf.embed, graph, src, tgt, batch_size=64)
    many, glen2, res2 = G.refined_pair_distances(rbf.embed, graph, src, tgt, batch_size=3)
    torch.testing.assert_close(glen1, glen2)
    torch.testing.assert_close(one, many, rtol=1e-9, atol=1e-12)
    assert (one <= glen1).all() and len(res1) == len(res2) == 20
    _, _, none = G.refined_pair_distances(rbf.embed, graph, src, tgt, keep_results=False)
    assert none is None
    before = graph.nodes.clone()
    z.add_(1.0)  # the caller changes its tensor in place
    assert torch.equal(graph.nodes, before)


def test_graph_in_three_dimensions() -> None:
    A = torch.randn(5, 3, dtype=torch.float64)
    z = torch.randn(120, 3, dtype=torch.float64)
    D = G.geodesic_distance_matrix(LinearEmbed(A), z, k=20, progress=False)
    true = torch.cdist(z @ A.T, z @ A.T)
    assert D.shape == (120, 120) and torch.equal(D, D.T) and (D.diagonal() == 0).all()
    off = ~torch.eye(120, dtype=torch.bool)
    ratio = D[off] / true[off]
    assert (ratio >= 1 - 1e-12).all() and ratio.median() < 1.05
    # Shortest paths satisfy the triangle inequality.
    assert (D[:, None, :] <= D[:, :, None] + D[None, :, :] + 1e-9).all()
    dec = ToyRBFDecoder(latent_dim=3, data_dim=16, seed=1).double()
    Dd = G.geodesic_distance_matrix(
        dec.embed, codes_near_centers(dec, 60, spread=0.8), k=15, progress=False
    )
    assert torch.isfinite(Dd).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_distance_matrix_dtype_and_refined_method(dtype: torch.dtype) -> None:
    dec = ToyRBFDecoder(data_dim=16, seed=2).to(dtype)
    z = codes_near_centers(dec, 14, spread=0.8, seed=3).to(dtype)
    Dg = G.geodesic_distance_matrix(dec.embed, z, k=6, progress=False)
    Dr = G.geodesic_distance_matrix(
        dec.embed, z, method="refined", k=6, progress=False, num_nodes=10
    )
    for D in (Dg, Dr):
        assert D.dtype == dtype and D.device == z.device and D.shape == (14, 14)
        assert torch.equal(D, D.T) and (D.diagonal() == 0).all()
    assert (Dr <= Dg * (1 + 1e-6)).all() and (Dr < 0.999 * Dg).any()


def test_auxiliary_points_and_bad_options(rbf: ToyRBFDecoder) -> None:
    z = codes_near_centers(rbf, 40, seed=4)
    graph = G.build_graph(rbf.embed, z, k=8, aux_points=30)
    assert graph.num_nodes == 70
    lo, hi = z.min(0).values, z.max(0).values
    aux = graph.nodes[40:]
    assert ((aux >= lo - 0.06 * (hi - lo)) & (aux <= hi + 0.06 * (hi - lo))).all()
    D_aux = G.geodesic_distance_matrix(rbf.embed, z, k=8, aux_points=30, progress=False)
    assert D_aux.shape == (40, 40)
    with pytest.raises(ValueError, match="method"):
        G.geodesic_distance_matrix(rbf.embed, z, method="bvp")
    with pytest.raises(ValueError, match="on_disconnected"):
        G.geodesic_distance_matrix(rbf.embed, z, on_disconnected="ignore")
    with pytest.raises(ValueError, match="need method='refined'"):
        G.geodesic_distance_matrix(rbf.embed, z, num_nodes=10)
    with pytest.raises(ValueError, match="k must be smaller"):
        G.knn_graph(rbf.embed, z, k=40)


def test_edges_across_a_wall_are_measured_to_rtol() -> None:
    """Two clusters with a steep variance wall between them: the long edges that cross it are
    measured within rtol of a 4096-fold subdivision (4 sub-steps undercount them)."""
    dec = ToyRBFDecoder(data_dim=24, num_centers=6, seed=1, bandwidth=16.0).double()
    z = codes_near_centers(dec, 120, spread=0.15, seed=4)
    graph = G.knn_graph(dec.embed, z, k=8, rtol=1e-3)
    coo = graph.adjacency.tocoo()
    keep = coo.row < coo.col
    i, j, w = coo.row[keep], coo.col[keep], coo.data[keep]
    latent = (z[i] - z[j]).norm(dim=1).numpy()
    longest = np.argsort(-latent)[:40]  # the gap-crossing edges
    seg = torch.stack([z[i[longest]], z[j[longest]]], dim=1)
    with torch.no_grad():
        fine = G.chord_length(dec.embed, G.subdivide_curves(seg, 4096), chunk_size=50_000).numpy()
        coarse = G.chord_length(dec.embed, G.subdivide_curves(seg, 4)).numpy()
    np.testing.assert_allclose(w[longest], fine, rtol=1e-3)
    assert ((fine - coarse) / fine).max() > 1e-2


def test_duplicated_points_do_not_change_other_distances(rbf: ToyRBFDecoder) -> None:
    z = codes_near_centers(rbf, 120, seed=3)
    D = G.geodesic_distance_matrix(rbf.embed, z, k=10, progress=False)
    twice = torch.cat([z, z])
    graph = G.build_graph(rbf.embed, twice, k=10)
    assert graph.n_duplicates == 120
    D2 = G.geodesic_distance_matrix(rbf.embed, twice, k=10, progress=False)
    torch.testing.assert_close(D2[:120, :120], D, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(D2[120:, 120:], D, rtol=1e-9, atol=1e-12)
    assert D2[torch.arange(120), torch.arange(120) + 120].max() < 1e-9 * D.max()


def test_graph_of_identical_points_is_an_error() -> None:
    with pytest.raises(ValueError, match="2 distinct nodes"):
        G.knn_graph(LinearEmbed(torch.eye(2)), torch.ones(5, 2), k=1)
    with pytest.raises(ValueError, match="rtol"):
        G.knn_graph(LinearEmbed(torch.eye(2)), torch.randn(5, 2), k=1, rtol=0)
