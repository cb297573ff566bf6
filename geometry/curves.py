"""Discrete curves in latent space: lengths, energies, construction and resampling.

A curve is a tensor of ``N`` nodes, ``(B, N, d)`` for ``B`` curves, read as the piecewise-linear
path through its nodes with the curve parameter ``t`` in ``[0, 1]`` and node ``i`` at
``t_i = i / (N - 1)``. Lengths and energies are finite differences of the embedding ``h``:

* chord length ``sum_i ||h(c_{i+1}) - h(c_i)||`` (:func:`chord_length`), what the solvers
  optimize,
* energy ``E = (N - 1) * sum_i ||h(c_{i+1}) - h(c_i)||^2``, the Riemann sum of
  ``int_0^1 ||d/dt h(c(t))||^2 dt`` with ``dt = 1 / (N - 1)``.

With this normalization ``E >= L^2`` (Cauchy-Schwarz), with equality exactly when all segments
have the same length in the embedding (constant speed).

A chord sum undercounts: the image ``h(c(t))`` of a straight latent segment is a curve, longer
than the chord between its end points. The *length of the polyline* itself, the integral of
``sqrt(c'(t)^T M(c(t)) c'(t))`` along the latent segments, is what :func:`curve_length` and
:func:`measure_curve_lengths` report: every segment is bisected adaptively until the chord sum of
its pieces has converged to a relative tolerance ``rtol`` (see :func:`measure_curve_lengths` for
the test and the error estimate). Inputs are never modified in place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from geometry._checks import Embed, check_curves, check_points, check_positive_int, embed_flat

#: geometric grading levels towards the ends of segments cut into several pieces
_GRADING_LEVELS = 8
#: most embedded numbers (pieces x D') refined at once; beyond, a batch is measured in halves
_MAX_ACTIVE_ELEMENTS = 2**26

__all__ = [
    "CurveLengths",
    "segment_lengths",
    "chord_length",
    "curve_length",
    "measure_curve_lengths",
    "curve_energy",
    "straight_lines",
    "subdivide_curves",
    "resample_curves",
    "constant_speed_curves",
]


def _embed_curves(embed: Embed, curves: Tensor, chunk_size: int | None) -> Tensor:
    """Embed every node: ``(B, N, d) -> (B, N, D')``."""
    B, N, d = curves.shape
    flat = curves.reshape(B * N, d)  # (B*N, d), a view or a copy, never written to
    if chunk_size is None or chunk_size >= B * N:
        h = embed_flat(embed, flat)
    else:
        h = torch.cat([embed_flat(embed, part) for part in flat.split(chunk_size)])
    return h.reshape(B, N, h.shape[1])  # (B, N, D')


def segment_lengths(embed: Embed, curves: Tensor, chunk_size: int | None = None) -> Tensor:
    """Embedded lengths of the segments between consecutive nodes.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        curves: ``(B, N, d)``.
        chunk_size: evaluate ``embed`` on at most this many points at once (``None``: all).

    Returns:
        ``(B, N - 1)`` tensor of ``||h(c_{i+1}) - h(c_i)||``; differentiable.
    """
    check_curves(curves)
    h = _embed_curves(embed, curves, chunk_size)  # (B, N, D')
    return (h[:, 1:] - h[:, :-1]).norm(dim=2)  # (B, N-1)


def chord_length(embed: Embed, curves: Tensor, chunk_size: int | None = None) -> Tensor:
    """Chord sum ``sum_i ||h(c_{i+1}) - h(c_i)||`` on the nodes only (a lower bound).

    This is the discrete length that energy-minimizing solvers see; it undercounts the length of
    the polyline (see :func:`curve_length`) by whole percents when the nodes are coarse.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        curves: ``(B, N, d)``, N >= 2; not modified.
        chunk_size: evaluate ``embed`` on at most this many points at once (``None``: all).

    Returns:
        ``(B,)`` chord sums; differentiable with respect to ``curves``.
    """
    return segment_lengths(embed, curves, chunk_size).sum(dim=1)


@dataclass
class CurveLengths:
    """Output of :func:`measure_curve_lengths` (batch-first).

    Attributes:
        lengths: ``(B,)`` Riemannian lengths of the polylines (chord sums of the converged
            subdivision; a lower bound of the exact length up to roundoff).
        errors: ``(B,)`` estimated absolute error: the sum, over the accepted pieces, of the
            length gained by their last bisection. For smooth curves the remaining error is
            about a third of it; ``errors <= rtol * lengths`` when ``converged``.
        segment_lengths: ``(B, N - 1)`` converged length of every latent segment.
        converged: ``(B,)`` bool; every piece met the tolerance before ``max_depth``.
        pieces: ``(B, N - 1)`` int64, number of pieces each segment was measured with.
        rtol: the relative tolerance used.
        evaluations: number of points pushed through ``embed`` (nodes included).
    """

    lengths: Tensor
    errors: Tensor
    segment_lengths: Tensor
    converged: Tensor
    pieces: Tensor
    rtol: float
    evaluations: int


def measure_curve_lengths(
    embed: Embed,
    curves: Tensor,
    *,
    rtol: float = 1e-3,
    resolution: int = 64,
    max_piece_length: float | None = None,
    min_depth: int = 1,
    max_depth: int = 14,
    chunk_size: int | None = 8192,
) -> CurveLengths:
    """Riemannian length of each polyline, measured to a relative tolerance.

    Each curve is first cut into pieces no longer (in latent Euclidean length) than
    ``1 / resolution`` of its latent length and than ``max_piece_length``, at least one per
    segment; long segments (cut into 8 pieces or more) also get points graded geometrically
    towards both ends (down to ``2**-8`` of a piece), so that features next to a node, such as
    the data a curve to a far point leaves, are seen at every scale. Then every piece
    ``[t0, t1]`` is bisected at its midpoint ``tm``; the gain
    ``||h(tm) - h(t0)|| + ||h(t1) - h(tm)|| - ||h(t1) - h(t0)||`` (>= 0, triangle inequality)
    is compared with ``rtol / 4 * max(piece length, L * w)``, where ``L`` is the running length
    estimate of its curve and ``w`` the piece's share of the curve parameter. A piece is accepted
    with its bisected length when its gain and its parent's gain (against four times that
    threshold, the ratio of chord errors one halving apart) are small, after at least
    ``min_depth`` bisections; the others are split again, up to ``max_depth`` levels. The
    accepted gains add up to at most ``rtol / 2 * L``: that sum is the reported error estimate.
    Work is batched over all pieces of all curves, so smooth stretches cost a few evaluations
    per piece and only pieces that cross a steep region (a variance wall) are refined further.

    A sampled measurement cannot see a feature narrower than its initial pieces when no sample
    falls on it: ``resolution`` and ``max_piece_length`` set that scale, and the tolerance holds
    for curves whose metric is resolved at it.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        curves: ``(B, N, d)`` polylines, N >= 2; not modified.
        rtol: relative tolerance of the length (> 0).
        resolution: the initial pieces are at most ``1 / resolution`` of each curve's latent
            length (>= 1).
        max_piece_length: optional bound on the latent length of the initial pieces.
        min_depth: bisection levels applied to every segment before the test (>= 0).
        max_depth: most bisection levels of any piece (>= ``min_depth``, <= 30).
        chunk_size: at most this many points per ``embed`` call (``None``: all at once).

    Returns:
        A :class:`CurveLengths`. Under grad mode, when ``curves`` requires grad or ``embed`` has
        parameters that do, ``lengths`` and ``segment_lengths`` are differentiable: the accepted
        subdivision is re-evaluated in one batched pass with autograd.

    Raises:
        ValueError: on malformed curves or options, or when ``embed`` gives non-finite values.
    """
    check_curves(curves)
    if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    check_positive_int(resolution, "resolution")
    if max_piece_length is not None and not (max_piece_length > 0):
        raise ValueError(f"max_piece_length must be > 0 or None, got {max_piece_length!r}")
    check_positive_int(min_depth, "min_depth", minimum=0)
    check_positive_int(max_depth, "max_depth", minimum=max(1, min_depth))
    if max_depth > 30:
        raise ValueError(f"max_depth must be <= 30, got {max_depth}")
    if chunk_size is not None:
        check_positive_int(chunk_size, "chunk_size")
    B, N, _ = curves.shape
    n_seg = N - 1
    if B == 0:
        empty = curves.new_zeros(0)
        return CurveLengths(
            lengths=empty,
            errors=empty,
            segment_lengths=curves.new_zeros(0, n_seg),
            converged=torch.ones(0, dtype=torch.bool, device=curves.device),
            pieces=torch.zeros(0, n_seg, dtype=torch.long, device=curves.device),
            rtol=float(rtol),
            evaluations=0,
        )

    def measure(c: Tensor) -> CurveLengths:
        # a batch whose pieces would not fit in one pass is measured in halves (recursively),
        # so the result does not depend on the batch size
        out = _measure(
            embed, c, rtol, resolution, max_piece_length, min_depth, max_depth, chunk_size
        )
        if out is not None:
            return out
        half = c.shape[0] // 2
        return _concatenate(measure(c[:half]), measure(c[half:]))

    return measure(curves)


def _concatenate(a: CurveLengths, b: CurveLengths) -> CurveLengths:
    """The measurements of two batches as one (``a``'s curves first)."""
    return CurveLengths(
        lengths=torch.cat([a.lengths, b.lengths]),
        errors=torch.cat([a.errors, b.errors]),
        segment_lengths=torch.cat([a.segment_lengths, b.segment_lengths]),
        converged=torch.cat([a.converged, b.converged]),
        pieces=torch.cat([a.pieces, b.pieces]),
        rtol=a.rtol,
        evaluations=a.evaluations + b.evaluations,
    )


def _measure(
    embed: Embed,
    curves: Tensor,
    rtol: float,
    resolution: int,
    max_piece_length: float | None,
    min_depth: int,
    max_depth: int,
    chunk_size: int | None,
) -> CurveLengths | None:
    """One batched measurement (see :func:`measure_curve_lengths`); None when ``B > 1`` and the
    pieces in flight would exceed ``_MAX_ACTIVE_ELEMENTS`` embedded numbers (a quarter of it for
    the initial pieces, which refinement multiplies): the caller splits the batch. A single
    curve past the bound has its unrefined pieces accepted and is flagged unconverged."""
    B, N, d = curves.shape
    n_seg = N - 1
    x = curves.detach()

    def run(points: Tensor) -> Tensor:
        if chunk_size is None or points.shape[0] <= chunk_size:
            out = embed_flat(embed, points)
        else:
            out = torch.cat([embed_flat(embed, p) for p in points.split(chunk_size)])
        # one reduction instead of a mask of every value; a non-finite value makes the sum
        # non-finite, and the rare overflowing sum of finite values is cleared by the mask
        if not bool(torch.isfinite(out.sum())) and not bool(torch.isfinite(out).all()):
            raise ValueError(
                "embed gives non-finite values on the curves (e.g. at latent point "
                f"{points[(~torch.isfinite(out)).any(dim=1)][0].tolist()})"
            )
        return out

    f64 = torch.float64
    with torch.no_grad():
        h_nodes = run(x.reshape(B * N, d))
        h_nodes = h_nodes.reshape(B, N, h_nodes.shape[1])  # (B, N, D')
        evaluations = B * N
        start, step = x[:, :-1].reshape(-1, d), (x[:, 1:] - x[:, :-1]).reshape(-1, d)  # (S, d)
        # pieces: segment index, parameter interval [t0, t1] in the segment, end embeddings
        # initial pieces: no longer than 1/resolution of the curve's latent length (and than
        # max_piece_length), at least one per segment
        seg_latent = step.norm(dim=1).to(f64)  # (S,)
        piece = seg_latent.view(B, n_seg).sum(dim=1) / resolution  # (B,)
        if max_piece_length is not None:
            piece = piece.clamp_max(max_piece_length)
        piece = piece.repeat_interleave(n_seg).clamp_min(torch.finfo(f64).tiny)  # (S,)
        per_seg = torch.ceil(seg_latent / piece).clamp(1, 2**20).long()  # (S,)
        n_all = B * n_seg
        seg = torch.repeat_interleave(torch.arange(n_all, device=x.device), per_seg)  # (I,)
        first = torch.cumsum(per_seg, 0) - per_seg  # (S,) index of each segment's first piece
        j = torch.arange(seg.numel(), device=x.device) - first[seg]  # (I,) index in segment
        t_left = (j / per_seg[seg]).to(f64)  # left ends of the uniform pieces
        # long segments (cut into >= 8 pieces) also get points graded geometrically towards
        # both ends (down to 2**-GRADING_LEVELS of a piece): features next to a node (a curve
        # leaving the data for a far point) are seen at every scale
        long = (per_seg >= 8).nonzero().flatten()
        if long.numel():
            k = torch.arange(1, _GRADING_LEVELS + 1, device=x.device, dtype=f64)
            frac = 2.0**-k / per_seg[long, None]  # (n_long, K)
            graded = torch.cat([frac, 1 - frac], dim=1)  # (n_long, 2K)
            seg = torch.cat([seg, long.repeat_interleave(graded.shape[1])])
            t_left = torch.cat([t_left, graded.reshape(-1)])
        order = torch.argsort(seg.to(f64) * 4 + t_left)
        seg, t_left = seg[order], t_left[order]
        last_piece = torch.ones_like(seg, dtype=torch.bool)
        last_piece[:-1] = seg[1:] != seg[:-1]
        t_right = torch.ones_like(t_left)
        t_right[:-1] = torch.where(last_piece[:-1], 1.0, t_left[1:])
        t0, t1 = t_left.to(x.dtype), t_right.to(x.dtype)
        if B > 1 and 4 * seg.numel() * h_nodes.shape[2] > _MAX_ACTIVE_ELEMENTS:
            return None
        h0 = h_nodes[:, :-1].reshape(n_all, -1)[seg]  # (I, D'), right where t0 == 0
        inner = t_left > 0
        if bool(inner.any()):
            h0[inner] = run(start[seg[inner]] + t0[inner, None] * step[seg[inner]])
            evaluations += int(inner.sum())
        h1 = torch.empty_like(h0)
        h1[:-1] = h0[1:]
        h1[last_piece] = h_nodes[:, 1:].reshape(n_all, -1)[seg[last_piece]]
        chord = (h1 - h0).norm(dim=1).to(f64)  # (I,)
        parent_ok = torch.zeros(seg.numel(), dtype=torch.bool, device=x.device)
        seg_len = torch.zeros(B * n_seg, dtype=f64, device=x.device)
        err = torch.zeros(B, dtype=f64, device=x.device)
        pieces = torch.zeros(B * n_seg, dtype=torch.long, device=x.device)
        ok = torch.ones(B, dtype=torch.bool, device=x.device)
        kept_t: list[Tensor] = []  # left ends of accepted pieces (for the autograd pass)
        kept_seg: list[Tensor] = []
        depth = 0
        while seg.numel():
            depth += 1
            tm = 0.5 * (t0 + t1)
            hm = run(start[seg] + tm[:, None] * step[seg])  # (I, D')
            evaluations += int(seg.numel())
            left, right = (hm - h0).norm(dim=1).to(f64), (h1 - hm).norm(dim=1).to(f64)
            halves = left + right
            gain = (halves - chord).clamp_min(0)
            # roundoff of the three chords (float32 models): a gain below it is no signal
            scale = h0.norm(dim=1) + hm.norm(dim=1) + h1.norm(dim=1)
            noise = 16 * torch.finfo(h0.dtype).eps * scale.to(f64)
            curve = seg // n_seg
            # running estimate of each curve's length: accepted parts + current halves
            total = seg_len.view(B, n_seg).sum(dim=1).index_add(0, curve, halves)  # (B,)
            share = (t1 - t0).to(f64) / n_seg
            bound = torch.maximum(halves, total[curve] * share)
            small = gain <= 0.25 * rtol * bound + noise
            # accept only in the asymptotic regime: the parent's gain was small too
            accept = small & parent_ok
            if depth < min_depth:
                accept = torch.zeros_like(accept)
            # bounded memory: past 2**26 embedded numbers in flight, a batch is split; a single
            # curve stops refining (flagged)
            crowded = seg.numel() * h0.shape[1] > _MAX_ACTIVE_ELEMENTS
            if crowded and B > 1:
                return None
            last = depth >= max_depth or crowded
            if last:
                ok[curve[~accept]] = False
                accept = torch.ones_like(accept)
            if bool(accept.any()):
                a_seg = seg[accept]
                seg_len.index_add_(0, a_seg, halves[accept])
                err.index_add_(0, curve[accept], gain[accept])
                pieces.index_add_(0, a_seg, torch.full_like(a_seg, 2))
                kept_seg += [a_seg, a_seg]
                kept_t += [t0[accept], tm[accept]]
            split = ~accept
            if not bool(split.any()):
                break
            s_seg, s_t0, s_tm, s_t1 = seg[split], t0[split], tm[split], t1[split]
            s_h0, s_hm, s_h1 = h0[split], hm[split], h1[split]
            seg = torch.cat([s_seg, s_seg])
            t0, t1 = torch.cat([s_t0, s_tm]), torch.cat([s_tm, s_t1])
            h0, h1 = torch.cat([s_h0, s_hm]), torch.cat([s_hm, s_h1])
            chord = torch.cat([left[split], right[split]])
            # a halved piece of a smooth curve gains about a quarter of its parent's gain
            s_small = (gain <= rtol * bound + noise)[split]
            parent_ok = torch.cat([s_small, s_small])

    seg_lengths = seg_len.view(B, n_seg)
    if _needs_grad(embed, curves) and B * n_seg > 0:
        seg_lengths = _differentiable_lengths(
            embed, curves, torch.cat(kept_seg), torch.cat(kept_t), chunk_size
        ).view(B, n_seg)
    else:
        seg_lengths = seg_lengths.to(curves.dtype)
    return CurveLengths(
        lengths=seg_lengths.sum(dim=1),
        errors=err.to(curves.dtype),
        segment_lengths=seg_lengths,
        converged=ok,
        pieces=pieces.view(B, n_seg),
        rtol=float(rtol),
        evaluations=evaluations,
    )


def _needs_grad(embed: Embed, curves: Tensor) -> bool:
    """Whether a length of ``curves`` through ``embed`` should carry an autograd graph."""
    if not torch.is_grad_enabled():
        return False
    if curves.requires_grad:
        return True
    owner = getattr(embed, "__self__", embed)  # a bound method such as ``model.embed``
    params = owner.parameters() if isinstance(owner, torch.nn.Module) else ()
    return any(p.requires_grad for p in params)


def _differentiable_lengths(
    embed: Embed, curves: Tensor, seg: Tensor, t_left: Tensor, chunk_size: int | None
) -> Tensor:
    """Segment lengths ``(S,)`` on a fixed subdivision, with autograd.

    Args:
        curves: ``(B, N, d)``.
        seg: ``(P,)`` segment index of each accepted piece; ``t_left``: ``(P,)`` its left end.
    """
    B, N, d = curves.shape
    order = torch.argsort(seg * 4.0 + t_left.double(), stable=True)  # by segment, then by t
    seg, t_left = seg[order], t_left[order]
    n_seg = N - 1
    a = curves[:, :-1].reshape(-1, d)  # (S, d)
    b = curves[:, 1:].reshape(-1, d)
    pts = a[seg] + t_left[:, None] * (b - a)[seg]  # (P, d) left ends of all pieces
    # each piece's right end is the next piece's left end in its segment, or the segment's end
    is_last = torch.ones_like(seg, dtype=torch.bool)
    is_last[:-1] = seg[1:] != seg[:-1]
    flat = torch.cat([pts, b])  # (P + S, d)
    if chunk_size is None or flat.shape[0] <= chunk_size:
        h = embed_flat(embed, flat)
    else:
        h = torch.cat([embed_flat(embed, p) for p in flat.split(chunk_size)])
    h_left, h_end = h[: pts.shape[0]], h[pts.shape[0] :]
    idx = torch.arange(pts.shape[0], device=curves.device)
    right_idx = torch.where(is_last, idx, idx + 1).clamp_max(pts.shape[0] - 1)
    h_right = torch.where(is_last[:, None], h_end[seg], h_left[right_idx])
    lengths = (h_right - h_left).norm(dim=1)  # (P,)
    return lengths.new_zeros(B * n_seg).index_add(0, seg, lengths)


def curve_length(
    embed: Embed, curves: Tensor, chunk_size: int | None = None, *, rtol: float = 1e-3
) -> Tensor:
    """Riemannian length of each polyline, converged to ``rtol`` (see
    :func:`measure_curve_lengths`; for the chord sum on the nodes use :func:`chord_length`).

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        curves: ``(B, N, d)``, N >= 2; not modified.
        chunk_size: evaluate ``embed`` on at most this many points at once (``None``: all).
        rtol: relative tolerance of the measurement.

    Returns:
        ``(B,)`` lengths; differentiable with respect to ``curves`` (and the parameters of
        ``embed``) under grad mode.
    """
    return measure_curve_lengths(embed, curves, rtol=rtol, chunk_size=chunk_size).lengths


def curve_energy(embed: Embed, curves: Tensor, chunk_size: int | None = None) -> Tensor:
    """Discrete energy ``(N - 1) * sum_i ||h(c_{i+1}) - h(c_i)||^2`` (curve parameter in [0, 1]).

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        curves: ``(B, N, d)``, N >= 2; not modified.
        chunk_size: evaluate ``embed`` on at most this many points at once (``None``: all).

    Returns:
        ``(B,)`` energies; ``energy >= length**2`` with equality for constant-speed curves.
    """
    check_curves(curves)
    N = curves.shape[1]
    h = _embed_curves(embed, curves, chunk_size)  # (B, N, D')
    return (N - 1) * (h[:, 1:] - h[:, :-1]).pow(2).sum(dim=(1, 2))


def straight_lines(z0: Tensor, z1: Tensor, num_nodes: int) -> Tensor:
    """Straight latent lines with ``num_nodes`` equally spaced nodes.

    Args:
        z0: start points ``(B, d)``.
        z1: end points ``(B, d)``.
        num_nodes: nodes per curve, >= 2.

    Returns:
        ``(B, num_nodes, d)``; first node ``z0``, last node ``z1`` exactly.
    """
    check_points(z0, "z0")
    check_points(z1, "z1", dim=z0.shape[1])
    if z0.shape[0] != z1.shape[0]:
        raise ValueError(
            f"z0 and z1 must hold the same number of points: {z0.shape[0]} vs {z1.shape[0]}"
        )
    check_positive_int(num_nodes, "num_nodes", minimum=2)
    t = torch.linspace(0, 1, num_nodes, dtype=z0.dtype, device=z0.device)[
        None, :, None
    ]  # (1, N, 1)
    curves = z0[:, None] + t * (z1 - z0)[:, None]  # (B, N, d)
    curves[:, -1] = z1
    return curves


def subdivide_curves(curves: Tensor, num_sub: int) -> Tensor:
    """Insert ``num_sub - 1`` equally spaced points into every segment (the polyline is unchanged).

    Args:
        curves: ``(B, N, d)``.
        num_sub: sub-segments per segment, >= 1.

    Returns:
        ``(B, (N - 1) * num_sub + 1, d)``.
    """
    check_curves(curves)
    check_positive_int(num_sub, "num_sub")
    if num_sub == 1:
        return curves.clone()
    B, N, d = curves.shape
    s = torch.arange(num_sub, dtype=curves.dtype, device=curves.device) / num_sub  # (num_sub,)
    start, step = curves[:, :-1], curves[:, 1:] - curves[:, :-1]  # (B, N-1, d) each
    fine = start[:, :, None] + s[None, None, :, None] * step[:, :, None]  # (B, N-1, num_sub, d)
    return torch.cat([fine.reshape(B, (N - 1) * num_sub, d), curves[:, -1:]], dim=1)


def resample_curves(curves: Tensor, num_nodes: int, weights: Tensor | None = None) -> Tensor:
    """Resample polylines to ``num_nodes`` nodes equally spaced in arc length.

    Args:
        curves: ``(B, M, d)`` polylines (repeated nodes, i.e. zero-length segments, are fine).
        num_nodes: nodes of the output, >= 2.
        weights: optional ``(B, M - 1)`` non-negative segment lengths defining the arc length
            (e.g. Riemannian segment lengths); default: Euclidean latent segment lengths.

    Returns:
        ``(B, num_nodes, d)`` with the same end points; curves of zero total length are returned
        as constant curves.
    """
    check_curves(curves)
    check_positive_int(num_nodes, "num_nodes", minimum=2)
    B, M, d = curves.shape
    if weights is None:
        weights = (curves[:, 1:] - curves[:, :-1]).norm(dim=2)  # (B, M-1)
    if weights.shape != (B, M - 1):
        raise ValueError(f"weights must have shape {(B, M - 1)}, got {tuple(weights.shape)}")
    weights = weights.detach().to(curves.dtype).clamp_min(0)
    s = torch.cat([weights.new_zeros(B, 1), weights.cumsum(dim=1)], dim=1)  # (B, M)
    total = s[:, -1:]  # (B, 1)
    t = torch.linspace(0, 1, num_nodes, dtype=curves.dtype, device=curves.device)
    target = t[None, :] * total  # (B, n)
    idx = torch.searchsorted(s.contiguous(), target.contiguous(), right=True) - 1  # (B, n)
    idx = idx.clamp(0, M - 2)
    s_lo = s.gather(1, idx)  # (B, n)
    seg = weights.gather(1, idx)  # (B, n)
    frac = torch.where(seg > 0, (target - s_lo) / seg.clamp_min(torch.finfo(curves.dtype).tiny), 0)
    frac = frac.clamp(0, 1)[..., None]  # (B, n, 1)
    gi = idx[..., None].expand(B, num_nodes, d)
    lo = curves.gather(1, gi)  # (B, n, d)
    hi = curves.gather(1, gi + 1)  # (B, n, d)
    out = lo + frac * (hi - lo)  # (B, n, d)
    out[:, 0] = curves[:, 0]
    out[:, -1] = curves[:, -1]
    return out


def constant_speed_curves(
    embed: Embed,
    curves: Tensor,
    num_nodes: int | None = None,
    num_sub: int = 4,
    chunk_size: int | None = None,
) -> Tensor:
    """Reparametrise polylines to (approximately) constant Riemannian speed.

    The polyline is subdivided ``num_sub`` times, the embedded lengths of the sub-segments define
    the arc length, and ``num_nodes`` nodes are placed at equal Riemannian arc length.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        curves: ``(B, M, d)``.
        num_nodes: output nodes (default ``M``).
        num_sub: sub-segments per segment used to measure the arc length.
        chunk_size: evaluate ``embed`` on at most this many points at once.

    Returns:
        ``(B, num_nodes, d)``, detached.
    """
    check_curves(curves)
    num_nodes = curves.shape[1] if num_nodes is None else num_nodes
    with torch.no_grad():
        fine = subdivide_curves(curves, num_sub)  # (B, (M-1)*num_sub+1, d)
        w = segment_lengths(embed, fine, chunk_size)  # (B, (M-1)*num_sub)
        return resample_curves(fine, num_nodes, weights=w)
