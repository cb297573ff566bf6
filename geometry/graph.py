"""k-nearest-neighbour graphs in latent space and shortest paths on them.

Nodes are latent points (data codes, optionally with auxiliary points); every node is joined to
its ``k`` Euclidean nearest neighbours (union, so the graph is undirected), and each edge is
weighted by the Riemannian length of the straight latent segment between its end points,
measured to a relative tolerance ``rtol`` (:func:`geometry.curves.measure_curve_lengths`), so a
path length is the length of an actual latent polyline up to ``rtol``. All edges are pushed
through ``embed`` in large batches. Repeated points are merged: the neighbours are found among
the distinct points (a duplicate would otherwise take a neighbour slot and lengthen other
distances), and every copy is joined to its first occurrence at zero length. Shortest paths use
``scipy.sparse.csgraph.dijkstra``. Works for any latent dimension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist
from scipy.sparse.csgraph import connected_components, dijkstra
from torch import Tensor
from tqdm.auto import tqdm

from geometry._checks import Embed, check_points, check_positive_int
from geometry.curves import measure_curve_lengths

__all__ = [
    "LatentGraph",
    "auxiliary_points",
    "DisconnectedGraphError",
    "knn_graph",
    "check_connected",
    "check_pairs_connected",
    "node_indices",
    "graph_distances",
    "shortest_path_curves",
]


class DisconnectedGraphError(ValueError):
    """The kNN graph splits the requested points into several connected components."""


@dataclass
class LatentGraph:
    """A weighted undirected kNN graph on latent points.

    Attributes:
        nodes: ``(n, d)`` latent coordinates of the nodes.
        adjacency: ``(n, n)`` symmetric ``scipy.sparse.csr_matrix`` of edge lengths (float64).
        k: number of nearest neighbours used.
        rtol: relative tolerance to which every edge length was measured.
        n_duplicates: nodes that repeat an earlier node (joined to it at zero length).
        unconverged_edges: edges whose measurement hit its depth limit (their length is a lower
            bound; 0 in normal use).
    """

    nodes: Tensor
    adjacency: sp.csr_matrix
    k: int
    rtol: float
    n_duplicates: int = 0
    unconverged_edges: int = 0

    @property
    def num_nodes(self) -> int:
        return int(self.nodes.shape[0])

    @property
    def n_edges(self) -> int:
        return int(self.adjacency.nnz // 2)


def auxiliary_points(
    z: Tensor, num_points: int, margin: float = 0.05, generator: torch.Generator | None = None
) -> Tensor:
    """Uniform random points in the bounding box of ``z`` (enlarged by ``margin`` per side).

    Args:
        z: ``(n, d)`` codes.
        num_points: number of points.
        margin: relative enlargement of the box on each side.
        generator: CPU ``torch.Generator`` for reproducibility.

    Returns:
        ``(num_points, d)`` on ``z``'s device and dtype.
    """
    check_points(z)
    lo, hi = z.min(dim=0).values, z.max(dim=0).values  # (d,)
    pad = margin * (hi - lo)
    u = torch.rand(num_points, z.shape[1], generator=generator, dtype=z.dtype).to(z.device)
    return lo - pad + u * (hi - lo + 2 * pad)


def _knn_indices(nodes: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """Indices ``(n, k)`` of the k Euclidean nearest neighbours of every node (self excluded)."""
    n = nodes.shape[0]
    out = []
    for start in range(0, n, chunk):
        q = nodes[start : start + chunk]  # (c, d)
        dist = torch.cdist(q, nodes)  # (c, n)
        rows = torch.arange(start, start + q.shape[0], device=nodes.device)
        dist[torch.arange(q.shape[0], device=nodes.device), rows] = torch.inf  # no self loops
        out.append(dist.topk(k, dim=1, largest=False).indices)  # (c, k)
    return torch.cat(out)


def knn_graph(
    embed: Embed,
    nodes: Tensor,
    k: int = 40,
    rtol: float = 1e-3,
    chunk_size: int = 8192,
    progress: bool = False,
    distributed: bool = False,
    process_group: Any = None,
) -> LatentGraph:
    """Build the kNN graph with Riemannian edge lengths measured to ``rtol``.

    Every edge is measured with :func:`geometry.curves.measure_curve_lengths` from pieces no
    longer than a quarter of the median edge (in latent Euclidean length), so that an edge that
    spans a gap between clusters, where a variance wall sits, is looked at at the scale of the
    data, and refined adaptively from there.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        nodes: ``(n, d)`` latent points, n >= 2 (repeats are merged, see the module docstring).
        k: neighbours per node among the distinct points (``1 <= k < n``); the union of the kNN
            relations is used.
        rtol: relative tolerance of every edge length, in (0, 1).
        chunk_size: at most this many latent points per ``embed`` call.
        progress: show a tqdm bar over edge chunks.
        distributed: inside an initialized ``torch.distributed`` group, measure the edges
            sharded over its ranks (chunk ``i`` of the edges on rank ``i % world``) and gather
            them, so that every rank gets the same graph at a fraction of the cost; every rank
            must call with the same arguments. Ignored without an initialized group.
        process_group: the group for ``distributed`` (default: the default group).

    Returns:
        A :class:`LatentGraph`. Edges of zero length (between duplicates, or where ``embed`` is
        constant) get a tiny positive length so that scipy keeps them.
    """
    check_points(nodes, "nodes")
    n = nodes.shape[0]
    if n < 2:
        raise ValueError(f"a graph needs at least 2 nodes, got {n}")
    check_positive_int(k, "k")
    if k >= n:
        raise ValueError(f"k must be smaller than the number of nodes ({n}), got k={k}")
    if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    with torch.no_grad():
        uniq, inverse = torch.unique(nodes, dim=0, return_inverse=True)  # (u, d), (n,)
        u = uniq.shape[0]
        if u < 2:
            raise ValueError(f"a graph needs at least 2 distinct nodes, got {u} among {n} nodes")
        # representative of every distinct point: its first occurrence in ``nodes``
        order = torch.argsort(inverse * n + torch.arange(n, device=nodes.device))
        first = torch.ones(n, dtype=torch.bool, device=nodes.device)
        first[1:] = inverse[order][1:] != inverse[order][:-1]
        rep = torch.empty(u, dtype=torch.long, device=nodes.device)
        rep[inverse[order][first]] = order[first]
        nbrs = _knn_indices(uniq, min(k, u - 1)).cpu().numpy()  # (u, k')
        rows = np.repeat(np.arange(u), nbrs.shape[1])
        cols = nbrs.reshape(-1)
        lo, hi = np.minimum(rows, cols), np.maximum(rows, cols)
        edges = np.unique(np.stack([lo, hi], axis=1), axis=0)  # (E, 2), i < j, distinct points
        e_idx = torch.as_tensor(edges, device=nodes.device)
        latent = (uniq[e_idx[:, 1]] - uniq[e_idx[:, 0]]).norm(dim=1)  # (E,)
        piece = 0.25 * float(latent.median())
        per_chunk = max(1, chunk_size // 8)
        starts = list(range(0, len(edges), per_chunk))
        sharded = distributed and dist.is_available() and dist.is_initialized()
        rank = dist.get_rank(process_group) if sharded else 0
        world = dist.get_world_size(process_group) if sharded else 1
        measured: dict[int, tuple[np.ndarray, int]] = {}
        for start in tqdm(
            starts[rank::world], disable=not progress, desc="graph edges", leave=False
        ):
            ij = e_idx[start : start + per_chunk]
            seg = torch.stack([uniq[ij[:, 0]], uniq[ij[:, 1]]], dim=1)  # (c, 2, d)
            m = measure_curve_lengths(
                embed, seg, rtol=rtol, resolution=1, max_piece_length=piece, chunk_size=chunk_size
            )
            measured[start] = (m.lengths.double().cpu().numpy(), int((~m.converged).sum()))
        if sharded:
            parts: list[Any] = [None] * world
            dist.all_gather_object(parts, measured, group=process_group)
            measured = {key: val for part in parts for key, val in part.items()}
        w = np.concatenate([measured[s][0] for s in starts]) if starts else np.zeros(0)  # (E,)
        unconverged = sum(measured[s][1] for s in starts)
        rep_np = rep.cpu().numpy()
        inv_np = inverse.cpu().numpy()
    if not np.isfinite(w).all():
        raise ValueError(
            f"embed produced non-finite edge lengths on {int((~np.isfinite(w)).sum())} edges"
        )
    positive = w[w > 0]
    floor = 1e-12 * (float(np.median(positive)) if positive.size else 1.0)
    w = np.maximum(w, floor)
    src, dst = rep_np[edges[:, 0]], rep_np[edges[:, 1]]
    dup = np.flatnonzero(rep_np[inv_np] != np.arange(n))  # copies of an earlier node
    src = np.concatenate([src, dup])
    dst = np.concatenate([dst, rep_np[inv_np[dup]]])
    w = np.concatenate([w, np.full(dup.size, floor)])
    adj = sp.coo_matrix(
        (np.concatenate([w, w]), (np.concatenate([src, dst]), np.concatenate([dst, src]))),
        shape=(n, n),
    ).tocsr()
    # a copy: later in-place changes to the caller's tensor must not move the graph's nodes
    return LatentGraph(
        nodes=nodes.detach().clone(),
        adjacency=adj,
        k=k,
        rtol=float(rtol),
        n_duplicates=int(dup.size),
        unconverged_edges=unconverged,
    )


def node_indices(indices: np.ndarray | Tensor | int, n: int, name: str) -> np.ndarray:
    """``indices`` as a 1-D int64 array of node indices in ``[0, n)``, or a clear error.

    Args:
        indices: whole numbers (a scalar, list, numpy array or tensor of any shape).
        n: number of nodes of the graph.
        name: the argument's name, for the error message.
    """
    arr = np.asarray(torch.as_tensor(indices).cpu()).reshape(-1)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer)
        or (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr)))
    ):
        raise ValueError(f"{name} must hold whole-number node indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    bad = (arr < 0) | (arr >= n)
    if bad.any():
        raise ValueError(
            f"{name} holds node indices outside [0, {n}) (e.g. {int(arr[bad][0])}); the graph "
            f"has {n} nodes"
        )
    return arr


def _components_error(graph: LatentGraph, labels: np.ndarray, what: str) -> DisconnectedGraphError:
    present, sizes = np.unique(labels, return_counts=True)
    order = np.argsort(-sizes)
    return DisconnectedGraphError(
        f"the kNN graph (k={graph.k}) splits {what} into {present.size} connected components "
        f"of sizes {sizes[order].tolist()}; increase k (currently {graph.k}), add auxiliary "
        "nodes, or pass on_disconnected='inf' to get infinite distances between components"
    )


def check_pairs_connected(graph: LatentGraph, sources: np.ndarray, targets: np.ndarray) -> None:
    """Raise :class:`DisconnectedGraphError` if some pair ``(sources[i], targets[i])`` lies in two
    different connected components (pairs need not all share one component)."""
    n_comp, labels = connected_components(graph.adjacency, directed=False)
    if n_comp == 1:
        return
    split = np.flatnonzero(labels[sources] != labels[targets])
    if split.size:
        err = _components_error(graph, labels[np.concatenate([sources, targets])], "the points")
        raise DisconnectedGraphError(
            f"{split.size} of {sources.size} pairs have no graph path (first: nodes "
            f"{int(sources[split[0]])} and {int(targets[split[0]])}): {err}"
        )


def check_connected(graph: LatentGraph, subset: np.ndarray | None = None) -> None:
    """Raise :class:`DisconnectedGraphError` if the ``subset`` nodes are not all connected.

    Args:
        graph: the graph.
        subset: node indices that must lie in one component (default: all nodes).

    Raises:
        DisconnectedGraphError: naming the number and sizes of the components and the remedy.
    """
    n_comp, labels = connected_components(graph.adjacency, directed=False)
    if n_comp == 1:
        return
    sub = labels if subset is None else labels[np.unique(np.asarray(subset))]
    if np.unique(sub).size > 1:
        raise _components_error(graph, sub, f"the {sub.size} points")


def graph_distances(
    graph: LatentGraph,
    sources: np.ndarray | Tensor | None = None,
    targets: np.ndarray | Tensor | None = None,
    on_disconnected: str = "raise",
    chunk: int = 256,
    progress: bool = False,
) -> np.ndarray:
    """Shortest-path lengths from ``sources`` to ``targets`` (Dijkstra).

    Args:
        graph: the graph.
        sources: ``(S,)`` node indices (default: all nodes).
        targets: ``(T,)`` node indices (default: all nodes).
        on_disconnected: ``"raise"`` (a :class:`DisconnectedGraphError` if any source and target
            are in different components) or ``"inf"`` (their distance is ``inf``).
        chunk: sources per Dijkstra call (progress granularity).
        progress: show a tqdm bar.

    Returns:
        ``(S, T)`` float64 numpy array.
    """
    if on_disconnected not in ("raise", "inf"):
        raise ValueError(f"on_disconnected must be 'raise' or 'inf', got {on_disconnected!r}")
    n = graph.num_nodes
    src = np.arange(n) if sources is None else node_indices(sources, n, "sources")
    tgt = np.arange(n) if targets is None else node_indices(targets, n, "targets")
    if on_disconnected == "raise":
        check_connected(graph, np.concatenate([src, tgt]))
    out = np.empty((src.size, tgt.size))
    for start in tqdm(
        range(0, src.size, chunk), disable=not progress, desc="dijkstra", leave=False
    ):
        idx = src[start : start + chunk]
        dist = dijkstra(graph.adjacency, directed=False, indices=idx)  # (c, n)
        out[start : start + idx.size] = dist[:, tgt]
    return out


def shortest_path_curves(
    graph: LatentGraph,
    sources: np.ndarray | Tensor,
    targets: np.ndarray | Tensor,
    on_disconnected: str = "raise",
) -> tuple[Tensor, Tensor]:
    """Shortest graph paths between node pairs, as padded latent polylines.

    Args:
        graph: the graph.
        sources: ``(P,)`` node indices.
        targets: ``(P,)`` node indices.
        on_disconnected: ``"raise"`` (a :class:`DisconnectedGraphError` if some pair has no
            path) or ``"inf"``: an unreachable pair gets length ``inf`` and the straight segment
            as its polyline.

    Returns:
        ``curves`` of shape ``(P, M, d)`` (M = most vertices on any path; shorter paths repeat
        their last vertex, i.e. zero-length padding segments) and graph ``lengths`` ``(P,)``,
        on the nodes' device and dtype.
    """
    src = node_indices(sources, graph.num_nodes, "sources")
    tgt = node_indices(targets, graph.num_nodes, "targets")
    if src.shape != tgt.shape:
        raise ValueError(f"sources and targets must have the same length: {src.size} vs {tgt.size}")
    if on_disconnected not in ("raise", "inf"):
        raise ValueError(f"on_disconnected must be 'raise' or 'inf', got {on_disconnected!r}")
    if on_disconnected == "raise":
        check_pairs_connected(graph, src, tgt)
    uniq, inv = np.unique(src, return_inverse=True)
    dist, pred = dijkstra(graph.adjacency, directed=False, indices=uniq, return_predecessors=True)
    lengths = dist[inv, tgt]  # (P,)
    # Walk the predecessor trees backwards from every target at once.
    paths = [tgt.copy()]
    cur = tgt.copy()
    for _ in range(graph.num_nodes):
        nxt = pred[inv, cur]  # -9999 at the source or when unreachable
        done = nxt < 0
        if done.all():
            break
        cur = np.where(done, cur, nxt)
        paths.append(cur.copy())
    if len(paths) == 1:  # no pair needs a hop: every curve is at least a segment (M = 2)
        paths.append(tgt.copy())
    verts = np.stack(paths[::-1], axis=1)  # (P, M): the path ends at the right, padded on the left
    # Move the padding (repeated sources) to the end: shift each row to start at its source.
    unreachable = ~np.isfinite(lengths)
    n_pad = (verts == verts[:, :1]).cumprod(axis=1).sum(axis=1) - 1  # leading repeats
    M = verts.shape[1]
    col = (np.arange(M)[None, :] + n_pad[:, None]).clip(max=M - 1)
    verts = np.take_along_axis(verts, col, axis=1)  # (P, M), padded at the end with the target
    curves = graph.nodes[torch.as_tensor(verts, device=graph.nodes.device)]  # (P, M, d)
    if unreachable.any():
        bad = torch.as_tensor(np.flatnonzero(unreachable), device=graph.nodes.device)
        a = graph.nodes[torch.as_tensor(src, device=graph.nodes.device)[bad]]
        b = graph.nodes[torch.as_tensor(tgt, device=graph.nodes.device)[bad]]
        line = a[:, None].expand(-1, M, -1).clone()  # (u, M, d): the segment a -> b
        line[:, -1] = b
        curves[bad] = line
    lengths_t = torch.as_tensor(lengths, dtype=graph.nodes.dtype, device=graph.nodes.device)
    return curves, lengths_t
