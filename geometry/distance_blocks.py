"""Geodesic distance matrices past one machine: rectangular blocks, streamed to disk, sharded.

* :func:`geodesic_distances` returns one rectangular block ``(S, T)`` of graph geodesic
  distances between ``sources`` and ``targets`` (e.g. landmarks to all points) without forming
  any larger matrix.
* :func:`write_distance_matrix` computes the all-pairs ``(n, n)`` matrix of ``n`` codes row block
  by row block and streams every block into a ``.npy`` file on disk (``numpy.load(path,
  mmap_mode="r")`` reads it as a memory map). Peak memory is the kNN graph (``O(n k)``) plus one
  block (``block_size x n``), never ``n x n``. The run is resumable: a sidecar bitmap records
  every block whose rows have been written and flushed, and a restarted run skips those blocks.
  Inside an initialized ``torch.distributed`` process group (gloo on CPU, nccl on GPU; launched
  by ``torchrun`` or SLURM) the pending blocks are split over the ranks and every rank writes its
  own blocks into the shared file.
* :func:`open_distance_matrix` opens a finished matrix read-only and refuses an unfinished one.

Distances are kNN-graph shortest paths (:mod:`geometry.graph`, Dijkstra from every source row),
the same numbers as :func:`geometry.geodesic_distance_matrix` (``method="graph"``) row by row;
that function also symmetrises, so the two agree to rounding (about ``1e-15`` relative in
float64). The graph is built once per process with the public :func:`geometry.build_graph` on
the process's device; every rank checks that its graph is bit-identical to rank 0's (and takes
rank 0's if not), so a sharded matrix equals the single-process one exactly.

Files of a run at ``path`` (``path`` should end in ``.npy``):

* ``path``: the ``(n, n)`` matrix, float32 (default, 4 n^2 bytes) or float64 (8 n^2 bytes),
  row ``i`` = distances from code ``i`` to every code.
* ``path + ".meta.json"``: the run's identity (format, ``n``, ``d``, graph settings, dtype, block
  size, a SHA-256 of the codes and of the embedding's parameters). A restart with the same
  identity resumes; any other existing file at ``path`` is refused.
* ``path + ".blocks"``: one byte per row block, 1 once the block's rows are on disk (written
  after the data is flushed and synced).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from tqdm.auto import tqdm

from geometry._checks import Embed, check_points, check_positive_int
from geometry.distances import build_graph
from geometry.graph import (
    DisconnectedGraphError,
    LatentGraph,
    check_connected,
    graph_distances,
)

__all__ = [
    "DistanceMatrixFileError",
    "IncompleteDistanceMatrixError",
    "geodesic_distances",
    "write_distance_matrix",
    "open_distance_matrix",
    "distance_matrix_status",
]

FORMAT = "latent-oddity/distance-matrix"
FORMAT_VERSION = 1
DTYPES = ("float32", "float64")


class DistanceMatrixFileError(FileExistsError):
    """The output path holds something that is not this run's own resumable matrix."""


class IncompleteDistanceMatrixError(RuntimeError):
    """Some row blocks of a distance-matrix file have not been written (yet)."""


# --------------------------------------------------------------------------------------------
# rectangular blocks
# --------------------------------------------------------------------------------------------


def _unique_rows(points: Tensor) -> tuple[Tensor, np.ndarray]:
    """Distinct rows of ``points (m, d)`` in order of first occurrence, and each row's index."""
    arr = np.ascontiguousarray(points.detach().cpu().double().numpy())
    _, first, inverse = np.unique(arr, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # unique rows sorted by first occurrence
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    keep = torch.as_tensor(np.sort(first), device=points.device)
    return points[keep], rank[inverse.reshape(-1)]


def geodesic_distances(
    embed: Embed,
    sources: Tensor,
    targets: Tensor | None = None,
    *,
    points: Tensor | None = None,
    k: int = 40,
    rtol: float = 1e-3,
    aux_points: int | Tensor | None = None,
    seed: int = 0,
    on_disconnected: str = "raise",
    block_size: int = 256,
    progress: bool = False,
    graph: LatentGraph | None = None,
) -> Tensor:
    """Graph geodesic distances from every source to every target: one ``(S, T)`` block.

    The kNN graph's nodes are the distinct rows of ``points`` (way points, e.g. all data codes),
    ``sources`` and ``targets``, in order of first occurrence (rows equal to an earlier row are
    one node), plus ``aux_points``. With ``points=z`` and sources / targets taken from ``z`` the
    block equals the corresponding rows and columns of
    ``geodesic_distance_matrix(embed, z)`` (to rounding: that matrix is symmetrised).

    Args:
        embed: ``(m, d) -> (m, D')`` callable (e.g. ``TwoStageVAE.embed``).
        sources: ``(S, d)`` latent points (rows of the result).
        targets: ``(T, d)`` latent points (columns); ``None``: the sources.
        points: optional ``(P, d)`` extra graph nodes; more nodes give shorter, more accurate
            graph paths.
        k: neighbours per graph node (capped at the number of nodes minus one).
        rtol: relative tolerance of the graph's edge lengths.
        aux_points: optional random way points in the bounding box of all nodes (a count,
            seeded by ``seed``) or an ``(m, d)`` tensor.
        seed: seed of the random auxiliary points.
        on_disconnected: ``"raise"`` (:class:`~geometry.graph.DisconnectedGraphError` naming the
            components) or ``"inf"`` (infinite distance between components).
        block_size: sources per Dijkstra call.
        progress: tqdm progress bars.
        graph: a graph from an earlier call whose nodes already hold every source and target
            (its settings replace ``points``, ``k``, ``rtol``, ``aux_points``).

    Returns:
        ``(S, T)`` distances on the device and dtype of ``sources``.

    Raises:
        ValueError: non-finite points, different latent dimensions, bad settings.
    """
    check_points(sources, "sources")
    d = sources.shape[1]
    if targets is None:
        targets = sources
    check_points(targets, "targets", dim=d)
    if points is not None:
        check_points(points, "points", dim=d)
    check_positive_int(block_size, "block_size")
    if on_disconnected not in ("raise", "inf"):
        raise ValueError(f"on_disconnected must be 'raise' or 'inf', got {on_disconnected!r}")
    S = sources.shape[0]
    parts = ([] if points is None else [points.to(sources)]) + [sources, targets.to(sources)]
    nodes, index = _unique_rows(torch.cat(parts))  # (m, d), (P + S + T,)
    offset = 0 if points is None else points.shape[0]
    src, tgt = index[offset : offset + S], index[offset + S :]
    if graph is None:
        graph = build_graph(embed, nodes, k, rtol, aux_points, seed, progress)
    else:
        src, tgt = _locate(graph, nodes, src, tgt)
    D = graph_distances(
        graph, src, tgt, on_disconnected=on_disconnected, chunk=block_size, progress=progress
    )
    return torch.as_tensor(D, dtype=sources.dtype, device=sources.device)


def _locate(
    graph: LatentGraph, nodes: Tensor, src: np.ndarray, tgt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Map indices into ``nodes`` to indices of the equal nodes of ``graph`` (or raise)."""
    g = graph.nodes.detach().cpu().double().numpy()
    lookup = {row.tobytes(): i for i, row in enumerate(g)}
    q = nodes.detach().cpu().double().numpy()
    where = np.array([lookup.get(row.tobytes(), -1) for row in q], dtype=np.int64)
    missing = np.flatnonzero(where < 0)
    if missing.size:
        raise ValueError(
            f"{missing.size} source/target points are not nodes of the given graph (first: "
            f"{q[missing[0]].tolist()}); build the graph on them or pass graph=None"
        )
    return where[src], where[tgt]


# --------------------------------------------------------------------------------------------
# streamed, resumable, sharded all-pairs matrices
# --------------------------------------------------------------------------------------------


def _meta_path(path: str) -> str:
    return path + ".meta.json"


def _blocks_path(path: str) -> str:
    return path + ".blocks"


def codes_digest(z: Tensor) -> str:
    """SHA-256 of the codes (shape and float64 values)."""
    arr = np.ascontiguousarray(z.detach().cpu().double().numpy())
    h = hashlib.sha256(repr(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def embed_digest(embed: Embed) -> str | None:
    """SHA-256 of the parameters and buffers of ``embed`` (an ``nn.Module`` or a bound method of
    one, e.g. ``model.embed``); ``None`` for other callables."""
    module = embed if isinstance(embed, nn.Module) else getattr(embed, "__self__", None)
    if not isinstance(module, nn.Module):
        return None
    h = hashlib.sha256(type(module).__qualname__.encode())
    for name, value in module.state_dict().items():
        h.update(name.encode())
        if isinstance(value, Tensor):
            arr = value.detach().cpu().contiguous()
            h.update(str(arr.dtype).encode() + repr(tuple(arr.shape)).encode())
            h.update(arr.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _read_meta(path: str) -> dict[str, Any] | None:
    try:
        with open(_meta_path(path)) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def _write_json(path: str, obj: dict[str, Any]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _header_length(path: str) -> tuple[int, tuple[int, ...], np.dtype]:
    """Byte offset of the data in the ``.npy`` file, its shape and dtype."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        if fortran:
            raise DistanceMatrixFileError(f"{path!r} is a Fortran-ordered array, not a matrix run")
        return f.tell(), tuple(shape), dtype


def distance_matrix_status(path: str | os.PathLike) -> dict[str, Any]:
    """What a distance-matrix run at ``path`` holds.

    Returns:
        ``{"meta": dict, "n_blocks": int, "done": (n_blocks,) bool array, "complete": bool}``.

    Raises:
        DistanceMatrixFileError: ``path`` is not a distance-matrix run of this package.
    """
    path = os.fspath(path)
    meta = _read_meta(path)
    if meta is None or not os.path.exists(path) or not os.path.exists(_blocks_path(path)):
        raise DistanceMatrixFileError(
            f"{path!r} is not a distance-matrix run (needs the file, {_meta_path(path)!r} and "
            f"{_blocks_path(path)!r})"
        )
    done = np.fromfile(_blocks_path(path), dtype=np.uint8).astype(bool)
    if done.size != meta["n_blocks"]:
        raise DistanceMatrixFileError(
            f"{_blocks_path(path)!r} has {done.size} entries, the run has {meta['n_blocks']} "
            "blocks: the sidecar files are damaged"
        )
    return {"meta": meta, "n_blocks": int(done.size), "done": done, "complete": bool(done.all())}


def open_distance_matrix(path: str | os.PathLike) -> np.memmap:
    """Open a finished distance matrix read-only as an ``(n, n)`` memory map.

    Raises:
        IncompleteDistanceMatrixError: some blocks are missing (the run was interrupted; rerun
            it with the same settings to finish).
        DistanceMatrixFileError: ``path`` is not a distance-matrix run.
    """
    status = distance_matrix_status(path)
    if not status["complete"]:
        missing = np.flatnonzero(~status["done"])
        raise IncompleteDistanceMatrixError(
            f"{os.fspath(path)!r} is unfinished: {missing.size} of {status['n_blocks']} row blocks "
            f"missing (first: block {int(missing[0])}); rerun write_distance_matrix with the same "
            "codes and settings to resume"
        )
    return np.load(os.fspath(path), mmap_mode="r")


def _identity(
    z: Tensor,
    embed: Embed,
    k: int,
    rtol: float,
    aux_points: int | Tensor | None,
    seed: int,
    on_disconnected: str,
    dtype: str,
    block_size: int,
) -> dict[str, Any]:
    n = int(z.shape[0])
    aux: Any = aux_points
    if isinstance(aux_points, Tensor):
        aux = {"sha256": codes_digest(aux_points), "n": int(aux_points.shape[0])}
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "n": n,
        "d": int(z.shape[1]),
        "codes_sha256": codes_digest(z),
        "codes_dtype": str(z.dtype).replace("torch.", ""),
        "embed_sha256": embed_digest(embed),
        "k": k,
        "rtol": float(rtol),
        "aux_points": aux,
        "seed": seed,
        "on_disconnected": on_disconnected,
        "dtype": dtype,
        "block_size": block_size,
        "n_blocks": -(-n // block_size),
    }


def _check_existing(path: str, identity: dict[str, Any], overwrite: bool) -> bool:
    """Whether ``path`` holds this run's resumable files; raise if it holds anything else.

    Nothing is written or deleted here (``overwrite`` only disables the checks).
    """
    meta_p, blocks_p = _meta_path(path), _blocks_path(path)
    exists = [p for p in (path, meta_p, blocks_p) if os.path.exists(p)]
    if not exists or overwrite:
        return False
    meta = _read_meta(path)
    if meta is None or not os.path.exists(path) or not os.path.exists(blocks_p):
        raise DistanceMatrixFileError(
            f"{exists[0]!r} exists and is not a resumable distance-matrix run of these codes; "
            "choose another output path, delete it, or pass overwrite=True (--overwrite)"
        )
    differ = sorted(key for key in identity if meta.get(key) != identity[key])
    if differ:
        shown = ", ".join(
            f"{key}: file {meta.get(key)!r} vs run {identity[key]!r}" for key in differ
        )
        raise DistanceMatrixFileError(
            f"{path!r} holds a distance-matrix run with other codes or settings ({shown}); "
            "choose another output path, or pass overwrite=True (--overwrite) to replace it"
        )
    offset, shape, dtype = _header_length(path)
    n = identity["n"]
    expected = offset + n * n * np.dtype(identity["dtype"]).itemsize
    if shape != (n, n) or dtype != np.dtype(identity["dtype"]) or os.path.getsize(path) != expected:
        raise DistanceMatrixFileError(
            f"{path!r} has shape {shape}, dtype {dtype} and {os.path.getsize(path)} bytes; "
            f"this run writes ({n}, {n}) {identity['dtype']} ({expected} bytes): the file is "
            "damaged; pass overwrite=True (--overwrite) to start again"
        )
    distance_matrix_status(path)  # the bitmap has the right size
    return True


def _create_file(path: str, identity: dict[str, Any]) -> None:
    """Create the run's files (an empty matrix and bitmap), replacing any old ones."""
    meta_p, blocks_p = _meta_path(path), _blocks_path(path)
    for p in (meta_p, path, blocks_p):  # the meta first: a half-deleted run is not resumable
        if os.path.exists(p):
            os.remove(p)
    n = identity["n"]
    need = n * n * np.dtype(identity["dtype"]).itemsize
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise OSError(
            f"the ({n}, {n}) {identity['dtype']} matrix needs {need / 2**30:.2f} GiB, but "
            f"{folder!r} has {free / 2**30:.2f} GiB free; choose another folder or dtype='float32'"
        )
    # ``open_memmap`` writes the header and sizes the (sparse) file; no data is touched here.
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=identity["dtype"], shape=(n, n))
    del mm
    np.zeros(identity["n_blocks"], dtype=np.uint8).tofile(blocks_p)
    _write_json(meta_p, identity)  # last: a run without meta is never mistaken for a resumable one


def _write_rows(path: str, offset: int, row_start: int, rows: np.ndarray) -> None:
    """Write ``rows (b, n)`` at row ``row_start`` of the matrix, flushed and synced to disk."""
    with open(path, "r+b") as f:
        f.seek(offset + row_start * rows.shape[1] * rows.itemsize)
        f.write(np.ascontiguousarray(rows).tobytes())
        f.flush()
        os.fsync(f.fileno())


def _mark_done(path: str, block: int) -> None:
    with open(_blocks_path(path), "r+b") as f:
        f.seek(block)
        f.write(b"\x01")
        f.flush()
        os.fsync(f.fileno())


_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (DistanceMatrixFileError, DisconnectedGraphError, FileExistsError, OSError)
}


def _on_rank_zero(fn: Callable[[], Any], group: Any, sharded: bool) -> Any:
    """``fn()`` on rank 0 only; its result, or its error (same type), on every rank."""
    if not sharded:
        return fn()
    result, error = None, None
    if dist.get_rank(group) == 0:
        try:
            result = fn()
        except (OSError, ValueError) as err:
            error = (type(err).__name__, str(err))
    result, error = _broadcast((result, error), group)
    if error is not None:  # every rank raises rank 0's error
        raise _ERRORS.get(error[0], ValueError)(f"(rank 0) {error[1]}")
    return result


def _broadcast(obj: Any, group: Any) -> Any:
    holder = [obj]
    dist.broadcast_object_list(holder, src=0, group=group)
    return holder[0]


def _graph_digest(graph: LatentGraph) -> str:
    adj = graph.adjacency
    h = hashlib.sha256()
    for part in (adj.indptr, adj.indices, adj.data):
        h.update(np.ascontiguousarray(part).tobytes())
    return h.hexdigest()


def _same_graph_on_all_ranks(graph: LatentGraph, group: Any, rank: int) -> LatentGraph:
    """Every rank keeps its own graph if all are bit-identical, else takes rank 0's."""
    world = dist.get_world_size(group)
    digests: list[Any] = [None] * world
    dist.all_gather_object(digests, _graph_digest(graph), group=group)
    if len(set(digests)) == 1:
        return graph
    adj = _broadcast(graph.adjacency if rank == 0 else None, group)
    return dataclasses.replace(graph, adjacency=adj)


def write_distance_matrix(
    embed: Embed,
    z: Tensor,
    path: str | os.PathLike,
    *,
    k: int = 40,
    rtol: float = 1e-3,
    aux_points: int | Tensor | None = None,
    seed: int = 0,
    on_disconnected: str = "raise",
    block_size: int = 256,
    dtype: str = "float32",
    overwrite: bool = False,
    progress: bool = True,
    process_group: Any = None,
    on_block: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Stream the all-pairs graph geodesic distance matrix of ``z`` to a ``.npy`` file.

    Row block ``b`` holds rows ``b * block_size`` to ``(b + 1) * block_size - 1``: Dijkstra from
    those codes to every code. Blocks already recorded as done (a restarted run with the same
    codes and settings) are skipped. Inside an initialized ``torch.distributed`` group the
    pending blocks are dealt round-robin to the ranks; every rank must call this function with
    the same arguments (its own device for ``z`` and ``embed``).

    Args:
        embed: ``(m, d) -> (m, D')`` callable (e.g. ``TwoStageVAE.embed``), on ``z``'s device.
        z: ``(n, d)`` codes, finite.
        path: output ``.npy`` file (``path + ".meta.json"`` and ``path + ".blocks"`` are its
            sidecars; all three must be on a file system every rank sees).
        k: neighbours per graph node (capped at the number of nodes minus one).
        rtol: relative tolerance of the graph's edge lengths.
        aux_points: optional auxiliary way points (count or ``(m, d)`` tensor), graph nodes only.
        seed: seed of the random auxiliary points.
        on_disconnected: ``"raise"`` (:class:`~geometry.graph.DisconnectedGraphError` naming the
            components, before the output file is created) or ``"inf"`` (``inf`` between
            components).
        block_size: rows per block (Dijkstra call, disk write and resume unit).
        dtype: ``"float32"`` (default) or ``"float64"`` on disk.
        overwrite: replace whatever is at ``path`` instead of refusing it.
        progress: tqdm bar over the blocks (rank 0).
        process_group: the ``torch.distributed`` group to shard over (default: the default
            group if one is initialized, else none).
        on_block: called with each block index after that block is on disk and recorded (e.g.
            to log or to stop the run).

    Returns:
        ``{"path", "n", "n_blocks", "computed" (blocks this call wrote on this rank),
        "skipped" (blocks found done), "world_size", "graph_edges", "graph_seconds" (graph,
        checks and file set-up), "blocks_seconds" (this rank's blocks)}``.

    Raises:
        DistanceMatrixFileError: ``path`` holds something other than this run's matrix.
        IncompleteDistanceMatrixError: after all ranks finished, some block is still missing
            (e.g. a rank died); rerun to finish.
        DisconnectedGraphError: the graph is disconnected and ``on_disconnected="raise"``.
        ValueError: bad codes (non-finite, wrong shape) or settings.
    """
    path = os.fspath(path)
    check_points(z, "z")
    check_positive_int(k, "k")
    if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    check_positive_int(block_size, "block_size")
    if on_disconnected not in ("raise", "inf"):
        raise ValueError(f"on_disconnected must be 'raise' or 'inf', got {on_disconnected!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    n = int(z.shape[0])
    if n < 2:
        raise ValueError(f"a distance matrix needs at least 2 codes, got {n}")
    group = process_group
    sharded = dist.is_available() and dist.is_initialized()
    if group is not None and not sharded:
        raise ValueError("process_group given but torch.distributed is not initialized")
    rank = dist.get_rank(group) if sharded else 0
    world = dist.get_world_size(group) if sharded else 1
    identity = _identity(z, embed, k, rtol, aux_points, seed, on_disconnected, dtype, block_size)
    if sharded:  # every rank must run the same job
        ids: list[Any] = [None] * world
        dist.all_gather_object(ids, identity, group=group)
        if any(other != ids[0] for other in ids):
            bad = [r for r, other in enumerate(ids) if other != ids[0]]
            raise ValueError(f"ranks {bad} were given other codes or settings than rank 0")

    t_graph = time.perf_counter()
    # refuse a foreign output before the expensive graph; a finished run returns at once
    resumable = _on_rank_zero(lambda: _check_existing(path, identity, overwrite), group, sharded)
    if resumable:
        status = distance_matrix_status(path)
        if status["complete"]:
            return _summary(path, n, status, 0, world, None, 0.0, 0.0)
    graph = build_graph(
        embed, z, k, rtol, aux_points, seed, progress and rank == 0, distributed=sharded,
        process_group=group,
    )  # fmt: skip
    if sharded:
        graph = _same_graph_on_all_ranks(graph, group, rank)
    codes = np.arange(n)

    def connected_and_created() -> None:
        if on_disconnected == "raise":
            check_connected(graph, codes)
        if not resumable:
            _create_file(path, identity)

    _on_rank_zero(connected_and_created, group, sharded)
    status = distance_matrix_status(path)
    done = status["done"]
    if sharded:  # one view of what is pending, whatever each rank's file cache says
        done = _broadcast(done if rank == 0 else None, group)
    t_blocks = time.perf_counter()
    pending = np.flatnonzero(~done)
    mine = pending[rank::world]
    offset, _, _ = _header_length(path)
    np_dtype = np.dtype(dtype)
    bar = tqdm(
        total=int(mine.size),
        disable=not progress or rank != 0,
        desc="distance blocks" if world == 1 else f"distance blocks (rank 0 of {world})",
        unit="block",
    )
    for block in mine:
        start = int(block) * block_size
        rows = codes[start : start + block_size]
        D = graph_distances(graph, rows, codes, on_disconnected="inf", chunk=block_size)
        D[np.arange(rows.size), rows] = 0.0
        _write_rows(path, offset, start, D.astype(np_dtype))
        _mark_done(path, int(block))
        bar.update(1)
        if on_block is not None:
            on_block(int(block))
    bar.close()
    t_end = time.perf_counter()
    if sharded:
        dist.barrier(group=group)
    final = distance_matrix_status(path)
    if not final["complete"]:
        missing = np.flatnonzero(~final["done"])
        raise IncompleteDistanceMatrixError(
            f"{path!r}: {missing.size} of {final['n_blocks']} blocks missing after the run "
            f"(first: {int(missing[0])}); rerun with the same settings to finish them"
        )
    return _summary(
        path, n, status, int(mine.size), world, graph.n_edges, t_blocks - t_graph, t_end - t_blocks
    )


def _summary(
    path: str,
    n: int,
    status: dict[str, Any],
    computed: int,
    world: int,
    edges: int | None,
    graph_s: float,
    blocks_s: float,
) -> dict[str, Any]:
    return {
        "path": path,
        "n": n,
        "n_blocks": status["n_blocks"],
        "computed": computed,
        "skipped": int(status["done"].sum()),
        "world_size": world,
        "graph_edges": edges,
        "graph_seconds": round(graph_s, 3),
        "blocks_seconds": round(blocks_s, 3),
    }
