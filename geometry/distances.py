"""All-pairs geodesic distance matrices.

``method="graph"``: shortest paths on a kNN graph whose edges are straight latent segments
weighted by their Riemannian length, measured to a relative tolerance ``rtol``
(:mod:`geometry.graph`). Optionally auxiliary nodes (random points in the bounding box of the
codes) are added to the graph; they only serve as way points. Graph distances are lengths of
actual latent curves (polylines), so they are upper bounds of the geodesic distance up to
``rtol``.

``method="refined"``: the graph path of every pair initializes :func:`connecting_geodesics`;
the reported distance is ``min(graph distance, refined length)``, both measured to the same
``rtol`` (:func:`geometry.curves.measure_curve_lengths`). Cost grows with the number of pairs
(``n (n - 1) / 2`` geodesics), so use it for small ``n`` or on samples
(:func:`refined_pair_distances`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from geometry._checks import Embed, check_points, check_positive_int
from geometry.curves import curve_length
from geometry.geodesics import GeodesicResult, connecting_geodesics
from geometry.graph import (
    LatentGraph,
    auxiliary_points,
    check_pairs_connected,
    graph_distances,
    knn_graph,
    node_indices,
    shortest_path_curves,
)

__all__ = ["geodesic_distance_matrix", "refined_pair_distances", "auxiliary_points", "build_graph"]


def build_graph(
    embed: Embed,
    z: Tensor,
    k: int = 40,
    rtol: float = 1e-3,
    aux_points: int | Tensor | None = None,
    seed: int = 0,
    progress: bool = False,
    distributed: bool = False,
    process_group: Any = None,
) -> LatentGraph:
    """kNN graph on ``z`` (nodes ``0..n-1``) plus optional auxiliary nodes (``n..``).

    Args:
        embed: ``(m, d) -> (m, D')`` callable.
        z: ``(n, d)`` codes.
        k: neighbours per node (capped at the number of distinct nodes minus one).
        rtol: relative tolerance of the edge lengths.
        aux_points: ``None``, a number of random points in the bounding box of ``z`` (seeded by
            ``seed``), or an ``(m, d)`` tensor of way points.
        seed: seed for the auxiliary points.
        progress: progress bar for the edge lengths.
        distributed, process_group: measure the edges sharded over an initialized
            ``torch.distributed`` group (see :func:`geometry.graph.knn_graph`).

    Returns:
        The :class:`~geometry.graph.LatentGraph`.
    """
    check_points(z)
    nodes = z.detach()
    if aux_points is not None:
        if isinstance(aux_points, Tensor):
            aux = check_points(aux_points, "aux_points", dim=z.shape[1]).to(z)
        else:
            check_positive_int(aux_points, "aux_points", minimum=0)
            aux = auxiliary_points(z, aux_points, generator=torch.Generator().manual_seed(seed))
        nodes = torch.cat([nodes, aux.detach()])
    k = min(k, torch.unique(nodes, dim=0).shape[0] - 1)
    return knn_graph(
        embed, nodes, k=k, rtol=rtol, progress=progress, distributed=distributed,
        process_group=process_group,
    )  # fmt: skip


def refined_pair_distances(
    embed: Embed,
    graph: LatentGraph,
    sources: Tensor | np.ndarray,
    targets: Tensor | np.ndarray,
    batch_size: int = 256,
    on_disconnected: str = "raise",
    progress: bool = False,
    keep_results: bool = True,
    **geodesic_options: Any,
) -> tuple[Tensor, Tensor, GeodesicResult | None]:
    """Graph-initialized geodesics between node pairs, ``batch_size`` pairs at a time.

    Graph paths are built per batch, so memory stays bounded for any number of pairs (all
    ``n (n - 1) / 2`` pairs of a distance matrix included).

    Args:
        embed: ``(m, d) -> (m, D')`` callable.
        graph: the graph (pairs index its nodes).
        sources: ``(P,)`` node indices.
        targets: ``(P,)`` node indices.
        batch_size: pairs per :func:`connecting_geodesics` call.
        on_disconnected: ``"raise"`` (checked for every pair before any geodesic is computed)
            or ``"inf"`` (unreachable pairs get ``inf`` and are not refined).
        progress: progress bar over batches.
        keep_results: return the concatenated :class:`GeodesicResult` (its curves take
            ``P * num_nodes * d`` numbers); ``False`` returns ``None`` in its place.
        **geodesic_options: forwarded to :func:`connecting_geodesics`.

    Returns:
        ``refined (P,)`` = min(graph length, refined length), both measured to ``graph.rtol``;
        ``graph_lengths (P,)``; and the concatenated :class:`GeodesicResult` of the refined
        pairs (``None`` if no pair was refined or ``keep_results`` is false).
    """
    check_positive_int(batch_size, "batch_size")
    if on_disconnected not in ("raise", "inf"):
        raise ValueError(f"on_disconnected must be 'raise' or 'inf', got {on_disconnected!r}")
    src = node_indices(sources, graph.num_nodes, "sources")
    tgt = node_indices(targets, graph.num_nodes, "targets")
    if src.shape != tgt.shape:
        raise ValueError(f"sources and targets must have the same length: {src.size} vs {tgt.size}")
    if on_disconnected == "raise":
        check_pairs_connected(graph, src, tgt)
    nodes = graph.nodes
    out = torch.empty(src.size, dtype=nodes.dtype, device=nodes.device)
    glen = torch.empty_like(out)
    results: list[GeodesicResult] = []
    for start in tqdm(
        range(0, src.size, batch_size), disable=not progress, desc="geodesics", leave=False
    ):
        s, t = src[start : start + batch_size], tgt[start : start + batch_size]
        curves, lengths = shortest_path_curves(graph, s, t, on_disconnected="inf")
        part = slice(start, start + s.size)
        glen[part] = lengths
        out[part] = lengths
        finite = torch.isfinite(lengths).nonzero().flatten()
        if finite.numel() == 0:
            continue
        s_t = torch.as_tensor(s, device=nodes.device)[finite]
        t_t = torch.as_tensor(t, device=nodes.device)[finite]
        res = connecting_geodesics(
            embed, nodes[s_t], nodes[t_t], init_curves=curves[finite], **geodesic_options
        )
        with torch.no_grad():
            measured = curve_length(embed, res.curves, rtol=graph.rtol)
        out[start + finite] = torch.fmin(lengths[finite], measured.to(out))
        if keep_results:
            results.append(res)
    merged = None
    if results:
        merged = GeodesicResult(
            **{f: torch.cat([getattr(r, f) for r in results]) for f in results[0].__dict__}
        )
    return out, glen, merged


def geodesic_distance_matrix(
    embed: Embed,
    z: Tensor,
    method: str = "graph",
    *,
    k: int = 40,
    rtol: float = 1e-3,
    aux_points: int | Tensor | None = None,
    seed: int = 0,
    on_disconnected: str = "raise",
    batch_size: int = 256,
    progress: bool = True,
    **geodesic_options: Any,
) -> Tensor:
    """Geodesic distances between all pairs of ``n`` latent points.

    Args:
        embed: ``(m, d) -> (m, D')`` callable (e.g. ``TwoStageVAE.embed``).
        z: ``(n, d)`` latent points, any ``d``.
        method: ``"graph"`` (kNN-graph shortest paths) or ``"refined"`` (graph paths refined by
            :func:`connecting_geodesics`, ``n (n - 1) / 2`` geodesics).
        k: neighbours per graph node (capped at ``n - 1``); larger is more accurate and
            slower; increase it if the graph is disconnected.
        rtol: relative tolerance of every measured length (graph edges, refined curves).
        aux_points: optional auxiliary way points (a count of random points in the bounding box
            of ``z``, or an ``(m, d)`` tensor); they refine the graph in empty regions.
        seed: seed of the random auxiliary points.
        on_disconnected: ``"raise"`` (``ValueError`` naming the components and the remedy) or
            ``"inf"`` (infinite distances between components).
        batch_size: pairs per geodesic batch (``"refined"``).
        progress: tqdm progress bars.
        **geodesic_options: forwarded to :func:`connecting_geodesics` (``"refined"``).

    Returns:
        Symmetric ``(n, n)`` tensor with zero diagonal, on ``z``'s device and dtype.
    """
    check_points(z)
    if method not in ("graph", "refined"):
        raise ValueError(f"method must be 'graph' or 'refined', got {method!r}")
    if on_disconnected not in ("raise", "inf"):
        raise ValueError(f"on_disconnected must be 'raise' or 'inf', got {on_disconnected!r}")
    if geodesic_options and method == "graph":
        raise ValueError(f"geodesic options {sorted(geodesic_options)} need method='refined'")
    n = z.shape[0]
    graph = build_graph(embed, z, k, rtol, aux_points, seed, progress)
    idx = np.arange(n)
    D_np = graph_distances(graph, idx, idx, on_disconnected=on_disconnected, progress=progress)
    D = torch.as_tensor(D_np, dtype=z.dtype, device=z.device)  # (n, n)
    if method == "refined" and n > 1:
        iu = torch.triu_indices(n, n, offset=1)  # (2, n(n-1)/2)
        refined, _, _ = refined_pair_distances(
            embed,
            graph,
            iu[0],
            iu[1],
            batch_size=batch_size,
            on_disconnected="inf",
            progress=progress,
            keep_results=False,
            **geodesic_options,
        )
        iu = iu.to(z.device)
        D[iu[0], iu[1]] = refined.to(D)
        D[iu[1], iu[0]] = refined.to(D)
    D = 0.5 * (D + D.T)
    D.fill_diagonal_(0)
    return D
