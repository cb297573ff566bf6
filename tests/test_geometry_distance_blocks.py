"""Rectangular, streamed, resumable and sharded distance matrices (geometry.distance_blocks)."""

from __future__ import annotations

import os
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import geometry as G
from geometry.toy_models import ToyRBFDecoder
from tests.helpers.latent_codes import codes_near_centers

pytestmark = pytest.mark.usefixtures("single_thread")


def _decoder() -> ToyRBFDecoder:
    return ToyRBFDecoder(data_dim=24, num_centers=6, seed=3).double()


class _StopRunError(Exception):
    pass


def _bytes(path: object) -> bytes:
    with open(str(path), "rb") as f:
        return f.read()


# ------------------------------------------------------------------ rectangular blocks


def test_rectangular_block_equals_rows_and_columns_of_the_full_matrix(rbf) -> None:
    z = codes_near_centers(rbf, 150)
    full = G.geodesic_distance_matrix(rbf.embed, z, k=12, progress=False)  # (150, 150)
    rows, cols = torch.arange(10, 40), torch.arange(100, 150)
    block = G.geodesic_distances(rbf.embed, z[rows], z[cols], points=z, k=12)  # (30, 50)
    assert block.shape == (30, 50) and block.dtype == z.dtype
    torch.testing.assert_close(block, full[rows][:, cols], rtol=1e-13, atol=0)
    # landmarks to all points, reusing the graph of an earlier call
    graph = G.build_graph(rbf.embed, z, k=12)
    again = G.geodesic_distances(rbf.embed, z[rows], z, graph=graph)
    torch.testing.assert_close(again, full[rows], rtol=1e-13, atol=0)


def test_rectangular_block_on_its_own_points_is_a_distance(rbf) -> None:
    """Without way points the graph is built on the union of sources and targets; shared points
    are one node (zero distance to themselves), and the block is the transpose of the swap."""
    z = codes_near_centers(rbf, 80, seed=1)
    a, b = z[:50], z[30:]  # 20 shared points
    D = G.geodesic_distances(rbf.embed, a, b, k=10)  # (50, 50)
    assert torch.all(D[torch.arange(30, 50), torch.arange(0, 20)] == 0)
    assert torch.all(D[D != 0] > 0)
    Dt = G.geodesic_distances(rbf.embed, b, a, k=10)
    torch.testing.assert_close(D, Dt.T, rtol=1e-12, atol=0)


def test_rectangular_bad_inputs(rbf) -> None:
    z = codes_near_centers(rbf, 40)
    with pytest.raises(ValueError, match="targets has latent dimension 3, expected 2"):
        G.geodesic_distances(rbf.embed, z, torch.zeros(4, 3, dtype=z.dtype))
    bad = z.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match=r"sources contains non-finite values \(in 1 of 40 rows\)"):
        G.geodesic_distances(rbf.embed, bad, z)
    graph = G.build_graph(rbf.embed, z[:20], k=5)
    with pytest.raises(ValueError, match="20 source/target points are not nodes of the given"):
        G.geodesic_distances(rbf.embed, z[:5], z[20:], graph=graph)


def _two_clusters(dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    a = 0.1 * torch.randn(30, 2, generator=g, dtype=dtype) - 1.5
    b = 0.1 * torch.randn(20, 2, generator=g, dtype=dtype) + 1.5
    return torch.cat([a, b])


def test_disconnected_graph_raises_naming_components_or_gives_inf(rbf, tmp_path) -> None:
    z = _two_clusters()
    with pytest.raises(
        G.DisconnectedGraphError, match=r"2 connected components of sizes \[30, 20\]"
    ):
        G.geodesic_distances(rbf.embed, z, k=5)
    D = G.geodesic_distances(rbf.embed, z, k=5, on_disconnected="inf")
    assert torch.isinf(D[:30, 30:]).all() and torch.isfinite(D[:30, :30]).all()
    out = str(tmp_path / "d.npy")
    with pytest.raises(G.DisconnectedGraphError, match="sizes \\[30, 20\\]"):
        G.write_distance_matrix(rbf.embed, z, out, k=5, progress=False)
    assert not os.path.exists(out)  # refused before any file was created
    G.write_distance_matrix(rbf.embed, z, out, k=5, on_disconnected="inf", progress=False)
    M = G.open_distance_matrix(out)
    assert np.isinf(M[:30, 30:]).all() and np.isfinite(M[30:, 30:]).all()


# ------------------------------------------------------------------ streamed matrices


def test_streamed_matrix_equals_in_memory_result(rbf, tmp_path) -> None:
    z = codes_near_centers(rbf, 130)
    out = tmp_path / "d.npy"
    info = G.write_distance_matrix(
        rbf.embed, z, out, k=12, block_size=32, dtype="float64", progress=False
    )
    assert info["n_blocks"] == 5 and info["computed"] == 5 and info["skipped"] == 0
    M = G.open_distance_matrix(out)
    assert isinstance(M, np.memmap) and M.shape == (130, 130) and M.dtype == np.float64
    rows = G.geodesic_distances(rbf.embed, z, k=12).numpy()
    assert np.array_equal(np.asarray(M), rows)  # the same Dijkstra rows, bit for bit
    full = G.geodesic_distance_matrix(rbf.embed, z, k=12, progress=False).numpy()
    np.testing.assert_allclose(M, full, rtol=1e-13, atol=0)
    assert np.array_equal(np.load(out), np.asarray(M))  # a plain .npy file
    # float32 on disk: the float64 numbers rounded
    out32 = tmp_path / "d32.npy"
    G.write_distance_matrix(rbf.embed, z, out32, k=12, block_size=32, progress=False)
    assert np.array_equal(np.load(out32), rows.astype(np.float32))
    assert os.path.getsize(out32) < 130 * 130 * 4 + 200


def test_resume_after_interruption_skips_finished_blocks(rbf, tmp_path) -> None:
    z = codes_near_centers(rbf, 100, seed=2)
    ref = tmp_path / "ref.npy"
    G.write_distance_matrix(rbf.embed, z, ref, k=10, block_size=16, progress=False)
    out = tmp_path / "d.npy"
    seen: list[int] = []

    def stop_after_three(block: int) -> None:
        seen.append(block)
        if len(seen) == 3:
            raise _StopRunError

    with pytest.raises(_StopRunError):
        G.write_distance_matrix(
            rbf.embed, z, out, k=10, block_size=16, progress=False, on_block=stop_after_three
        )
    status = G.distance_matrix_status(out)
    assert status["done"].tolist() == [True] * 3 + [False] * 4 and not status["complete"]
    with pytest.raises(G.IncompleteDistanceMatrixError, match="4 of 7 row blocks missing"):
        G.open_distance_matrix(out)
    again: list[int] = []
    info = G.write_distance_matrix(
        rbf.embed, z, out, k=10, block_size=16, progress=False, on_block=again.append
    )
    assert again == [3, 4, 5, 6] and info["skipped"] == 3 and info["computed"] == 4
    assert _bytes(out) == _bytes(ref)  # the identical file
    info = G.write_distance_matrix(rbf.embed, z, out, k=10, block_size=16, progress=False)
    assert info["computed"] == 0 and info["skipped"] == 7  # a finished run is not redone
    assert info["graph_edges"] is None  # ... and its graph is not rebuilt


def test_foreign_or_mismatching_output_is_refused(rbf, tmp_path) -> None:
    z = codes_near_centers(rbf, 60)
    foreign = tmp_path / "foreign.npy"
    np.save(foreign, np.ones((60, 60), dtype=np.float32))
    calls = []

    def counting_embed(x: torch.Tensor) -> torch.Tensor:
        calls.append(x.shape[0])
        return rbf.embed(x)

    with pytest.raises(G.DistanceMatrixFileError, match="is not a resumable distance-matrix run"):
        G.write_distance_matrix(counting_embed, z, foreign, k=8, progress=False)
    assert not calls  # refused before any graph work
    assert np.array_equal(np.load(foreign), np.ones((60, 60)))  # untouched
    out = tmp_path / "d.npy"
    G.write_distance_matrix(rbf.embed, z, out, k=8, block_size=16, progress=False)
    before = _bytes(out)
    with pytest.raises(G.DistanceMatrixFileError, match=r"k: file 8 vs run 9"):
        G.write_distance_matrix(rbf.embed, z, out, k=9, block_size=16, progress=False)
    other = z.clone()
    other[0, 0] += 1e-9
    with pytest.raises(G.DistanceMatrixFileError, match="codes_sha256"):
        G.write_distance_matrix(rbf.embed, other, out, k=8, block_size=16, progress=False)
    other_model = ToyRBFDecoder(data_dim=24, num_centers=6, seed=4).double()
    with pytest.raises(G.DistanceMatrixFileError, match="embed_sha256"):
        G.write_distance_matrix(other_model.embed, z, out, k=8, block_size=16, progress=False)
    assert _bytes(out) == before
    G.write_distance_matrix(rbf.embed, z, out, k=9, block_size=16, overwrite=True, progress=False)
    assert G.distance_matrix_status(out)["meta"]["k"] == 9


def test_write_rejects_bad_codes_and_settings_before_creating_files(rbf, tmp_path) -> None:
    z = codes_near_centers(rbf, 30)
    out = tmp_path / "d.npy"
    bad = z.clone()
    bad[7] = float("nan")
    with pytest.raises(ValueError, match=r"z contains non-finite values \(in 1 of 30 rows\)"):
        G.write_distance_matrix(rbf.embed, bad, out)
    with pytest.raises(ValueError, match="dtype must be one of"):
        G.write_distance_matrix(rbf.embed, z, out, dtype="float16")
    with pytest.raises(ValueError, match="block_size must be an integer >= 1"):
        G.write_distance_matrix(rbf.embed, z, out, block_size=0)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ torch.distributed (gloo)


def _worker(rank: int, world: int, init: str, out: str, die_after: int | None) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=init, rank=rank, world_size=world, timeout=timedelta(seconds=60)
    )
    dec = _decoder()
    z = codes_near_centers(dec, 120, seed=5)
    count = [0]

    def maybe_die(block: int) -> None:
        count[0] += 1
        if die_after is not None and rank == 1 and count[0] == die_after:
            os._exit(17)  # a rank that dies mid-run, without any clean-up

    try:
        G.write_distance_matrix(
            dec.embed, z, out, k=10, block_size=10, progress=False, on_block=maybe_die
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_process_gloo_run_equals_single_process_and_survives_a_dead_rank(tmp_path) -> None:
    dec = _decoder()
    z = codes_near_centers(dec, 120, seed=5)
    single = tmp_path / "single.npy"
    G.write_distance_matrix(dec.embed, z, single, k=10, block_size=10, progress=False)

    sharded = str(tmp_path / "sharded.npy")
    mp.spawn(_worker, args=(2, f"file://{tmp_path}/rdv1", sharded, None), nprocs=2, join=True)
    assert _bytes(sharded) == _bytes(single)

    crashed = str(tmp_path / "crashed.npy")
    with pytest.raises(mp.ProcessExitedException):
        mp.spawn(_worker, args=(2, f"file://{tmp_path}/rdv2", crashed, 2), nprocs=2, join=True)
    done = G.distance_matrix_status(crashed)["done"]
    assert 2 <= done.sum() < done.size  # rank 1's two blocks (and whatever rank 0 did) survive
    with pytest.raises(G.IncompleteDistanceMatrixError):
        G.open_distance_matrix(crashed)
    mp.spawn(_worker, args=(2, f"file://{tmp_path}/rdv3", crashed, None), nprocs=2, join=True)
    assert _bytes(crashed) == _bytes(single)
