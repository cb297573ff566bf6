"""The streamed distance-matrix benchmark: fresh runs of ``scripts/distance_matrix.py`` (one
process, or ``torchrun`` with several gloo ranks) on real and jittered codes of a trained model,
timed with the peak memory of the largest process; growth exponents, the speed-up of the sharded
runs, and the in-memory baseline."""

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

from benchmarks.common import REPO_ROOT

__all__ = ["CLI", "run_benchmark"]

#: the command line measured (run by path, as a user runs it)
CLI = os.path.join(REPO_ROOT, "scripts", "distance_matrix.py")


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
    """Bytes on disk (allocated blocks) of a matrix file and its sidecars."""
    total = 0
    for p in (path, path + ".meta.json", path + ".blocks"):
        if os.path.exists(p):
            total += os.stat(p).st_blocks * 512
    return total


def _run(args: argparse.Namespace, codes: str, out: str, procs: int) -> dict[str, Any]:
    """One fresh run of the command line, wrapped to read its largest process's peak RSS.

    Args:
        args: the benchmark's options (checkpoint, ``k``, block size, accelerator).
        codes: the ``.npy`` file of the codes.
        out: the output matrix file.
        procs: processes (1: plain ``python``; more: ``torch.distributed.run``).

    Returns:
        ``wall_s`` (the whole command), ``graph_s`` and ``blocks_s`` (its JSON line),
        ``peak_rss_mib``, ``disk_mib`` and ``load`` (load average before and after).

    Raises:
        RuntimeError: the command failed (with the end of its stderr).
    """
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
    """The children's environment: one OpenMP thread, the checkout first on ``PYTHONPATH``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([REPO_ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _plan(sizes: list[int], procs: int, sharded_from: int, speedup_n: int) -> list[tuple[int, int]]:
    """The runs, sorted ``(n, processes)``: ``procs`` processes from ``sharded_from`` up, else
    one; ``speedup_n`` (when among the sizes) with both."""
    plan = [(n, procs if n >= sharded_from else 1) for n in sizes]
    if speedup_n in sizes:
        for p in (1, procs):
            if (speedup_n, p) not in plan:
                plan.append((speedup_n, p))
    plan.sort()
    return plan


def run_benchmark(args: argparse.Namespace) -> None:
    """Run every size of the plan and print the table, growth exponents, speed-up and baseline.

    Sizes from ``--sharded-from`` up run with ``--procs`` processes, smaller ones with one;
    ``--speedup-n`` runs with both. The matrices go to a temporary folder (in ``--scratch``).

    Args:
        args: the checked options (:func:`benchmarks.distances_cli.parse_args`).
    """
    sizes = sorted(set(args.sizes))
    plan = _plan(sizes, args.procs, args.sharded_from, args.speedup_n)
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
