"""The geodesic benchmark's graph distance matrix: timed in a child process with its own peak
memory, its errors measured against refined geodesics."""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import torch

import geometry as G
from benchmarks.common import REPO_ROOT, log
from benchmarks.decoders import Decoder, load_model
from benchmarks.measure import fine_lengths

__all__ = ["CHILD_MODULE", "bench_matrix", "matrix_child"]

#: the module the child process runs (``python -m``; its ``--_matrix-child`` option)
CHILD_MODULE = "benchmarks.geodesics_cli"


def _proc_status_mb(key: str) -> float | None:
    """The ``key`` line of ``/proc/self/status`` in MiB (``None`` where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def matrix_child(args: argparse.Namespace) -> None:
    """Subprocess: the graph distance matrix, timed, with its own peak memory.

    Reads the codes ``(m, d)`` from ``args.codes_file``, saves the matrix ``(m, m)`` to
    ``args.out_file`` and prints one JSON line: ``wall_s``, ``cpu_s``, ``rss_baseline_mb``,
    ``rss_peak_mb``, ``rss_method``.

    Args:
        args: the benchmark's options (``checkpoint``, ``codes_file``, ``out_file``,
            ``threads``).
    """
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)
    z = torch.load(args.codes_file)
    exact = _reset_peak_rss()
    baseline = _proc_status_mb("VmRSS")
    t0, c0 = time.perf_counter(), time.process_time()
    D = G.geodesic_distance_matrix(model.embed, z, method="graph", progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if exact:
        peak, how = _proc_status_mb("VmHWM"), "VmHWM of /proc/self/status, reset before the matrix"
    else:  # ru_maxrss may include the parent's peak (inherited across fork + exec)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        how = "getrusage ru_maxrss (process lifetime, may include the parent's peak)"
    torch.save(D, args.out_file)
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "rss_baseline_mb": baseline,
                      "rss_peak_mb": peak, "rss_method": how}))  # fmt: skip


def bench_matrix(dec: Decoder, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    """Graph distance matrix on ``--points`` codes of a VAE; errors against refined geodesics.

    The matrix is computed by ``python -m benchmarks.geodesics_cli --_matrix-child`` (its time
    and peak memory alone); ``--ref-pairs`` of its entries are then compared with the shortest
    of a refined geodesic, a straight-line-started geodesic and the graph path, all measured
    finely.

    Args:
        dec: a VAE decoder (it has a checkpoint).
        args: the benchmark's options.
        tmp: scratch folder for the child's files.

    Returns:
        The child's figures plus ``decoder``, ``points``, ``ref_pairs``, ``ref_wall_s``,
        ``median_rel_error``, ``q90_rel_error``, ``max_rel_error``,
        ``median_signed_rel_error``, ``graph_edges`` and ``finite``.
    """
    assert dec.checkpoint is not None
    embed, codes = dec.embed, dec.points
    gm = torch.Generator().manual_seed(args.seed + 1)
    pts = codes[torch.randperm(codes.shape[0], generator=gm)[: args.points]].contiguous()
    codes_file, out_file = os.path.join(tmp, "codes.pt"), os.path.join(tmp, "D.pt")
    torch.save(pts, codes_file)
    log(f"graph distance matrix on {pts.shape[0]} codes of {dec.name} (subprocess)")
    child = subprocess.run(
        [sys.executable, "-m", CHILD_MODULE, "--_matrix-child", "--checkpoint",
         dec.checkpoint, "--_codes-file", codes_file, "--_out-file", out_file,
         "--threads", str(args.threads)],
        check=True, capture_output=True, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    matrix = json.loads(child.stdout.strip().splitlines()[-1])
    D = torch.load(out_file)
    m = pts.shape[0]
    src = torch.randint(0, m, (args.ref_pairs,), generator=gm)
    tgt = (src + torch.randint(1, m, (args.ref_pairs,), generator=gm)) % m
    t0 = time.perf_counter()
    graph = G.build_graph(embed, pts)  # the same defaults as the matrix
    _, _, res = G.refined_pair_distances(embed, graph, src, tgt)
    line_res = G.connecting_geodesics(embed, pts[src], pts[tgt])
    graph_curves, _ = G.shortest_path_curves(graph, src, tgt)
    assert res is not None
    ref = torch.minimum(fine_lengths(embed, res.curves, args)[0],
                        fine_lengths(embed, line_res.curves, args)[0])  # fmt: skip
    ref = torch.minimum(ref, fine_lengths(embed, graph_curves, args)[0])
    ref_wall = time.perf_counter() - t0
    signed = (D[src, tgt].double() - ref) / ref
    rel = signed.abs()
    matrix.update(
        decoder=dec.name, points=m, ref_pairs=args.ref_pairs, ref_wall_s=ref_wall,
        median_rel_error=float(rel.median()), q90_rel_error=float(rel.quantile(0.9)),
        max_rel_error=float(rel.max()), median_signed_rel_error=float(signed.median()),
        graph_edges=graph.n_edges, finite=bool(torch.isfinite(D).all()),
    )  # fmt: skip
    print(
        f"\nGraph distance matrix ({dec.name}, {m} points, {graph.n_edges} edges): wall "
        f"{matrix['wall_s']:.2f} s, cpu {matrix['cpu_s']:.2f} s, peak RSS "
        f"{matrix['rss_peak_mb']:.0f} MB (before the matrix: {matrix['rss_baseline_mb']:.0f} MB;"
        f" {matrix['rss_method']})\n  vs the shortest of refined geodesics / graph paths on "
        f"{args.ref_pairs} pairs, all measured finely: median |rel. error| "
        f"{matrix['median_rel_error']:.4f}, q90 {matrix['q90_rel_error']:.4f}, max "
        f"{matrix['max_rel_error']:.4f} (median signed {matrix['median_signed_rel_error']:+.4f})",
        flush=True,
    )
    return matrix
