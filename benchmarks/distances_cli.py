"""Benchmark streamed all-pairs geodesic distance matrices (scripts/distance_matrix.py).

Every measurement is a fresh run of the real command line (one process, or ``torchrun`` with
several gloo ranks) on codes of a trained TwoStageVAE: the first ``n`` encoder means of its
training data, and beyond those, real codes jittered by a seeded Gaussian (a quarter of the
median nearest-neighbour distance of the real codes). Printed per run: wall time of the whole
command (start-up included) and of the graph / block phases, peak RSS of the largest process,
bytes on disk, machine load; then the growth exponent of the wall time between sizes run with
the same number of processes (of the compute time: graph + blocks; the wall time includes the
start-up of Python, torch and the checkpoint), and the speed-up of ``--procs`` processes over one at
``--speedup-n`` (both measured in this run). A baseline, the in-memory
``geometry.geodesic_distance_matrix`` at ``--speedup-n``, runs in this run too.

    python scripts/train.py --run.root /tmp/runs       # about a minute: a model to measure
    python scripts/benchmark_distances.py \
        --checkpoint /tmp/runs/default/checkpoints/stage2/last.ckpt
    python scripts/benchmark_distances.py --checkpoint ... --sizes 1000 5000 --accelerator gpu
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from benchmarks.distances import run_benchmark

__all__ = ["main", "parse_args"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The options.

    Args:
        argv: the arguments (``None``: ``sys.argv[1:]``).
    """
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--checkpoint",
        default=os.path.join("runs", "default", "checkpoints", "stage2", "last.ckpt"),
        help="TwoStageVAE checkpoint (default: the main job's stage-2 checkpoint)",
    )
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 10000, 20000])
    p.add_argument("--procs", type=int, default=2, help="processes of the sharded runs")
    p.add_argument(
        "--sharded-from",
        type=int,
        default=10000,
        help="sizes from this one up run with --procs processes (smaller: one process)",
    )
    p.add_argument("--speedup-n", type=int, default=5000, help="size of the speed-up pair")
    p.add_argument("--k", type=int, default=40)
    p.add_argument("--block-size", type=int, default=256)
    p.add_argument("--accelerator", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--no-baseline", action="store_true", help="skip the in-memory baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scratch", default=None, help="folder for the matrices (default: a temp dir)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark.

    Args:
        argv: the arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 2 when the checkpoint is missing.
    """
    args = parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        print(
            f"error: checkpoint {args.checkpoint!r} not found; train one first "
            "(python scripts/train.py --run.root /tmp/runs) and pass --checkpoint",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(1)
    run_benchmark(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
