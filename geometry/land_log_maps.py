"""Log maps of many points to a few means, as the LAND mixture needs them (pure torch).

One batch of ``n K`` boundary-value geodesics (:func:`geometry.log_map`), started from
shortest paths on a kNN graph over the graph points (training codes), the means and the points;
a pair the graph does not connect starts from its straight line (a start only; the solver
refines it). The velocity's norm ``||v||_{M(mu)}`` is the measured geodesic distance and its
direction is that of the discrete geodesic's first nodes, accurate to ``O(1/N)`` in the number
of nodes (:func:`geometry.initial_velocities`).

Optionally (``newton_steps > 0``) each velocity is refined by Newton shooting on
``Exp_mu(v) = z`` (:func:`refine_log_maps`, adaptive shots). On decoders
whose geodesics spread apart (the trained VAEs: a 1 % error of ``v`` moves ``Exp_mu(v)`` by
about 10 % of ``||z - mu||``), shooting is ill-conditioned and each step costs ``2 d + 1`` shots
per pair; on smooth metrics it reaches the closed forms to the shooting tolerance.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from geometry._checks import Embed
from geometry.geodesics import NUM_NODES
from geometry.graph import knn_graph, shortest_path_curves
from geometry.land_normaliser import exp_and_jacobian, exp_map_or_nan
from geometry.maps import log_map

__all__ = ["graph_starts", "mixture_log_maps", "refine_log_maps"]


def graph_starts(
    embed: Embed, z: Tensor, means: Tensor, graph_points: Tensor | None, k: int
) -> Tensor:
    """``(n K, M, d)`` graph-path initial curves from every mean to every point.

    Pair ``i * K + k`` runs from ``means[k]`` to ``z[i]`` (the order of :func:`mixture_log_maps`).
    """
    gp = z[:0] if graph_points is None else graph_points.to(z)
    nodes = torch.cat([gp, means, z])  # (P + K + n, d)
    P, K, n = gp.shape[0], means.shape[0], z.shape[0]
    distinct = torch.unique(nodes, dim=0).shape[0]
    graph = knn_graph(embed, nodes, k=max(1, min(k, distinct - 1)))
    src = torch.arange(P, P + K).repeat(n)  # (n K,)
    tgt = torch.arange(P + K, P + K + n).repeat_interleave(K)
    curves, _ = shortest_path_curves(graph, src, tgt, on_disconnected="inf")
    return curves


def mixture_log_maps(
    embed: Embed,
    z: Tensor,
    means: Tensor,
    *,
    graph_points: Tensor | None,
    graph_k: int,
    geodesic_options: dict[str, Any],
    exp_steps: int,
    newton_steps: int,
    shooting_rtol: float,
    exp_rtol: float | None = None,
) -> tuple[Tensor, Tensor]:
    """``Log_{mu_k}(z_i)`` for all points and means.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        z: ``(n, d)`` points.
        means: ``(K, d)`` base points.
        graph_points: ``(P, d)`` extra graph nodes (training codes), or None.
        graph_k: neighbours per graph node; 0 for straight-line starts.
        geodesic_options: keyword arguments of :func:`geometry.connecting_geodesics`
            (``max_num_nodes`` defaults to ``num_nodes`` here: no node refinement).
        exp_steps: RK4 steps of the shooting (the first adaptive step with ``exp_rtol``).
        newton_steps: Newton shooting steps (0: the boundary-value velocities, no shots).
        shooting_rtol: shooting tolerance relative to ``||z - mu||``.
        exp_rtol: None (fixed-step RK4) or the adaptive tolerance of the shots.

    Returns:
        ``(n, K, d)`` velocities and ``(n, K)`` bool ``converged``: the solver's geodesic is
        converged (stationary, faithful, measured) and, with ``newton_steps > 0``,
        ``Exp_mu(v)`` hits ``z`` within ``shooting_rtol * ||z - mu||``.
    """
    n, K = z.shape[0], means.shape[0]
    z0 = means.repeat(n, 1)  # (n K, d): row i*K + k is mean k
    z1 = z.repeat_interleave(K, dim=0)  # (n K, d)
    opts = dict(geodesic_options)
    # no node refinement unless asked for: the log maps' cost and measured accuracy are those
    # of their own node count (the README's LAND figures)
    opts.setdefault("max_num_nodes", opts.get("num_nodes", NUM_NODES))
    if graph_k > 0:
        opts["init_curves"] = graph_starts(embed, z, means, graph_points, graph_k)
    v, res = log_map(embed, z0, z1, **opts)
    converged = res.converged
    if newton_steps > 0:
        v, _, accurate = refine_log_maps(
            embed,
            z0,
            z1,
            v,
            num_steps=exp_steps,
            newton_steps=newton_steps,
            rtol=shooting_rtol,
            exp_rtol=exp_rtol,
        )
        converged = converged & accurate
    return v.reshape(n, K, -1), converged.reshape(n, K)


def refine_log_maps(
    embed: Embed, mu: Tensor, z: Tensor, v: Tensor, *, num_steps: int, newton_steps: int,
    rtol: float, exp_rtol: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    """Newton shooting on ``Exp_mu(v) = z`` from the boundary-value velocities ``v``.

    Each step solves ``D Exp_mu(v) dv = z - Exp_mu(v)`` (finite-difference Jacobian). A row
    keeps its refined velocity only where that lowers the shooting residual.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        mu: ``(B, d)`` base points.
        z: ``(B, d)`` targets.
        v: ``(B, d)`` initial velocities (e.g. from :func:`geometry.log_map`).
        num_steps: RK4 steps of :func:`geometry.exp_map` (or the first adaptive step).
        exp_rtol: None (fixed-step RK4) or the adaptive shooting tolerance.
        newton_steps: Newton steps (``0``: only measure the residual).
        rtol: a row is ``accurate`` when ``||Exp_mu(v) - z|| <= rtol * (||z - mu|| + rtol)``.

    Returns:
        ``(B, d)`` velocities, ``(B,)`` residuals ``||Exp_mu(v) - z||`` and ``(B,)`` bool
        ``accurate``.
    """
    best = v.clone()
    best_res = torch.full(v.shape[:1], math.inf, dtype=v.dtype, device=v.device)
    cur = v
    for step in range(newton_steps + 1):
        if step < newton_steps:
            x, jac = exp_and_jacobian(embed, mu, cur, num_steps, exp_rtol)
        else:
            x = exp_map_or_nan(embed, mu.contiguous(), cur, num_steps, exp_rtol)
        res = (x - z).norm(dim=1)  # (B,)
        better = torch.isfinite(res) & (res < best_res)
        best[better], best_res[better] = cur[better], res[better]
        if step < newton_steps:
            ok = torch.isfinite(jac).all(dim=2).all(dim=1) & torch.isfinite(x).all(dim=1)
            eye = torch.eye(v.shape[1], dtype=v.dtype, device=v.device)
            rhs = torch.where(ok[:, None], z - x, 0.0)[..., None]  # (B, d, 1)
            dv, info = torch.linalg.solve_ex(torch.where(ok[:, None, None], jac, eye), rhs)
            good = ok & (info == 0) & torch.isfinite(dv[..., 0]).all(dim=1)
            cur = torch.where(good[:, None], cur + dv[..., 0], cur)
    accurate = best_res <= rtol * ((z - mu).norm(dim=1) + rtol)
    return best, best_res, accurate
