#!/usr/bin/env python
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
import json
import math
import os
import subprocess
import sys
import tempfile
from typing import Any

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
CLI = os.path.join(HERE, "distance_matrix.py")

#: run in a child process: the peak RSS of the command's largest process (torchrun's workers are
#: reaped by torchrun, so they count as descendants)
_RSS_WRAPPER = (
    "import json, resource, subprocess, sys, time\n"
    "t = time.perf_counter(); rc = subprocess.call(sys.argv[1:])\n"
    "print(json.dumps({'rc': rc, 'wall': time.perf_counter() - t,\n"
    "  'maxrss_kb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}), file=sys.stderr)\n"
)

_BASELINE = (
    "import json, sys, time, numpy as np, torch\n"
    "torch.set_num_threads(1)\n"
    "import geometry\n"
    "from lightning_modules import TwoStageVAE\n"
    "m = TwoStageVAE.load_from_checkpoint(sys.argv[1], map_location='cpu').eval()\n"
    "z = torch.from_numpy(np.load(sys.argv[2]))\n"
    "t = time.perf_counter()\n"
    "with torch.no_grad():\n"
    "    D = geometry.geodesic_distance_matrix(m.embed, z, k=int(sys.argv[3]), progress=False)\n"
    "print(json.dumps({'seconds': time.perf_counter() - t}))\n"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
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


def _codes(checkpoint: str, n_max: int, seed: int) -> np.ndarray:
    """``(n_max, d)`` float32 codes: real encoder means first, then seeded jittered copies."""
    from scipy.spatial import cKDTree

    from lightning_modules import TwoStageVAE
    from pipeline.codes import load_codes  # the CLI's own "train" codes

    model = TwoStageVAE.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    with torch.no_grad():
        real = load_codes("train", model, checkpoint).numpy().astype(np.float32)
    if n_max <= real.shape[0]:
        return real[:n_max]
    nn_dist = cKDTree(real).query(real, k=2)[0][:, 1]
    scale = 0.25 * float(np.median(nn_dist))
    rng = np.random.default_rng(seed)
    extra = n_max - real.shape[0]
    base = real[rng.integers(0, real.shape[0], extra)]
    jitter = scale * rng.standard_normal(base.shape).astype(np.float32)
    return np.concatenate([real, base + jitter])


def _disk_bytes(path: str) -> int:
    total = 0
    for p in (path, path + ".meta.json", path + ".blocks"):
        if os.path.exists(p):
            total += os.stat(p).st_blocks * 512
    return total


def _run(args: argparse.Namespace, codes: str, out: str, procs: int) -> dict[str, Any]:
    cli = [CLI, "--checkpoint", args.checkpoint, "--codes", codes, "--out", out, "--k",
           str(args.k), "--block-size", str(args.block_size), "--accelerator", args.accelerator,
           "--no-progress", "--threads", "1"]  # fmt: skip
    if procs == 1:
        cmd = [sys.executable, *cli]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", str(procs), *cli]  # fmt: skip
    load_before = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, "-c", _RSS_WRAPPER, *cmd], capture_output=True, text=True, env=_env()
    )
    wrapper = json.loads(proc.stderr.strip().splitlines()[-1])
    if wrapper["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "wall_s": wrapper["wall"],
        "graph_s": info["graph_seconds"],
        "blocks_s": info["blocks_seconds"],
        "peak_rss_mib": wrapper["maxrss_kb"] / 1024,
        "disk_mib": _disk_bytes(out) / 2**20,
        "load": (load_before, os.getloadavg()[0]),
    }


def _env() -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    repo = os.path.dirname(HERE)
    env["PYTHONPATH"] = os.pathsep.join([repo, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not os.path.isfile(args.checkpoint):
        print(
            f"error: checkpoint {args.checkpoint!r} not found; train one first "
            "(python scripts/train.py --run.root /tmp/runs) and pass --checkpoint",
            file=sys.stderr,
        )
        return 2
    torch.set_num_threads(1)
    sizes = sorted(set(args.sizes))
    plan = [(n, args.procs if n >= args.sharded_from else 1) for n in sizes]
    if args.speedup_n in sizes:
        for procs in (1, args.procs):
            if (args.speedup_n, procs) not in plan:
                plan.append((args.speedup_n, procs))
    plan.sort()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()} at start")
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        all_codes = _codes(args.checkpoint, max(sizes), args.seed)
        print(f"codes: {all_codes.shape[0]} x {all_codes.shape[1]} (first real, then jittered)")
        rows: dict[tuple[int, int], dict[str, Any]] = {}
        header = "      n  procs   wall s  graph s  blocks s  peak RSS MiB   disk MiB   load"
        print(header)
        for n, procs in plan:
            codes = os.path.join(scratch, f"codes_{n}.npy")
            np.save(codes, all_codes[:n])
            out = os.path.join(scratch, f"d_{n}_{procs}.npy")
            r = _run(args, codes, out, procs)
            rows[(n, procs)] = r
            print(
                f"{n:7d} {procs:6d} {r['wall_s']:8.1f} {r['graph_s']:8.1f} {r['blocks_s']:9.1f} "
                f"{r['peak_rss_mib']:13.0f} {r['disk_mib']:10.1f}   "
                f"{r['load'][0]:.1f}->{r['load'][1]:.1f}",
                flush=True,
            )
            os.remove(out)
        print("growth exponent of the wall time (same process count):")
        for procs in sorted({p for _, p in plan}):
            ns = [n for n, p in plan if p == procs]
            for a, b in zip(ns, ns[1:]):
                ra, rb = rows[(a, procs)], rows[(b, procs)]
                exps = {
                    key: math.log(rb[key] / ra[key]) / math.log(b / a)
                    for key in ("wall_s", "graph_s", "blocks_s")
                }
                ca, cb = ra["graph_s"] + ra["blocks_s"], rb["graph_s"] + rb["blocks_s"]
                ec = math.log(cb / ca) / math.log(b / a)
                print(
                    f"  {procs} proc: n {a} -> {b}: compute ~ n^{ec:.2f}"
                    f" (graph ~ n^{exps['graph_s']:.2f}, blocks ~ n^{exps['blocks_s']:.2f}), "
                    f"wall with start-up ~ n^{exps['wall_s']:.2f}"
                )
        s = args.speedup_n
        if (s, 1) in rows and (s, args.procs) in rows:
            one, many = rows[(s, 1)], rows[(s, args.procs)]
            print(
                f"speed-up at n = {s}: {args.procs} processes vs 1: wall "
                f"{one['wall_s'] / many['wall_s']:.2f}x, blocks phase "
                f"{one['blocks_s'] / many['blocks_s']:.2f}x, graph phase "
                f"{one['graph_s'] / many['graph_s']:.2f}x (edges sharded over the ranks)"
            )
        if not args.no_baseline and args.speedup_n in sizes:
            codes = os.path.join(scratch, f"codes_{s}.npy")
            proc = subprocess.run(
                [sys.executable, "-c", _RSS_WRAPPER, sys.executable, "-c", _BASELINE,
                 args.checkpoint, codes, str(args.k)],
                capture_output=True, text=True, env=_env(),
            )  # fmt: skip
            wrapper = json.loads(proc.stderr.strip().splitlines()[-1])
            base = json.loads(proc.stdout.strip().splitlines()[-1])
            one = rows[(s, 1)]
            print(
                f"baseline in-memory geodesic_distance_matrix at n = {s}: {base['seconds']:.1f} s "
                f"compute, peak RSS {wrapper['maxrss_kb'] / 1024:.0f} MiB; streamed 1 process: "
                f"{one['graph_s'] + one['blocks_s']:.1f} s compute "
                f"({base['seconds'] / (one['graph_s'] + one['blocks_s']):.2f}x)"
            )
    print(f"load average at the end: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
