"""Initial curves of the connecting-geodesic solver (:func:`geometry.connecting_geodesics`).

A local optimizer reaches the local minimum of the curve length whose basin holds its start, so
the starts decide which minimum the solver can find: the straight latent line, lines bowed
sideways, curves the caller passes, and shortest paths on kNN graphs over latent points (data
codes, or at ``d = 2`` the batch's end points plus seeded uniform points: a global start for
routes around variance walls). Graph paths are only starts: their edges are measured to
``START_RTOL``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geometry._checks import Embed, check_curves, check_points
from geometry.curves import straight_lines
from geometry.graph import auxiliary_points, knn_graph, shortest_path_curves

__all__ = [
    "AUX_K",
    "AUX_POINTS",
    "AUX_SEED",
    "START_RTOL",
    "auxiliary_graph_points",
    "bend_amplitudes",
    "bent_lines",
    "checked_init_curves",
    "graph_start",
    "start_curves",
]

AUX_POINTS = 256  # default auxiliary points of the global graph start for d = 2
AUX_K = 12  # neighbours per node of the auxiliary graph
AUX_SEED = 0  # the auxiliary points are seeded: results are reproducible
START_RTOL = 1e-2  # tolerance of start graphs' edges and of the later-start filter (only starts)


def start_curves(
    embed: Embed,
    z0: Tensor,
    z1: Tensor,
    init: str,
    init_curves: Tensor | None,
    graph_points: Tensor | None,
    graph_k: int,
    bent_starts: int,
) -> list[Tensor]:
    """Initial polylines ``(B, M, d)``, one tensor per start."""
    if init == "curves":
        assert init_curves is not None
        return [checked_init_curves(init_curves.detach(), z0, z1)]
    starts = [] if init == "graph" else [straight_lines(z0, z1, 2)]
    if init == "line":
        starts += [bent_lines(z0, z1, amp) for amp in bend_amplitudes(bent_starts)]
    if graph_points is not None and z0.shape[0] > 0:
        # an extra start beside the line: a pair without a graph path keeps the straight segment
        # (it is optimized from the line anyway); the only start: no path is an error
        on_disconnected = "raise" if init == "graph" else "inf"
        starts.append(graph_start(embed, z0, z1, graph_points.detach(), graph_k, on_disconnected))
    return starts


def bend_amplitudes(n: int) -> list[float]:
    """``n`` bend amplitudes (fractions of ``||z1 - z0||``): +-0.2, +-0.4, ..."""
    return [(-1) ** k * 0.2 * (1 + k // 2) for k in range(n)]


def bent_lines(z0: Tensor, z1: Tensor, amplitude: float, n: int = 17) -> Tensor:
    """Lines bowed sideways by a half sine of height ``amplitude * ||z1 - z0||``, ``(B, n, d)``.

    The side direction is the coordinate axis least aligned with ``z1 - z0``, orthogonalised
    (for ``d = 1`` the line itself is returned).
    """
    B, d = z0.shape
    line = straight_lines(z0, z1, n)
    if d == 1:
        return line
    dz = z1 - z0  # (B, d)
    axis = torch.zeros_like(dz)
    axis[torch.arange(B), dz.abs().argmin(dim=1)] = 1.0
    unit = dz / dz.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dz.dtype).tiny)
    side = axis - (axis * unit).sum(dim=1, keepdim=True) * unit
    side = side / side.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dz.dtype).tiny)
    t = torch.linspace(0, 1, n, dtype=z0.dtype, device=z0.device)[None, :, None]
    bow = torch.sin(torch.pi * t) * (amplitude * dz.norm(dim=1))[:, None, None]  # (B, n, 1)
    out = line + bow * side[:, None]
    out[:, 0], out[:, -1] = z0, z1
    return out


def auxiliary_graph_points(z0: Tensor, z1: Tensor, num_points: int) -> Tensor:
    """``num_points`` seeded uniform points ``(P, d)`` in the bounding box of all end points,
    enlarged by 10 % per side (the nodes of the global graph start, with the end points)."""
    gen = torch.Generator().manual_seed(AUX_SEED)
    return auxiliary_points(torch.cat([z0, z1]), num_points, margin=0.1, generator=gen)


def checked_init_curves(init_curves: Tensor, z0: Tensor, z1: Tensor) -> Tensor:
    """``init_curves (B, M, d)`` in ``z0``'s dtype and device with their end points set to
    ``z0``, ``z1``; a clear error where shapes or end points do not match."""
    check_curves(init_curves, "init_curves")
    B, d = z0.shape
    if init_curves.shape[0] != B or init_curves.shape[2] != d:
        raise ValueError(
            f"init_curves must have shape ({B}, M, {d}) to match z0, got {tuple(init_curves.shape)}"
        )
    init_curves = init_curves.to(dtype=z0.dtype, device=z0.device)
    scale = 1e-4 * (1 + (z1 - z0).norm(dim=1))  # (B,)
    err = torch.maximum((init_curves[:, 0] - z0).norm(dim=1), (init_curves[:, -1] - z1).norm(dim=1))
    if bool((err > scale).any()):
        worst = int(err.argmax())
        raise ValueError(
            f"init_curves end points do not match z0/z1 (worst: curve {worst}, "
            f"distance {float(err[worst]):.3g})"
        )
    out = init_curves.clone()
    out[:, 0], out[:, -1] = z0, z1
    return out


def graph_start(
    embed: Embed, z0: Tensor, z1: Tensor, graph_points: Tensor, k: int, on_disconnected: str
) -> Tensor:
    """Shortest paths ``(B, M, d)`` from ``z0`` to ``z1`` on a kNN graph (``k`` neighbours,
    edges to ``START_RTOL``) over ``graph_points (P, d)`` and all end points;
    ``on_disconnected`` as in :func:`geometry.graph.shortest_path_curves`."""
    check_points(graph_points, "graph_points", dim=z0.shape[1])
    B = z0.shape[0]
    nodes = torch.cat([graph_points.to(z0), z0, z1])  # (P + 2B, d)
    P = graph_points.shape[0]
    graph = knn_graph(embed, nodes, k=min(k, nodes.shape[0] - 1), rtol=START_RTOL)
    src = torch.arange(P, P + B)
    tgt = torch.arange(P + B, P + 2 * B)
    curves, _ = shortest_path_curves(graph, src, tgt, on_disconnected=on_disconnected)
    return curves
