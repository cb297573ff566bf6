"""Batched connecting geodesics by minimizing the measured length of a polyline.

A geodesic between ``z0`` and ``z1`` is approximated by a polyline of ``N`` nodes ``c_0 .. c_{N-1}``
(end points fixed). Every segment is read through ``m`` equally spaced sub-points (linear in its
two nodes), and the solver minimizes the polyline's length at that resolution,

    ``L = sum_i lambda_i``,  ``lambda_i = sum_s ||h(p_{i,s+1}) - h(p_{i,s})||``

(with ``m = 1`` this is the classical chord sum on the nodes, which cuts corners through
variance walls).

Solver (``optimizer="lm"``): per-curve Levenberg-Marquardt, vectorised over the batch
(:mod:`geometry.polyline_lm`, driven by :mod:`geometry.sub_point_lm`) on that length
(:mod:`geometry.sub_point_length`: exact gradient, block-tridiagonal Gauss-Newton model,
forward-mode Jacobians). The coarse stage of the line starts (below) first minimizes the
segment energy ``(N - 1) sum_i lambda_i^2`` at the same sub-points (its minimizers are the
length's with equal segments; its model is better conditioned, since the length does not care
where the nodes sit along the curve), then the length from there. The fine stage minimizes the
length directly, from curves placed at equal Riemannian arc length (coarse results, graph
paths, given curves) or already solved (node doublings): an energy phase there spent as many
steps as the length phase and, on walled decoders, stopped in longer curves (see the README's
benchmarks). From latent dimension 4 on the length phase also tries truncated
Newton steps (conjugate gradients on the exact Hessian, preconditioned by the Gauss-Newton solve),
since the Gauss-Newton model of a length, which is not a sum of squares, converges only linearly.
There (where trial steps are judged by forward passes alone) an accepted step is followed by
frozen-model steps: the last Gauss-Newton matrix with the exact gradient by one reverse pass,
refreshed after ``MAX_FROZEN`` of them, after a rejected step and before the stationarity test
counts; each forward-mode pass covers at most ``2**22`` embedded values (windows of a curve's
points where one curve is larger).

A Gauss-Newton model is positive semi-definite and overstates the curvature of a length, so LM
also stops on saddle points (a curve balanced on the crest of a variance wall) and on slow
slopes; wherever the decoder has second derivatives, the kept curve of every pair then tries
second-order steps on the exact Hessian (:mod:`geometry.negative_curvature`: Newton steps in a
Krylov space built by Lanczos, preconditioned by the Gauss-Newton matrix, and the lowest
curvature direction where it is negative), and a curve whose measured length drops by more than
``rtol`` there is optimized again from that point (with the same steps inside the LM), so
``stationary`` means that no such step lowers the length by more than ``rtol``.

Resolution, level by level: a curve starts at the fewest sub-points ``m`` (``sub_steps`` times
a power of two) at which the sub-point length of its start agrees with the start's measured
length (:func:`geometry.curves.measure_curve_lengths`, to ``rtol``); forward passes only. When
it is stationary its polyline is measured; if ``sum_i lambda_i`` differs from that measurement
by more than ``rtol`` the objective was too coarse (it saw a length the polyline does not have):
the curve goes on at ``2 m`` (up to ``max_sub_steps``) from the shortest polyline measured so
far, so a corner cut at a coarse level is never kept.

Line starts (the line and the bent lines) first run on a coarse polyline (``_COARSE_NODES``
nodes at ``_COARSE_SUB_STEPS`` sub-points, not measured); the shortest per pair seeds the fine
stage on ``N`` nodes.

Starts: the straight line, or given curves, or a kNN-graph shortest path (``init="graph"``);
with ``graph_points`` and ``init="line"`` both the line and the graph path are optimized and the
shorter result is kept (``starts="line+graph"``). At ``d = 2`` without ``graph_points`` the graph
is built over the batch's end points and seeded uniform points (``auxiliary_points``): a global
start for routes around variance walls. Later starts run only where they measure below
``1 + start_slack`` times the best curve so far; the measurably shorter result is kept.

Node count: every solved curve is doubled in nodes (same polyline) and optimized again while
its measured length drops by more than ``node_rtol``, up to ``max_num_nodes`` (by default two
doublings: ``4 (num_nodes - 1) + 1``); where the first doubling gains little it costs little,
since the doubled polyline is already stationary.

Outputs: ``lengths`` are the measured lengths of the returned polylines (``length_errors`` their
error estimates, at relative tolerance ``length_rtol``). No returned curve is longer than its
start by that measurement: otherwise the start is returned and ``reverted`` is set.
``converged`` = stationary and faithful and the measurement converged and not reverted.

``optimizer="adam"`` is a plain batched Adam on the node chord energy, kept as a baseline; its
convergence test is stagnation of the best energy (then the same faithfulness test).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geometry._checks import Embed, check_points, check_positive_int, embed_flat
from geometry.adam_nodes import adam_on_nodes
from geometry.curves import (
    CurveLengths,
    constant_speed_curves,
    measure_curve_lengths,
    resample_curves,
    subdivide_curves,
)
from geometry.geodesic_result import (
    GeodesicResult,
    better,
    better_at,
    empty_result,
    put_measured,
    take_measured,
)
from geometry.geodesic_starts import (
    AUX_K,
    AUX_POINTS,
    START_RTOL,
    auxiliary_graph_points,
    start_curves,
)
from geometry.sub_point_lm import leave_sub_point_saddles, sub_point_lm

__all__ = ["NUM_NODES", "GeodesicResult", "connecting_geodesics"]

NUM_NODES = 24  # default nodes per curve, end points included

_COARSE_NODES = 6  # nodes of the coarse stage that the line starts go through first
_COARSE_SUB_STEPS = 8  # sub-points per segment of the coarse stage
_COARSE_MAX_ITERATIONS = 20  # step limit per phase of the coarse stage (it only seeds)


# --------------------------------------------------------------------------------------------
# One start: optimize, refine the sub-point resolution until the objective is faithful
# --------------------------------------------------------------------------------------------


@dataclass
class _Solved:
    """Optimized curves of one start (``B`` curves) and their measurement."""

    curves: Tensor  # (B, N, d)
    stationary: Tensor  # (B,) bool
    faithful: Tensor  # (B,) bool
    sub_steps: Tensor  # (B,) int64
    iterations: Tensor  # (B,) int64
    measured: CurveLengths
    reverted: Tensor  # (B,) bool; the start kept: every optimized curve was longer
    reverted_far: Tensor  # (B,) bool; ... by more than ``revert_rtol``


def _solve_lm(
    embed: Embed, start: Tensor, initial: CurveLengths, opts: _Options, bar: tqdm
) -> _Solved:
    """LM from ``start (B, N, d)`` (measured as ``initial``), level by level in the sub-points.

    Each curve starts at the fewest sub-points (``opts.sub_steps`` times a power of two) whose
    objective is faithful to the measured length of its start. A curve whose optimized
    objective is not faithful to its measured length goes on at twice the sub-points (up to
    ``opts.max_sub_steps``), from the shortest curve measured so far: an unfaithful objective
    can cut corners and lengthen the curve.
    """
    B, N, d = start.shape
    z0, z1 = start[:, 0], start[:, -1]
    curves = start.clone()
    stationary = torch.zeros(B, dtype=torch.bool, device=start.device)
    faithful = torch.zeros_like(stationary)
    sub_steps = torch.zeros(B, dtype=torch.long, device=start.device)
    iterations = torch.zeros(B, dtype=torch.long, device=start.device)
    measured = take_measured(initial, torch.ones_like(stationary))
    accepted, rejected = torch.zeros_like(stationary), torch.zeros_like(stationary)
    rejected_far = torch.zeros_like(stationary)  # a rejected curve was longer by > revert_rtol
    levels = _levels(opts)
    level = _start_levels(embed, start, initial, levels, opts)  # (B,) index into levels
    for k, m in enumerate(levels):
        todo = (level == k).nonzero().flatten()
        if todo.numel() == 0:
            continue
        run = sub_point_lm(
            embed, curves[todo, 1:-1], z0[todo], z1[todo], m, opts.tolerance,
            opts.max_iterations, opts.chunk_size, bar, opts.rtol if opts.polish else None,
            energy_phase=False,
        )  # fmt: skip
        stat = run.stationary
        trial = curves[todo].clone()
        trial[:, 1:-1] = run.x
        meas = _measure(embed, trial, opts)
        good = _agrees(run.length, meas, opts.rtol, run.noise)
        L_best = measured.lengths[todo].double()
        shorter = meas.lengths.double() <= L_best
        keep = todo[shorter]
        accepted[keep] = True
        rejected[todo[~shorter]] = True
        far = ~(L_best * (1 + opts.revert_rtol) >= meas.lengths.double())  # also NaN
        rejected_far[todo[far]] = True
        curves[keep] = trial[shorter]
        put_measured(measured, keep, take_measured(meas, shorter))
        stationary[todo], faithful[todo] = stat, good
        sub_steps[todo] = m
        iterations[todo] += run.iterations
        level[todo[stat & ~good]] = k + 1  # stationary but unfaithful: finer
    reverted = rejected & ~accepted
    return _Solved(
        curves, stationary, faithful, sub_steps, iterations, measured, reverted,
        reverted & rejected_far,
    )  # fmt: skip


def _levels(opts: _Options) -> list[int]:
    """Sub-point levels ``opts.sub_steps * 2^k <= opts.max_sub_steps``."""
    out = [opts.sub_steps]
    while out[-1] * 2 <= opts.max_sub_steps:
        out.append(out[-1] * 2)
    return out


def _start_levels(
    embed: Embed, start: Tensor, initial: CurveLengths, levels: list[int], opts: _Options
) -> Tensor:
    """Per curve, the first level whose sub-point length of ``start`` agrees with its measured
    length (``initial``) to ``opts.rtol`` (the last level if none does); forward passes only."""
    B = start.shape[0]
    level = torch.full((B,), len(levels) - 1, dtype=torch.long, device=start.device)
    open_ = torch.arange(B, device=start.device)
    for k, m in enumerate(levels[:-1]):
        if open_.numel() == 0:
            break
        L_obj = _chords(embed, subdivide_curves(start[open_], m), opts.chunk_size)
        good = _agrees(L_obj, take_measured(initial, open_), opts.rtol)
        level[open_[good]] = k
        open_ = open_[~good]
    return level


def _coarse_lm(
    embed: Embed, start: Tensor, opts: _Options, bar: tqdm
) -> tuple[Tensor, Tensor, Tensor]:
    """LM from ``start (B, n, d)`` (a coarse polyline) at ``_COARSE_SUB_STEPS`` sub-points, not
    measured: the result only seeds the fine stage. Returns the curves, their objective's
    length ``(B,)`` and the iterations ``(B,)``."""
    z0, z1 = start[:, 0], start[:, -1]
    run = sub_point_lm(
        embed, start[:, 1:-1], z0, z1, _COARSE_SUB_STEPS, max(opts.tolerance, 1e-3),
        min(opts.max_iterations, _COARSE_MAX_ITERATIONS), opts.chunk_size, bar,
    )  # fmt: skip
    return torch.cat([z0[:, None], run.x, z1[:, None]], dim=1), run.length, run.iterations


def _solve_adam(embed: Embed, start: Tensor, opts: _Options, bar: tqdm) -> _Solved:
    """Adam from ``start (B, N, d)`` on the chord energy (a baseline)."""
    z0, z1 = start[:, 0], start[:, -1]
    x, stat, its = adam_on_nodes(
        embed, start[:, 1:-1], z0, z1, opts.tolerance, opts.max_iterations, opts.lr,
        opts.chunk_size, bar,
    )  # fmt: skip
    curves = torch.cat([z0[:, None], x, z1[:, None]], dim=1)
    meas = _measure(embed, curves, opts)
    chords = _chords(embed, curves, opts.chunk_size)
    good = _agrees(chords, meas, opts.rtol)
    ones = torch.ones_like(its)
    none = torch.zeros_like(stat)  # reverting happens in _optimise_one_start
    return _Solved(curves, stat, good, ones, its, meas, none, none)


def _agrees(L_obj: Tensor, meas: CurveLengths, rtol: float, noise: Tensor | None = None) -> Tensor:
    """Whether the objective's length is within ``rtol`` (plus the measurement's own error and
    the objective's roundoff ``noise``) of the measured length."""
    L = meas.lengths.double()
    slack = rtol * L + meas.errors.double() + (0 if noise is None else noise)
    return (L_obj.double() - L).abs() <= slack


def _measure(embed: Embed, curves: Tensor, opts: _Options) -> CurveLengths:
    return measure_curve_lengths(embed, curves, rtol=opts.rtol, chunk_size=opts.chunk_size)


def _chords(embed: Embed, curves: Tensor, chunk_size: int) -> Tensor:
    B, N, d = curves.shape
    flat = curves.reshape(B * N, d)
    h = torch.cat([embed_flat(embed, p) for p in flat.split(chunk_size)]) if B else flat
    h = h.reshape(B, N, -1)
    return (h[:, 1:] - h[:, :-1]).norm(dim=2).sum(dim=1)


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


@dataclass
class _Options:
    tolerance: float
    max_iterations: int
    lr: float
    rtol: float
    sub_steps: int
    max_sub_steps: int
    revert_rtol: float
    chunk_size: int
    start_slack: float = 1.0
    max_num_nodes: int = 0  # 0: no node refinement
    node_rtol: float = 1e-2
    second_order: bool = True  # second-order steps from every pair's kept curve
    polish: bool = False  # a run from a second-order step: second-order steps inside the LM


def connecting_geodesics(
    embed: Embed,
    z0: Tensor,
    z1: Tensor,
    *,
    num_nodes: int = NUM_NODES,
    init: str = "line",
    init_curves: Tensor | None = None,
    graph_points: Tensor | None = None,
    graph_k: int = 40,
    bent_starts: int = 2,
    auxiliary_points: int | None = None,
    start_slack: float = 1.0,
    max_num_nodes: int | None = None,
    node_rtol: float = 1e-2,
    optimizer: str = "lm",
    tolerance: float | None = None,
    max_iterations: int | None = None,
    lr: float = 0.01,
    reparametrize: bool = True,
    rtol: float = 1e-3,
    sub_steps: int | None = None,
    max_sub_steps: int = 32,
    revert_rtol: float = 1e-3,
    second_order: bool = True,
    chunk_size: int = 8192,
    progress: bool = False,
) -> GeodesicResult:
    """Geodesics between ``B`` pairs of latent points, all at once.

    Args:
        embed: ``(n, d) -> (n, D')`` callable whose Euclidean pull-back is the metric (for a VAE,
            ``[mu(z), sigma(z)]`` flattened, e.g. ``TwoStageVAE.embed``).
        z0: start points ``(B, d)`` (``B = 0`` gives empty results).
        z1: end points ``(B, d)``; pairs with ``z0 == z1`` give constant curves of length 0.
        num_nodes: nodes per curve including both end points (>= 2).
        init: ``"line"`` (straight latent line; with ``graph_points`` also the graph path, and
            the shorter result is kept), ``"curves"`` (use ``init_curves``; implied when they are
            given) or ``"graph"`` (only the shortest path on a kNN graph over ``graph_points``
            plus the end points, see :mod:`geometry.graph`).
        init_curves: ``(B, M, d)`` initial polylines whose end points equal ``z0`` / ``z1``
            (M >= 2, resampled to ``num_nodes``).
        graph_points: ``(P, d)`` latent points (e.g. data codes) for graph starts. With
            ``init="line"`` a pair that the kNN graph leaves without a path (clusters far
            apart) keeps the straight line as its graph start; with ``init="graph"`` that is a
            :class:`~geometry.graph.DisconnectedGraphError` naming the components.
        graph_k: neighbours per node of that graph.
        bent_starts: with ``init="line"``, also start from this many lines bowed sideways
            (half sines of height +-0.2, +-0.4, ... times ``||z1 - z0||``) and keep the
            shortest converged result per pair: a start's basin decides which local minimum
            the solver reaches.
        auxiliary_points: with ``init="line"`` and no ``graph_points``, also start from the
            shortest path on a kNN graph (12 neighbours) over all end points of the batch plus
            this many seeded uniform points in their bounding box (enlarged by 10 % per side):
            a global start that finds routes around variance walls which no line start
            reaches (the other pairs' end points, often data codes, are way points). Default
            256 for ``d = 2``, 0 (off) above, where uniform points are too sparse to help. A
            pair's result then depends on the other pairs of its batch (as with
            ``graph_points``); pass 0 for results that do not.
        start_slack: the starts after the first (bent lines excluded: they share the coarse
            stage) are optimized only for pairs where their measured length is below
            ``1 + start_slack`` times the best result so far: a start much longer than an
            optimized curve is in a worse route.
        max_num_nodes: refine the node count up to this many nodes (default
            ``4 (num_nodes - 1) + 1``: up to two doublings, for ``num_nodes > 2``; ``num_nodes``:
            no refinement). A polyline of few nodes cannot follow a geodesic that bends around
            variance walls: its best length can be whole percents above the geodesic distance.
            With refinement, every solved curve gets a node inserted in the middle of each
            segment (the same polyline, ``2 N - 1`` nodes) and is optimized again; curves whose
            length drops by more than ``node_rtol`` go on doubling while
            ``2 N - 1 <= max_num_nodes``. ``curves`` then has the finest node count the settings
            allow, ``(num_nodes - 1) * 2^k + 1 <= max_num_nodes``, for every pair (curves that
            stopped earlier carry collinear nodes: the same polylines), ``node_gains`` says what
            the last doubling gained, and ``converged`` also needs that gain to be at most
            ``node_rtol`` (the length converged in the node count).
        node_rtol: relative length decrease below which the node count counts as converged.
        optimizer: ``"lm"`` (batched Levenberg-Marquardt, default) or ``"adam"``.
        tolerance: ``"lm"``: a curve is stationary when the Gauss-Newton model predicts a
            relative decrease of the objective below this (default 1e-4; looser values stop
            early on steep variance walls, where each step's predicted decrease is small but
            the steps add up); ``"adam"``: relative decrease of the best energy per iteration,
            averaged over 20 iterations (default 1e-4).
        max_iterations: step limit per curve, sub-point level and phase (energy, then length;
            default 100 for ``"lm"``,
            1000 for ``"adam"``).
        lr: ``"adam"`` step size as a fraction of ``||z1 - z0||``.
        reparametrize: place the initial nodes at equal Riemannian arc length.
        rtol: relative tolerance of the length measurement and of the faithfulness test.
        sub_steps: sub-points per segment of the first objective (default
            ``max(1, ceil(32 / (N - 1)))``); doubled while not faithful.
        max_sub_steps: most sub-points per segment.
        revert_rtol: an optimized curve measured longer than its start is replaced by the
            start; ``converged`` is cleared unless it was longer by at most this relative amount.
        second_order: with ``optimizer="lm"``, try second-order steps on the exact Hessian
            from every pair's kept curve (see the module docstring: they leave saddle points
            and slow slopes that the Gauss-Newton model cannot see) and optimize again where
            the measured length drops by more than ``rtol``. ``False`` skips them (cheaper; then
            ``stationary`` is the Gauss-Newton test only, which a saddle point passes).
        chunk_size: at most this many rows per ``embed`` call (forward mode uses ``d`` rows per
            point); the optimizer's forward-mode passes and Hessian graphs also hold at most
            ``2**22`` embedded values (rows times ``D'``), so that they stay cache-sized on wide
            decoders.
        progress: show a tqdm progress bar (optimizer steps).

    Returns:
        A :class:`GeodesicResult` on the device and dtype of ``z0``.

    Raises:
        ValueError: on malformed input (shapes, ``d`` mismatch, non-finite values, points of a
            dtype other than the model's, end points of ``init_curves`` not matching, unknown
            options).
    """
    _check_pairs(embed, z0, z1)
    check_positive_int(num_nodes, "num_nodes", minimum=2)
    if optimizer not in ("lm", "adam"):
        raise ValueError(f"optimizer must be 'lm' or 'adam', got {optimizer!r}")
    if tolerance is None:
        tolerance = 1e-4
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    if max_iterations is None:
        max_iterations = 100 if optimizer == "lm" else 1000
    check_positive_int(max_iterations, "max_iterations", minimum=0)
    check_positive_int(chunk_size, "chunk_size")
    check_positive_int(bent_starts, "bent_starts", minimum=0)
    if max_num_nodes is None:  # two nodes are the straight segment: nothing to refine
        max_num_nodes = 4 * (num_nodes - 1) + 1 if num_nodes > 2 else num_nodes
    check_positive_int(max_num_nodes, "max_num_nodes", minimum=num_nodes)
    if not (isinstance(node_rtol, (int, float)) and 0 < node_rtol < 1):
        raise ValueError(f"node_rtol must be a number in (0, 1), got {node_rtol!r}")
    if auxiliary_points is None:
        auxiliary_points = AUX_POINTS if z0.shape[1] == 2 else 0
    check_positive_int(auxiliary_points, "auxiliary_points", minimum=0)
    if not (isinstance(start_slack, (int, float)) and 0 <= start_slack < math.inf):
        raise ValueError(f"start_slack must be a finite number >= 0, got {start_slack!r}")
    if sub_steps is None:
        sub_steps = max(1, -(-32 // (num_nodes - 1)))
    check_positive_int(sub_steps, "sub_steps")
    check_positive_int(max_sub_steps, "max_sub_steps", minimum=sub_steps)
    if init_curves is not None and init == "line":
        init = "curves"
    if init not in ("line", "curves", "graph"):
        raise ValueError(f"init must be 'line', 'curves' or 'graph', got {init!r}")
    if init == "curves" and init_curves is None:
        raise ValueError("init='curves' needs init_curves of shape (B, M, d)")
    if init == "graph" and graph_points is None:
        raise ValueError("init='graph' needs graph_points (P, d), e.g. the data codes")
    if not isinstance(second_order, bool):
        raise ValueError(f"second_order must be True or False, got {second_order!r}")
    opts = _Options(
        tolerance, max_iterations, lr, float(rtol), sub_steps, max_sub_steps, revert_rtol,
        chunk_size, float(start_slack), max_num_nodes, float(node_rtol),
        second_order=second_order,
    )  # fmt: skip
    z0, z1 = z0.detach(), z1.detach()
    if init == "line" and graph_points is None and auxiliary_points > 0 and len(z0):
        graph_points, graph_k = auxiliary_graph_points(z0, z1, auxiliary_points), AUX_K
    with torch.no_grad():
        starts = start_curves(embed, z0, z1, init, init_curves, graph_points, graph_k, bent_starts)
        n_line = 1 + bent_starts if init == "line" else 0
        return _solve(
            embed, z0, z1, starts, num_nodes, optimizer, reparametrize, opts, progress, n_line
        )


def _check_pairs(embed: Embed, z0: Tensor, z1: Tensor) -> None:
    """Shapes, finiteness and dtypes of the end points (and the model's dtype, if known)."""
    check_points(z0, "z0")
    check_points(z1, "z1")
    if z0.shape[1] != z1.shape[1]:
        raise ValueError(
            f"z0 and z1 have different latent dimensions: {z0.shape[1]} vs {z1.shape[1]}"
        )
    if z0.shape[0] != z1.shape[0]:
        raise ValueError(
            f"z0 and z1 must hold the same number of points: {z0.shape[0]} vs {z1.shape[0]}"
        )
    if z0.dtype != z1.dtype or z0.device != z1.device:
        raise ValueError(
            f"z0 and z1 differ in dtype/device: {z0.dtype}/{z0.device} vs {z1.dtype}/{z1.device}"
        )
    model_dtype = _model_dtype(embed)
    if model_dtype is not None and model_dtype != z0.dtype:
        raise ValueError(
            f"z0 and z1 have dtype {z0.dtype} but the model's parameters are {model_dtype}: "
            f"pass points of dtype {model_dtype} (e.g. z.to({model_dtype})) or convert the model"
        )


def _model_dtype(embed: Embed) -> torch.dtype | None:
    """Floating dtype of the parameters / buffers of ``embed``'s module, if it has one."""
    owner = getattr(embed, "__self__", embed)  # a bound method such as ``model.embed``
    if not isinstance(owner, torch.nn.Module):
        return None
    for t in (*owner.parameters(), *owner.buffers()):
        if t.is_floating_point():
            return t.dtype
    return None


def _solve(
    embed: Embed,
    z0: Tensor,
    z1: Tensor,
    starts: list[Tensor],
    num_nodes: int,
    optimizer: str,
    reparametrize: bool,
    opts: _Options,
    progress: bool,
    n_line_starts: int,
) -> GeodesicResult:
    """Optimize every start, keep the best per pair, never longer than the first start.

    The first ``n_line_starts`` starts (the line and the bent lines) are first optimized on a
    coarse polyline (``_COARSE_NODES`` nodes: few unknowns, cheap, global moves) and only the
    best of them per pair is refined on ``num_nodes`` nodes; the others (graph paths, given
    curves) are optimized on ``num_nodes`` nodes directly.
    """
    same = (z0 == z1).all(dim=1)  # (B,) zero-length pairs: constant curves
    live = (~same).nonzero().flatten()
    out = empty_result(z0, z1, _final_num_nodes(num_nodes, opts.max_num_nodes), opts.rtol)
    if live.numel() == 0:
        return out
    a, b = z0[live], z1[live]
    total = opts.max_iterations * (len(starts) + 1) * (1 + int(math.log2(opts.max_sub_steps)))
    bar = tqdm(total=total, disable=not progress, desc=f"geodesics ({optimizer})", leave=False)

    def place(curves: Tensor, n: int) -> Tensor:
        if reparametrize and n > 2:
            curves = constant_speed_curves(embed, curves, n, num_sub=4, chunk_size=opts.chunk_size)
        elif curves.shape[1] != n:
            curves = resample_curves(curves, n)
        curves[:, 0], curves[:, -1] = a, b
        return curves

    primary = place(starts[0][live], num_nodes)
    best: GeodesicResult | None = None
    coarse_iterations = torch.zeros(live.numel(), dtype=torch.long, device=z0.device)
    fine_starts = [place(s[live], num_nodes) for s in starts[n_line_starts:]]
    if n_line_starts:
        n_coarse = min(num_nodes, _COARSE_NODES)
        if optimizer == "lm" and n_coarse > 2:
            seeds = [
                _coarse_lm(embed, place(s[live], n_coarse), opts, bar)
                for s in starts[:n_line_starts]
            ]
            lengths = torch.stack([L for _, L, _ in seeds])  # (starts, B)
            pick = lengths.argmin(dim=0)  # (B,) the shortest coarse result per pair
            seed = torch.stack([c for c, _, _ in seeds])[pick, torch.arange(live.numel())]
            coarse_iterations = torch.stack([its for _, _, its in seeds]).sum(dim=0)
        else:
            coarse: GeodesicResult | None = None
            for s in starts[:n_line_starts]:
                res = _optimise_one_start(embed, place(s[live], n_coarse), optimizer, opts, bar)
                coarse = res if coarse is None else better(coarse, res, by_length=True)
            assert coarse is not None
            seed, coarse_iterations = coarse.curves, coarse.iterations
        fine_starts.insert(0, place(seed, num_nodes) if n_coarse < num_nodes else seed)
    for s in fine_starts:
        if best is None:
            best = _optimise_one_start(embed, s, optimizer, opts, bar)
            continue
        # later starts only where they are not much longer than the best result so far
        start_lengths = measure_curve_lengths(
            embed, s, rtol=START_RTOL, chunk_size=opts.chunk_size
        ).lengths.double()
        shorter = start_lengths < (1 + opts.start_slack) * best.lengths.double()
        todo = shorter.nonzero().flatten()
        if todo.numel() == 0:
            continue
        res = _optimise_one_start(embed, s[todo], optimizer, opts, bar)
        best = better_at(best, res, todo)
    bar.close()
    assert best is not None
    best.iterations += coarse_iterations
    if optimizer == "lm" and opts.second_order:
        best = _leave_saddle_points(embed, best, opts, bar)
    _never_longer_than(embed, best, primary, opts)
    best = _refine_nodes(embed, best, optimizer, opts, bar)
    for name, value in best.__dict__.items():
        getattr(out, name)[live] = value.to(getattr(out, name).dtype)
    return out


def _leave_saddle_points(
    embed: Embed, best: GeodesicResult, opts: _Options, bar: tqdm
) -> GeodesicResult:
    """Second-order trial steps (:func:`geometry.negative_curvature.second_order_step`: exact
    Newton steps in a Krylov space and the lowest curvature direction) from every stationary
    curve of ``best``, judged by its objective (at the sub-points it was solved at); curves
    whose objective drops by more than ``max(tolerance, rtol)`` and whose measured length
    drops by more than ``rtol`` are optimized again from there (with the same search inside
    the LM, for saddles met on the way) and the measurably shorter result is kept. A
    Gauss-Newton model is positive semi-definite and overstates the curvature of a length: it
    cannot see a saddle point (a curve balanced on the crest of a variance wall) and calls
    slow slopes flat. Nothing happens on decoders without second derivatives by autograd."""
    B, N, d = best.curves.shape
    cand = best.stationary.nonzero().flatten()  # a reverted curve is its start: searched too
    if N < 3 or cand.numel() == 0:
        return best
    starts = best.curves.clone()
    moved: list[Tensor] = []
    for m in best.sub_steps[cand].unique().tolist():
        idx = cand[best.sub_steps[cand] == m]
        x, a, b = starts[idx, 1:-1].clone(), starts[idx, 0], starts[idx, -1]
        min_decrease = max(opts.tolerance, opts.rtol)
        went = leave_sub_point_saddles(embed, x, a, b, m, min_decrease, opts.chunk_size)
        if went is None:  # no second derivatives by autograd
            return best
        starts[idx[went], 1:-1] = x[went].to(starts.dtype)
        moved.append(idx[went])
    todo = torch.cat(moved)
    if todo.numel() > 0:
        # the objective judged the moves at the curve's sub-points: keep those whose measured
        # length is below the curve's by more than rtol (a move can cut a corner)
        meas = _measure(embed, starts[todo], opts)
        drop = meas.lengths.double() < best.lengths[todo].double() * (1 - opts.rtol)
        todo = todo[drop & meas.converged]
    if todo.numel() == 0:
        return best
    # a saddle is not stationary: the curve kept there (should its new run be longer) says so
    best.stationary[todo] = False
    best.converged[todo] = False
    res = _optimise_one_start(embed, starts[todo], "lm", replace(opts, polish=True), bar)
    res.initial_lengths = best.initial_lengths[todo]  # the pair's start, not the saddle's
    return better_at(best, res, todo)


def _final_num_nodes(num_nodes: int, max_num_nodes: int) -> int:
    """Nodes of the returned curves: ``(num_nodes - 1) * 2^k + 1``, the largest such count
    ``<= max_num_nodes`` (``num_nodes`` itself without refinement)."""
    n = num_nodes
    while n > 1 and 2 * n - 1 <= max_num_nodes:
        n = 2 * n - 1
    return n


def _refine_nodes(
    embed: Embed, best: GeodesicResult, optimizer: str, opts: _Options, bar: tqdm
) -> GeodesicResult:
    """Double the nodes of every curve (same polyline, a node in the middle of each segment)
    and optimize again, while the measured length drops by more than ``opts.node_rtol`` and
    the node count stays within ``opts.max_num_nodes``; every curve is returned at the final
    count. ``converged`` also needs the last doubling's gain to be at most ``opts.node_rtol``."""
    N = best.curves.shape[1]
    final = _final_num_nodes(N, opts.max_num_nodes)
    todo = torch.arange(len(best), device=best.curves.device)
    while final > N:
        best.curves = subdivide_curves(best.curves, 2)  # (B, 2 N - 1, d), the same polylines
        N = best.curves.shape[1]
        if todo.numel() == 0:
            continue
        before = best.lengths[todo].double()
        res = _optimise_one_start(embed, best.curves[todo], optimizer, opts, bar)
        res.initial_lengths = best.initial_lengths[todo]  # the pair's start, not this level's
        res.reverted |= best.reverted[todo]
        best = better_at(best, res, todo)
        gain = 1 - best.lengths[todo].double() / before.clamp_min(torch.finfo(before.dtype).tiny)
        best.node_gains[todo] = gain.to(best.node_gains.dtype)
        best.converged[todo] &= gain <= opts.node_rtol
        todo = todo[gain > opts.node_rtol]
    return best


def _never_longer_than(embed: Embed, res: GeodesicResult, primary: Tensor, opts: _Options) -> None:
    """Replace, in place, results measured longer than the ``primary (B, N, d)`` start by it."""
    initial = _measure(embed, primary, opts)
    L, L0 = res.lengths.double(), initial.lengths.double()
    longer = ~(L <= L0)  # also catches NaN
    far = ~(L0 * (1 + opts.revert_rtol) >= L)
    res.initial_lengths = initial.lengths.to(res.lengths.dtype)
    if not bool(longer.any()):
        return
    res.curves[longer] = primary[longer]
    res.lengths[longer] = initial.lengths[longer].to(res.lengths.dtype)
    res.length_errors[longer] = initial.errors[longer].to(res.lengths.dtype)
    seg = initial.segment_lengths[longer].double()
    res.energies[longer] = ((primary.shape[1] - 1) * seg.pow(2).sum(dim=1)).to(res.lengths.dtype)
    res.chord_lengths[longer] = _chords(embed, primary[longer], opts.chunk_size).to(
        res.lengths.dtype
    )
    res.reverted |= longer
    res.converged &= ~far


def _optimise_one_start(
    embed: Embed, start: Tensor, optimizer: str, opts: _Options, bar: tqdm
) -> GeodesicResult:
    """Optimize from ``start (B, N, d)``; revert curves measured longer than their start."""
    B, N, d = start.shape
    initial = _measure(embed, start, opts)
    if N == 2:
        yes = torch.ones(B, dtype=torch.bool, device=start.device)
        solved = _Solved(
            start.clone(), yes, yes, torch.ones(B, dtype=torch.long, device=start.device),
            torch.zeros(B, dtype=torch.long, device=start.device), initial, ~yes, ~yes,
        )  # fmt: skip
    elif optimizer == "lm":
        solved = _solve_lm(embed, start, initial, opts, bar)
    else:
        solved = _solve_adam(embed, start, opts, bar)
    meas, curves = solved.measured, solved.curves
    L, L0 = meas.lengths.double(), initial.lengths.double()
    longer = ~(L <= L0)  # also catches NaN
    far = ~(L0 * (1 + opts.revert_rtol) >= L)
    curves[longer] = start[longer]
    longer |= solved.reverted  # the LM levels keep the start where every trial was longer
    far |= solved.reverted_far
    put_measured(meas, longer.nonzero().flatten(), take_measured(initial, longer))
    converged = solved.stationary & solved.faithful & meas.converged & ~far
    seg = meas.segment_lengths.double()
    return GeodesicResult(
        curves=curves,
        lengths=meas.lengths,
        length_errors=meas.errors,
        length_rtol=torch.full((B,), opts.rtol, dtype=start.dtype, device=start.device),
        energies=((N - 1) * seg.pow(2).sum(dim=1)).to(start.dtype),
        chord_lengths=_chords(embed, curves, opts.chunk_size).to(start.dtype),
        converged=converged,
        stationary=solved.stationary,
        faithful=solved.faithful,
        sub_steps=solved.sub_steps,
        iterations=solved.iterations,
        initial_lengths=initial.lengths,
        reverted=longer,
        node_gains=torch.full((B,), math.nan, dtype=start.dtype, device=start.device),
    )
