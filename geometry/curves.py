"""Discrete curves in latent space: lengths, energies, construction and resampling.

A curve is a tensor of ``N`` nodes, ``(B, N, d)`` for ``B`` curves, read as the piecewise-linear
path through its nodes with the curve parameter ``t`` in ``[0, 1]`` and node ``i`` at
``t_i = i / (N - 1)``. Lengths and energies are finite differences of the embedding ``h``:

* length ``L = sum_i ||h(c_{i+1}) - h(c_i)||``,
* energy ``E = (N - 1) * sum_i ||h(c_{i+1}) - h(c_i)||^2``, the Riemann sum of
  ``int_0^1 ||d/dt h(c(t))||^2 dt`` with ``dt = 1 / (N - 1)``.

With this normalisation ``E >= L^2`` (Cauchy-Schwarz), with equality exactly when all segments
have the same length in the embedding (constant speed). Inputs are never modified in place.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geometry._checks import Embed, check_curves, check_points, check_positive_int, embed_flat

__all__ = [
    "segment_lengths",
    "curve_length",
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
    return h.reshape(B, N, -1)  # (B, N, D')


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


def curve_length(embed: Embed, curves: Tensor, chunk_size: int | None = None) -> Tensor:
    """Discrete Riemannian length ``sum_i ||h(c_{i+1}) - h(c_i)||`` of each curve.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        curves: ``(B, N, d)``, N >= 2; not modified.
        chunk_size: evaluate ``embed`` on at most this many points at once (``None``: all).

    Returns:
        ``(B,)`` lengths; differentiable with respect to ``curves``.
    """
    return segment_lengths(embed, curves, chunk_size).sum(dim=1)


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


def straight_lines(z0: Tensor, z1: Tensor, n_nodes: int) -> Tensor:
    """Straight latent lines with ``n_nodes`` equally spaced nodes.

    Args:
        z0: start points ``(B, d)``.
        z1: end points ``(B, d)``.
        n_nodes: nodes per curve, >= 2.

    Returns:
        ``(B, n_nodes, d)``; first node ``z0``, last node ``z1`` exactly.
    """
    check_points(z0, "z0")
    check_points(z1, "z1", dim=z0.shape[1])
    if z0.shape[0] != z1.shape[0]:
        raise ValueError(
            f"z0 and z1 must hold the same number of points: {z0.shape[0]} vs {z1.shape[0]}"
        )
    check_positive_int(n_nodes, "n_nodes", minimum=2)
    t = torch.linspace(0, 1, n_nodes, dtype=z0.dtype, device=z0.device)[None, :, None]  # (1, N, 1)
    curves = z0[:, None] + t * (z1 - z0)[:, None]  # (B, N, d)
    curves[:, -1] = z1
    return curves


def subdivide_curves(curves: Tensor, n_sub: int) -> Tensor:
    """Insert ``n_sub - 1`` equally spaced points into every segment (the polyline is unchanged).

    Args:
        curves: ``(B, N, d)``.
        n_sub: sub-segments per segment, >= 1.

    Returns:
        ``(B, (N - 1) * n_sub + 1, d)``.
    """
    check_curves(curves)
    check_positive_int(n_sub, "n_sub")
    if n_sub == 1:
        return curves.clone()
    B, N, d = curves.shape
    s = torch.arange(n_sub, dtype=curves.dtype, device=curves.device) / n_sub  # (n_sub,)
    start, step = curves[:, :-1], curves[:, 1:] - curves[:, :-1]  # (B, N-1, d) each
    fine = start[:, :, None] + s[None, None, :, None] * step[:, :, None]  # (B, N-1, n_sub, d)
    return torch.cat([fine.reshape(B, (N - 1) * n_sub, d), curves[:, -1:]], dim=1)


def resample_curves(curves: Tensor, n_nodes: int, weights: Tensor | None = None) -> Tensor:
    """Resample polylines to ``n_nodes`` nodes equally spaced in arc length.

    Args:
        curves: ``(B, M, d)`` polylines (repeated nodes, i.e. zero-length segments, are fine).
        n_nodes: nodes of the output, >= 2.
        weights: optional ``(B, M - 1)`` non-negative segment lengths defining the arc length
            (e.g. Riemannian segment lengths); default: Euclidean latent segment lengths.

    Returns:
        ``(B, n_nodes, d)`` with the same end points; curves of zero total length are returned
        as constant curves.
    """
    check_curves(curves)
    check_positive_int(n_nodes, "n_nodes", minimum=2)
    B, M, d = curves.shape
    if weights is None:
        weights = (curves[:, 1:] - curves[:, :-1]).norm(dim=2)  # (B, M-1)
    if weights.shape != (B, M - 1):
        raise ValueError(f"weights must have shape {(B, M - 1)}, got {tuple(weights.shape)}")
    weights = weights.detach().to(curves.dtype).clamp_min(0)
    s = torch.cat([weights.new_zeros(B, 1), weights.cumsum(dim=1)], dim=1)  # (B, M)
    total = s[:, -1:]  # (B, 1)
    t = torch.linspace(0, 1, n_nodes, dtype=curves.dtype, device=curves.device)
    target = t[None, :] * total  # (B, n)
    idx = torch.searchsorted(s.contiguous(), target.contiguous(), right=True) - 1  # (B, n)
    idx = idx.clamp(0, M - 2)
    s_lo = s.gather(1, idx)  # (B, n)
    seg = weights.gather(1, idx)  # (B, n)
    frac = torch.where(seg > 0, (target - s_lo) / seg.clamp_min(torch.finfo(curves.dtype).tiny), 0)
    frac = frac.clamp(0, 1)[..., None]  # (B, n, 1)
    gi = idx[..., None].expand(B, n_nodes, d)
    lo = curves.gather(1, gi)  # (B, n, d)
    hi = curves.gather(1, gi + 1)  # (B, n, d)
    out = lo + frac * (hi - lo)  # (B, n, d)
    out[:, 0] = curves[:, 0]
    out[:, -1] = curves[:, -1]
    return out


def constant_speed_curves(
    embed: Embed,
    curves: Tensor,
    n_nodes: int | None = None,
    n_sub: int = 4,
    chunk_size: int | None = None,
) -> Tensor:
    """Reparametrise polylines to (approximately) constant Riemannian speed.

    The polyline is subdivided ``n_sub`` times, the embedded lengths of the sub-segments define
    the arc length, and ``n_nodes`` nodes are placed at equal Riemannian arc length.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        curves: ``(B, M, d)``.
        n_nodes: output nodes (default ``M``).
        n_sub: sub-segments per segment used to measure the arc length.
        chunk_size: evaluate ``embed`` on at most this many points at once.

    Returns:
        ``(B, n_nodes, d)``, detached.
    """
    check_curves(curves)
    n_nodes = curves.shape[1] if n_nodes is None else n_nodes
    with torch.no_grad():
        fine = subdivide_curves(curves, n_sub)  # (B, (M-1)*n_sub+1, d)
        w = segment_lengths(embed, fine, chunk_size)  # (B, (M-1)*n_sub)
        return resample_curves(fine, n_nodes, weights=w)
