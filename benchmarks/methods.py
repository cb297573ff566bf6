"""The geodesic benchmark's methods, each timed on a batch of pairs: our solver, stochman 0.3.0,
an independent long Adam run and the graph-initialized reference."""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor

import geometry as G
from benchmarks.measure import chord_sum

__all__ = [
    "STOCHMAN_HINT",
    "run_graph_reference",
    "run_ours",
    "run_reference_adam",
    "run_stochman",
]

STOCHMAN_HINT = (
    "stochman is not installed: the stochman baseline is skipped. Install the optional "
    "benchmark dependency with `pip install stochman==0.3.0` (it needs networkx)."
)


def run_ours(embed: Any, z0: Tensor, z1: Tensor, **opts: Any) -> dict[str, Any]:
    """Our solver, timed; curves, reported lengths and flags.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        z0: ``(B, d)`` start points.
        z1: ``(B, d)`` end points.
        **opts: keyword arguments of :func:`geometry.connecting_geodesics`.

    Returns:
        ``wall_s``, ``cpu_s``, ``curves`` ``(B, N, d)``, ``reported`` ``(B,)`` float64 lengths,
        ``converged`` and ``reverted`` ``(B,)`` flags, ``iterations_mean`` and
        ``iterations_max``.
    """
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
    """stochman 0.3.0's ``connecting_geodesic`` with its defaults, timed (None if missing).

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        z0: ``(B, d)`` start points.
        z1: ``(B, d)`` end points.
        spline_points: points at which its cubic spline is evaluated for the curves.

    Returns:
        ``wall_s``, ``cpu_s``, ``curves`` ``(B, spline_points, d)``, ``reported`` ``(B,)`` (the
        chord sum on its own 20-point energy grid) and ``converged`` ``(B,)`` (one flag for the
        batch); ``None`` when stochman is not installed.
    """
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

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        z0: ``(B, d)`` start points.
        z1: ``(B, d)`` end points.
        num_nodes: nodes per curve, ends included.
        iterations: Adam steps.
        lr: step size in units of ``||z1 - z0||``.

    Returns:
        ``wall_s``, ``cpu_s``, ``curves`` ``(B, num_nodes, d)`` and ``reported`` ``(B,)`` (the
        chord sum on the nodes).
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


def run_graph_reference(
    embed: Any, z0: Tensor, z1: Tensor, points: Tensor, seed: int
) -> dict[str, Any]:
    """Graph-initialized refinement on the data-like ``points`` (64 nodes).

    Tightly clustered points can leave the kNN graph disconnected; then the graph is rebuilt
    with half as many auxiliary way points (uniform in the points' bounding box) added. If it
    is still disconnected the reference is reported as failed.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        z0: ``(B, d)`` start points.
        z1: ``(B, d)`` end points.
        points: ``(P, d)`` graph points.
        seed: seeds the auxiliary points (with ``seed + 7``).

    Returns:
        :func:`run_ours`'s run plus ``computed`` (time stamp), ``graph_points`` and
        ``auxiliary_points``; or ``{"failed": message}``.
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
