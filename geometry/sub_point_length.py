"""The length of a polyline read through ``m`` sub-points per segment, for Levenberg-Marquardt.

A polyline of ``N`` nodes ``c_0 .. c_{N-1}`` is read through ``m`` equally spaced sub-points per
segment (linear in its two nodes); its length at that resolution is

    ``L = sum_i lambda_i``,  ``lambda_i = sum_s ||h(p_{i,s+1}) - h(p_{i,s})||``

(with ``m = 1`` the classical chord sum on the nodes, which cuts corners through variance
walls). Each sub-chord ``r_q = h(p_{q+1}) - h(p_q)`` depends on the two nodes of its segment
only. The model of ``L`` is, per segment, the Gauss-Newton model of ``lambda_i^2`` (sub-chord
Jacobians ``A_q`` projected orthogonally to ``r_q``, plus the rank-one term of
``grad lambda_i``) divided by ``2 lambda_i``: it has the exact gradient of ``L`` and is block
tridiagonal with ``d x d`` blocks. Jacobians come from forward mode (``d`` tangents per
sub-point, no backward pass). The same objective alone (:func:`sub_point_values`, forward passes
only) judges trial steps, and :func:`sub_point_length_hvp` gives its exact Hessian-vector
products (double backward) for truncated Newton steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from geometry._checks import Embed, embed_flat
from geometry.chord_contractions import chord_contractions
from geometry.polyline_lm import LMTerms, terms_by_chunks

__all__ = [
    "sub_point_gradient",
    "sub_point_length_hvp",
    "sub_point_length_terms",
    "sub_point_objective",
    "sub_point_values",
    "sub_points",
]


def sub_points(nodes: Tensor, m: int) -> Tensor:
    """``(b, N, d)`` nodes -> ``(b, (N - 1) m + 1, d)`` points, ``m`` per segment."""
    b, N, d = nodes.shape
    t = torch.arange(m, dtype=nodes.dtype, device=nodes.device) / m  # (m,)
    step = nodes[:, 1:] - nodes[:, :-1]  # (b, N-1, d)
    pts = nodes[:, :-1, None] + t[None, None, :, None] * step[:, :, None]  # (b, N-1, m, d)
    return torch.cat([pts.reshape(b, (N - 1) * m, d), nodes[:, -1:]], dim=1)


def _sub_weights(m: int, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Weights of a sub-chord's two points on the segment's first / second node, ``(m,)`` each:
    ``alpha_lo, alpha_hi`` (first node) and ``beta_lo, beta_hi`` (second node)."""
    s = torch.arange(m, dtype=like.dtype, device=like.device)
    return 1 - s / m, 1 - (s + 1) / m, s / m, (s + 1) / m


def _terms_chunk(
    embed: Embed, nodes: Tensor, m: int, energy: bool = False, max_points: int | None = None
) -> LMTerms:
    """LM terms for ``nodes (c, N, d)`` (end points included) in forward-mode passes of at
    most ``max_points`` points.

    The Jacobians ``J_p`` of the ``P = c K`` sub-points enter only through per-point
    contractions over ``D'`` (``J_p^T J_p``, ``J_p^T J_{p+1}``, ``J_p^T r``), each one pass over
    the tangents in the model's dtype on the flat point axis (pairs that straddle two curves
    are computed and dropped); every sub-chord block is then a small ``d x d`` combination.
    """
    c, N, d = nodes.shape
    # K = (N - 1) m + 1 points per curve
    cc = chord_contractions(embed, sub_points(nodes, m), max_points)
    tiny = torch.finfo(torch.float64).tiny
    # roundoff of the objective: every sub-chord is a difference of embeddings of size ||h||
    noise = 10 * cc.eps * cc.h_norms  # (c,)
    gram, cross, rl, rh, ell = cc.gram, cc.cross, cc.lo, cc.hi, cc.chords
    shape = (c, N - 1, m)
    ell = ell.reshape(shape)
    lam = ell.sum(dim=2)  # (c, N-1) measured segment lengths
    floor = 1e-8 * lam[..., None] / m + tiny
    inv_ell = 1 / ell.clamp_min(floor)  # (c, N-1, m)
    w = torch.where(lam[..., None] > 0, lam[..., None] * inv_ell, float(m))
    a_lo, a_hi, b_lo, b_hi = (s[:, None] for s in _sub_weights(m, gram))  # (m, 1) each
    p_lo = rl.reshape(*shape, d) * inv_ell[..., None]  # J_q^T u_q
    p_hi = rh.reshape(*shape, d) * inv_ell[..., None]  # J_{q+1}^T u_q
    pa = a_hi * p_hi - a_lo * p_lo  # (c, N-1, m, d): d ell_q / d c_i
    pb = b_hi * p_hi - b_lo * p_lo  # d ell_q / d c_{i+1}
    va, vb = pa.sum(dim=2), pb.sum(dim=2)  # (c, N-1, d): d lambda_i / d c_i, d c_{i+1}
    g_lo = gram[:, :-1].reshape(*shape, d, d)  # J_q^T J_q
    g_hi = gram[:, 1:].reshape(*shape, d, d)  # J_{q+1}^T J_{q+1}
    x = cross.reshape(*shape, d, d)
    x_sym = x + x.transpose(3, 4)
    a_lo, a_hi, b_lo, b_hi = (s[..., None] for s in (a_lo, a_hi, b_lo, b_hi))  # (m, 1, 1)
    AA = _gn_block(a_hi**2 * g_hi + a_lo**2 * g_lo - a_hi * a_lo * x_sym, pa, pa, va, va, w)
    BB = _gn_block(b_hi**2 * g_hi + b_lo**2 * g_lo - b_hi * b_lo * x_sym, pb, pb, vb, vb, w)
    inner = slice(1, -1)
    ab = a_hi * b_hi * g_hi + a_lo * b_lo * g_lo - a_hi * b_lo * x.transpose(3, 4) - a_lo * b_hi * x
    AB = _gn_block(
        ab[:, inner], pa[:, inner], pb[:, inner], va[:, inner], vb[:, inner], w[:, inner]
    )  # (c, N-3, d, d)
    # Objective: the length L = sum_i lambda_i. Each segment's block of lambda_i^2 divided by
    # 2 lambda_i is a model of lambda_i with the exact gradient v (Weiszfeld-like majoriser);
    # stored halved (the convention of _lm: model L + 2 g.x + x^T H x).
    if energy:  # (N - 1) sum_i lambda_i^2 and its Gauss-Newton model (halved)
        k, lv = N - 1, lam[..., None]
        return LMTerms(
            S=k * lam.pow(2).sum(dim=1),
            L=lam.sum(dim=1),
            g=k * ((lv * va)[:, 1:] + (lv * vb)[:, :-1]),
            diag=k * (AA[:, 1:] + BB[:, :-1]),
            off=k * AB,
            noise=noise * 2 * k * lam.max(dim=1).values,
        )
    inv = 0.5 / lam.clamp_min(1e-12 * lam.sum(dim=1, keepdim=True) + tiny)[..., None, None]
    return LMTerms(
        S=lam.sum(dim=1),
        L=lam.sum(dim=1),
        g=0.5 * (va[:, 1:] + vb[:, :-1]),
        diag=(AA * inv)[:, 1:] + (BB * inv)[:, :-1],
        off=AB * inv[:, 1:-1],
        noise=noise,
    )


def _gn_block(XY: Tensor, px: Tensor, py: Tensor, vx: Tensor, vy: Tensor, w: Tensor) -> Tensor:
    """Half the Gauss-Newton block of ``sum_i lambda_i^2`` between two nodes, per segment:
    ``lambda_i sum_q X_q^T (I - u_q u_q^T) Y_q / ell_q + v_x v_y^T``.

    Args:
        XY: ``(c, s, m, d, d)`` products ``X_q^T Y_q`` of the sub-chord Jacobians.
        px, py: ``(c, s, m, d)`` derivatives of the sub-chord lengths ``ell_q`` (``X_q^T u_q``).
        vx, vy: ``(c, s, d)`` derivatives of the segment lengths ``lambda_i``.
        w: ``(c, s, m)`` weights ``lambda_i / ell_q``.

    Returns:
        ``(c, s, d, d)``.
    """
    proj = XY - px[..., :, None] * py[..., None, :]  # (c, s, m, d, d)
    return (w[..., None, None] * proj).sum(dim=2) + vx[..., :, None] * vy[..., None, :]


def sub_point_length_terms(
    embed: Embed, x: Tensor, z0: Tensor, z1: Tensor, m: int, chunk_size: int, energy: bool = False
) -> LMTerms:
    """:class:`~geometry.polyline_lm.LMTerms` of the length at ``m`` sub-points per segment, for
    interior nodes ``x (b, n, d)`` between ``z0``, ``z1`` ``(b, d)``, ``chunk_size`` rows per
    forward-mode pass."""
    b, n, d = x.shape
    return terms_by_chunks(
        lambda nodes: _terms_chunk(embed, nodes, m, energy, max(2, chunk_size // d)), x, z0, z1,
        ((n + 1) * m + 1) * d, chunk_size,
    )  # fmt: skip


def _segment_lengths(embed: Embed, nodes: Tensor, m: int) -> Tensor:
    """``lambda_i`` ``(c, N - 1)`` of ``nodes (c, N, d)`` read through ``m`` sub-points per segment:
    sub-chord norms in the model's dtype, summed in float64 (as the terms sum them);
    differentiable by autograd."""
    c, N, d = nodes.shape
    pts = sub_points(nodes, m)  # (c, K, d)
    h = embed_flat(embed, pts.reshape(-1, d)).reshape(c, pts.shape[1], -1)  # (c, K, D')
    ell = (h[:, 1:] - h[:, :-1]).norm(dim=2).double()  # (c, K - 1)
    return ell.reshape(c, N - 1, m).sum(dim=2)


def _objective(lam: Tensor, energy: bool) -> Tensor:
    """``sum_i lambda_i`` or, with ``energy``, ``(N - 1) sum_i lambda_i^2``; ``lam (c, N - 1)``."""
    return lam.shape[1] * lam.pow(2).sum(dim=1) if energy else lam.sum(dim=1)


def sub_point_values(
    embed: Embed, x: Tensor, z0: Tensor, z1: Tensor, m: int, chunk_size: int, energy: bool = False
) -> Tensor:
    """The objective ``S (b,)`` of :func:`sub_point_length_terms` alone (float64; forward passes
    only, ``chunk_size`` embedded points at a time), computed as the terms compute it."""
    b, n, d = x.shape
    nodes = torch.cat([z0[:, None], x, z1[:, None]], dim=1)  # (b, N, d)
    per = max(1, chunk_size // ((n + 1) * m + 1))  # curves per pass
    parts = [
        _objective(_segment_lengths(embed, nodes[s : s + per], m), energy) for s in range(0, b, per)
    ]
    return torch.cat(parts)


def sub_point_gradient(
    embed: Embed, x: Tensor, z0: Tensor, z1: Tensor, m: int, chunk_size: int, energy: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """The objective of :func:`sub_point_length_terms`, its length and half its exact gradient
    at interior nodes ``x (b, n, d)`` by one reverse pass (``chunk_size`` embedded points per
    graph); values as :func:`sub_point_values` computes them.

    Returns:
        ``S (b,)``, ``L (b,)`` (``sum_i lambda_i``) and ``g (b, n, d)``, float64.
    """
    b, n, d = x.shape
    per = max(1, chunk_size // ((n + 1) * m + 1))  # curves per graph
    S_out, L_out, g_out = [], [], []
    with torch.enable_grad():
        for s in range(0, b, per):
            xs = x[s : s + per].detach().requires_grad_(True)
            nodes = torch.cat([z0[s : s + per, None], xs, z1[s : s + per, None]], dim=1)
            lam = _segment_lengths(embed, nodes, m)  # (c, N-1)
            S = _objective(lam, energy)
            (g,) = torch.autograd.grad(S.sum(), xs)
            S_out.append(S.detach())
            L_out.append(lam.detach().sum(dim=1))
            g_out.append(0.5 * g.double())
    return torch.cat(S_out), torch.cat(L_out), torch.cat(g_out)


def sub_point_objective(embed: Embed, nodes: Tensor, m: int, energy: bool = False) -> Tensor:
    """The objective of :func:`sub_point_length_terms` at ``nodes (c, N, d)`` (end points
    included), differentiable by autograd: ``sum_i lambda_i`` or, with ``energy``,
    ``(N - 1) sum_i lambda_i^2``; ``(c,)`` float64."""
    return _objective(_segment_lengths(embed, nodes, m), energy)


def sub_point_length_hvp(
    embed: Embed, x: Tensor, z0: Tensor, z1: Tensor, m: int, chunk_size: int, energy: bool = False
) -> Callable[[Tensor], Tensor]:
    """Exact Hessian-vector products of the objective of :func:`sub_point_length_terms` at
    interior nodes ``x (b, n, d)`` between ``z0``, ``z1`` ``(b, d)``.

    One forward and backward pass (with graph, ``chunk_size`` embedded points at a time) builds
    the gradient; every product is then one more backward pass through it.

    Returns:
        ``v (b, n, d) -> (H v) / 2`` in float64 (half, the convention of :class:`LMTerms`).
    """
    b, n, d = x.shape
    per = max(1, chunk_size // ((n + 1) * m + 1))  # curves per graph
    parts: list[tuple[Tensor, Tensor]] = []
    with torch.enable_grad():
        for s in range(0, b, per):
            xs = x[s : s + per].detach().requires_grad_(True)
            nodes = torch.cat([z0[s : s + per, None], xs, z1[s : s + per, None]], dim=1)
            S = sub_point_objective(embed, nodes, m, energy).sum()
            (g,) = torch.autograd.grad(S, xs, create_graph=True)
            parts.append((xs, g))

    def hvp(v: Tensor) -> Tensor:
        out = []
        with torch.enable_grad():
            for (xs, g), s in zip(parts, range(0, b, per)):
                vs = v[s : s + per].to(xs.dtype)
                (hv,) = torch.autograd.grad(g, xs, vs, retain_graph=True)
                out.append(hv)
        return 0.5 * torch.cat(out).double()

    return hvp
