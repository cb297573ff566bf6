"""How the geodesic benchmark measures every curve: the same fine length for every method."""

from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import Tensor

import geometry as G
import geometry.curves as geometry_curves

__all__ = ["chord_sum", "fine_lengths"]


def chord_sum(embed: Any, curves: Tensor) -> Tensor:
    """``sum_i ||h(c_{i+1}) - h(c_i)||`` on the given points only (float64, no grad).

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        curves: ``(B, N, d)`` polylines.

    Returns:
        ``(B,)`` float64 chord sums.
    """
    with torch.no_grad():
        return G.segment_lengths(embed, curves, chunk_size=8192).sum(dim=1).double()


def fine_lengths(embed: Any, curves: Tensor, args: argparse.Namespace) -> tuple[Tensor, str]:
    """Finely measured length ``(B,)`` of polylines ``(B, N, d)``, and how it was measured.

    ``geometry.curves.measure_curve_lengths`` (adaptive, ``--measure-rtol``) when it exists,
    else every segment split ``--fine-substeps`` times.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        curves: ``(B, N, d)`` polylines.
        args: the benchmark's options (``measure_rtol``, ``fine_substeps``, ``fixed_measure``).

    Returns:
        ``(B,)`` float64 lengths, and one line saying how they were measured.
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
