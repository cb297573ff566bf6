"""Per-point Jacobian contractions of consecutive chords, for Gauss-Newton models of polylines.

For ``c`` polylines of ``K`` points each, with embeddings ``h_p`` and Jacobians ``J_p`` (forward
mode, ``d`` tangents per point), the chords ``r_q = h_{q+1} - h_q`` and their Gauss-Newton
models need only ``J_p^T J_p``, ``J_q^T J_{q+1}``, ``J_q^T r_q`` and ``J_{q+1}^T r_q``: each is
one pass over the tangents in the model's dtype, on the flat point axis (the pairs that
straddle two curves are computed and dropped), cast to float64 afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from geometry._checks import Embed
from geometry.metric import embed_and_tangents

__all__ = ["ChordContractions", "chord_contractions", "consecutive"]


@dataclass
class ChordContractions:
    """Contractions of ``c`` polylines of ``K`` points (float64).

    Attributes:
        gram: ``(c, K, d, d)`` ``J_p^T J_p``.
        cross: ``(c, K - 1, d, d)`` ``J_q^T J_{q+1}``.
        lo: ``(c, K - 1, d)`` ``J_q^T r_q``.
        hi: ``(c, K - 1, d)`` ``J_{q+1}^T r_q``.
        chords: ``(c, K - 1)`` ``||r_q||``.
        h_norms: ``(c,)`` ``sum_p ||h_p||`` (the scale of the chords' roundoff).
        eps: machine epsilon of the model's dtype.
    """

    gram: Tensor
    cross: Tensor
    lo: Tensor
    hi: Tensor
    chords: Tensor
    h_norms: Tensor
    eps: float


def consecutive(x: Tensor, c: int, K: int) -> Tensor:
    """Values ``(c K - 1, ...)`` of consecutive points on the flat axis of ``c`` curves of ``K``
    points each -> ``(c, K - 1, ...)`` (the pairs that straddle two curves dropped)."""
    x = torch.cat([x, x[-1:]])  # (c K, ...)
    return x.reshape(c, K, *x.shape[1:])[:, :-1]


def chord_contractions(
    embed: Embed, points: Tensor, max_points: int | None = None
) -> ChordContractions:
    """:class:`ChordContractions` of the polylines ``points (c, K, d)``.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        points: ``(c, K, d)`` polylines.
        max_points: most points per forward-mode pass (``None``: one pass). Longer point axes
            are read in windows that share their boundary point, so that a pass's tangents
            (``d`` rows of ``D'`` values per point) stay cache-sized.
    """
    c, K, d = points.shape
    flat = points.reshape(c * K, d)
    P = flat.shape[0]
    width = max(2, P if max_points is None else max_points)
    parts: list[tuple[Tensor, ...]] = []
    for s in range(0, max(P - 1, 1), width - 1):
        h, T = embed_and_tangents(embed, flat[s : s + width])  # (p, D'), (d, p, D')
        r = h[1:] - h[:-1]  # (p - 1, D') chords (and straddling differences)
        first = 0 if s == 0 else 1  # the shared boundary point is counted once
        parts.append((
            torch.einsum("apD,bpD->pab", T[:, first:], T[:, first:]),
            torch.einsum("apD,bpD->pab", T[:, :-1], T[:, 1:]),
            torch.einsum("apD,pD->pa", T[:, :-1], r),
            torch.einsum("apD,pD->pa", T[:, 1:], r),
            r.norm(dim=1),
            h[first:].norm(dim=1),
        ))  # fmt: skip
    gram, cross, lo, hi, chords, h_norms = (torch.cat(x).double() for x in zip(*parts))
    return ChordContractions(
        gram=gram.reshape(c, K, d, d),
        cross=consecutive(cross, c, K),
        lo=consecutive(lo, c, K),
        hi=consecutive(hi, c, K),
        chords=consecutive(chords, c, K),
        h_norms=h_norms.reshape(c, K).sum(dim=1),
        eps=float(torch.finfo(flat.dtype).eps),
    )
