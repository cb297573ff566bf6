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


def chord_contractions(embed: Embed, points: Tensor) -> ChordContractions:
    """:class:`ChordContractions` of the polylines ``points (c, K, d)``, one forward-mode pass."""
    c, K, d = points.shape
    h, T = embed_and_tangents(embed, points.reshape(c * K, d))  # (P, D'), (d, P, D')
    r = h[1:] - h[:-1]  # (P - 1, D') chords (and straddling differences)
    return ChordContractions(
        gram=torch.einsum("apD,bpD->pab", T, T).double().reshape(c, K, d, d),
        cross=consecutive(torch.einsum("apD,bpD->pab", T[:, :-1], T[:, 1:]).double(), c, K),
        lo=consecutive(torch.einsum("apD,pD->pa", T[:, :-1], r).double(), c, K),
        hi=consecutive(torch.einsum("apD,pD->pa", T[:, 1:], r).double(), c, K),
        chords=consecutive(r.norm(dim=1).double(), c, K),
        h_norms=h.norm(dim=1).double().reshape(c, K).sum(dim=1),
        eps=float(torch.finfo(h.dtype).eps),
    )
