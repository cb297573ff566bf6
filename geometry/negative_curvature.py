"""Second-order trial steps for a batched polyline objective: where a Gauss-Newton model stops.

A Gauss-Newton model is positive semi-definite, and for a length (not a sum of squares) it
overstates the curvature, so a solver that stops when that model predicts no decrease also stops
at saddle points of the exact objective (a curve balanced on the crest of a variance wall, where
a direction of negative curvature still lowers the length) and on slow slopes that the exact
Hessian sees. This module projects the exact Hessian on a small Krylov space per curve (Lanczos
on Hessian-vector products in the inner product of the Gauss-Newton matrix) or, where that takes
fewer products (small ``d``), forms it on the whole space from probes on every third node (the
Hessian of a polyline objective is block tridiagonal), and tries the exact model's damped Newton
steps and its lowest curvature direction, judged by the objective itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["block_tridiagonal_hessian", "exact_pencil", "lanczos", "second_order_step"]

_COLOURS = 3  # a node and its two neighbours: probes on every third node do not overlap
_MAX_DENSE = 256  # most unknowns per curve (n d) for which the whole pencil is formed densely


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(dim=(1, 2))  # (b,)


def lanczos(
    hvp: Callable[[Tensor], Tensor],
    start: Tensor,
    steps: int,
    solve: Callable[[Tensor], Tensor] | None = None,
    mass: Callable[[Tensor], Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Lanczos on the pencil ``H v = theta M v`` per batch entry.

    With a symmetric positive definite ``M`` (e.g. a Gauss-Newton matrix, which captures the
    large curvatures of ``H``) the pencil's spectrum is clustered and its lowest end shows in
    few steps; its signs are those of ``H``'s spectrum (Sylvester's law of inertia), so a
    negative Ritz value is a direction of negative curvature of ``H``.

    Args:
        hvp: ``v (b, n, d) -> H v (b, n, d)``, one symmetric operator per batch entry.
        start: ``(b, n, d)`` start vectors (not all zero per entry).
        steps: Lanczos steps (at most ``n d``), with full reorthogonalisation.
        solve: ``r -> M^-1 r`` (default the identity).
        mass: ``v -> M v`` (default the identity; given with ``solve``).

    Returns:
        ``T (b, k, k)``, the pencil projected on the Krylov space (``Q^T H Q``), and its
        ``M``-orthonormal basis ``Q (k, b, n, d)``, float64 (after a breakdown the basis vectors
        are zero, with zero rows and columns of ``T``).
    """
    b, n, d = start.shape
    k = max(1, min(steps, n * d))
    tiny = torch.finfo(torch.float64).tiny

    def ident(v: Tensor) -> Tensor:
        return v

    solve, mass = solve or ident, mass or ident
    q = solve(start.double())
    q = q / _dot(q, mass(q)).sqrt().clamp_min(tiny)[:, None, None]
    basis: list[Tensor] = []  # M-orthonormal
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    live = torch.ones(b, dtype=torch.bool, device=start.device)  # no breakdown yet
    for j in range(k):
        basis.append(q)
        hq = hvp(q).double()  # (b, n, d)
        alphas.append(_dot(hq, q))
        w = solve(hq)  # M^-1 H q
        for v in basis:  # full reorthogonalisation in the M inner product (k is small)
            w = w - _dot(mass(w), v)[:, None, None] * v
        if j == k - 1:
            break
        beta = _dot(w, mass(w)).clamp_min(0).sqrt()  # (b,)
        scale = torch.stack(alphas).abs().amax(dim=0).clamp_min(tiny)
        live = live & (beta > 1e-10 * scale)
        beta = torch.where(live, beta, torch.zeros_like(beta))
        betas.append(beta)
        q = torch.where(live[:, None, None], w / beta.clamp_min(tiny)[:, None, None], 0.0)
    T = torch.diag_embed(torch.stack(alphas, dim=1))  # (b, k, k)
    if betas:
        off = torch.diag_embed(torch.stack(betas, dim=1), offset=1)
        T = T + off + off.transpose(1, 2)
    return T, torch.stack(basis)


def block_tridiagonal_hessian(hvp: Callable[[Tensor], Tensor], like: Tensor) -> Tensor:
    """The dense matrix of a block tridiagonal operator from ``3 d`` products.

    Every node interacts with its two neighbours only, so a probe that is one coordinate ``j``
    on every third node (one colour) gives, at each node, column ``j`` of its block with the one
    node of that colour among itself and its neighbours.

    Args:
        hvp: ``v (b, n, d) -> H v (b, n, d)``, symmetric and block tridiagonal per batch entry.
        like: ``(b, n, d)`` tensor giving the shape and device.

    Returns:
        ``H (b, n d, n d)`` float64 (symmetrized), row and column ``i d + j`` for node ``i``,
        coordinate ``j``.
    """
    b, n, d = like.shape
    dev = like.device
    node = torch.arange(n, device=dev)
    H = torch.zeros(b, n, d, n, d, dtype=torch.float64, device=dev)
    for c in range(min(_COLOURS, n)):
        # the column node of every row node: the one of colour c among i - 1, i, i + 1
        col = node + ((c - node) % _COLOURS + 1) % _COLOURS - 1  # (n,)
        row = ((col >= 0) & (col < n)).nonzero().flatten()
        for j in range(d):
            v = torch.zeros(b, n, d, dtype=torch.float64, device=dev)
            v[:, node % _COLOURS == c, j] = 1.0
            hv = hvp(v).double()  # (b, n, d)
            H[:, row, :, col[row], j] = hv[:, row].transpose(0, 1)
    H = H.reshape(b, n * d, n * d)
    return 0.5 * (H + H.transpose(1, 2))


def exact_pencil(
    hvp: Callable[[Tensor], Tensor], mass_diag: Tensor, mass_off: Tensor
) -> tuple[Tensor, Tensor] | None:
    """The pencil ``H v = theta M v`` on the whole space, in the output format of
    :func:`lanczos`: ``T = Q^T H Q`` for the ``M``-orthonormal basis ``Q = U Sigma^-1/2`` of the
    eigendecomposition ``M = U Sigma U^T``, with ``H`` from :func:`block_tridiagonal_hessian`
    (``3 d`` products, fewer than Lanczos takes for small ``d``). Directions where ``M`` is
    nearly singular (``Sigma`` below ``1e-10`` of its largest value: for a length's Gauss-Newton
    matrix, nodes sliding along the curve) are left out, as zero basis vectors with zero rows
    and columns of ``T`` (as after a breakdown of :func:`lanczos`).

    Args:
        hvp: ``v (b, n, d) -> H v (b, n, d)``, block tridiagonal.
        mass_diag: ``(b, n, d, d)`` diagonal blocks of a symmetric positive semi-definite ``M``.
        mass_off: ``(b, n - 1, d, d)`` its blocks ``M_{i, i + 1}``.

    Returns:
        ``T (b, n d, n d)`` and ``Q (n d, b, n, d)`` (float64), or None where the
        decomposition or ``T`` is not finite.
    """
    b, n, d, _ = mass_diag.shape
    M = torch.zeros(b, n, d, n, d, dtype=torch.float64, device=mass_diag.device)
    i = torch.arange(n, device=mass_diag.device)
    M[:, i, :, i] = mass_diag.double().transpose(0, 1)
    M[:, i[:-1], :, i[1:]] = mass_off.double().transpose(0, 1)
    M[:, i[1:], :, i[:-1]] = mass_off.double().transpose(2, 3).transpose(0, 1)
    M = M.reshape(b, n * d, n * d)
    if not bool(torch.isfinite(M).all()):
        return None
    sigma, U = torch.linalg.eigh(0.5 * (M + M.transpose(1, 2)))  # (b, nd), (b, nd, nd)
    tiny = torch.finfo(torch.float64).tiny
    keep = sigma > 1e-10 * sigma.amax(dim=1, keepdim=True).clamp_min(tiny)  # (b, nd)
    Q = U * torch.where(keep, sigma.clamp_min(tiny).rsqrt(), 0.0)[:, None]  # (b, nd, nd)
    H = block_tridiagonal_hessian(hvp, mass_diag[..., 0])
    T = Q.transpose(1, 2) @ H @ Q
    T = 0.5 * (T + T.transpose(1, 2))
    if not bool(torch.isfinite(T).all()):
        return None
    return T, Q.permute(2, 0, 1).reshape(n * d, b, n, d)


def second_order_step(
    hvp: Callable[[Tensor], Tensor],
    objective: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    S: Tensor,
    g: Tensor,
    scale: Tensor,
    solve: Callable[[Tensor], Tensor] | None = None,
    mass: Callable[[Tensor], Tensor] | None = None,
    steps: int = 16,
    ladder: int = 8,
    mass_blocks: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """The best of a batch of second-order trial steps on the exact Hessian, per curve.

    Lanczos (``steps`` products, started from ``M^-1`` times the gradient plus a fixed
    perturbation, in the inner product of ``M``; or the whole space, see ``mass_blocks``)
    projects the exact Hessian on a Krylov space
    ``Q``: ``T = Q^T H Q``, gradient ``Q^T g``. Trial steps, all judged by ``objective`` alone:

    - the trust-region path of that model, ``s(mu) = -Q (T + mu)^-1 Q^T g`` for ``ladder``
      shifts ``mu`` from the largest Ritz value down by factors of 4 (every shift above
      ``max(0, -theta_min)``): the exact Newton step where the model is convex, damped in the
      metric of ``M``; it sees slopes that a Gauss-Newton model, which overstates the
      curvature of a length, calls flat;
    - where the lowest Ritz value is negative, its Ritz vector ``v`` both ways,
      ``x +- scale 2^-k v``, ``k = 1 .. ladder``: a saddle point, which no positive
      semi-definite model can see.

    Args:
        hvp: Hessian-vector products of the objective at ``x`` (a multiple ``c H`` of the
            Hessian with ``g`` the same multiple ``c`` of the gradient).
        objective: ``(x (c, n, d), owner (c,)) -> (c,)`` the objective at other interior
            nodes of the curves ``owner`` (indices into the batch).
        x: ``(b, n, d)`` interior nodes.
        S: ``(b,)`` objective at ``x``.
        g: ``(b, n, d)`` gradient at ``x`` (see ``hvp``).
        scale: ``(b,)`` the largest step length tried along ``v`` and the farthest any node
            may move (e.g. the end points' distance).
        solve, mass: ``M^-1`` and ``M`` of a positive definite matrix that captures the large
            curvatures (see :func:`lanczos`; default the identity).
        steps: Lanczos steps.
        ladder: trial steps per family (shifts; lengths per direction).
        mass_blocks: the blocks ``(diag (b, n, d, d), off (b, n - 1, d, d))`` of ``M`` when
            ``M`` and the Hessian are block tridiagonal: where ``3 d < steps`` (fewer
            products) and ``n d <= 256`` (small dense matrices) the whole pencil is then used
            (:func:`exact_pencil`, ``3 d`` products) instead of Lanczos.

    Returns:
        The best trial nodes ``(b, n, d)`` (``x`` where no trial lowers the objective) and the
        decrease of the objective there ``(b,)`` (0 where none, float64).
    """
    b, n, d = x.shape
    dev = x.device
    # a fixed, reproducible perturbation so that a zero gradient still gives a Krylov space
    ramp = torch.linspace(-1.0, 1.0, n * d, dtype=torch.float64, device=dev)
    wiggle = torch.sin(7.0 * ramp + 1.0).reshape(1, n, d)
    g = g.double()
    gn = g / _dot(g, g).sqrt().clamp_min(1e-300)[:, None, None]
    wn = wiggle / _dot(wiggle, wiggle).sqrt()[:, None, None]
    pencil = None
    if mass_blocks is not None and _COLOURS * d < steps and n * d <= _MAX_DENSE:
        pencil = exact_pencil(hvp, *mass_blocks)
    if pencil is None:
        pencil = lanczos(hvp, gn + 0.5 * wn, steps, solve, mass)
    T, Q = pencil  # (b, k, k), (k, b, n, d)
    theta, Y = torch.linalg.eigh(T)  # (b, k), (b, k, k)
    gq = torch.einsum("kbnd,bnd->bk", Q, g)  # (b, k)
    gy = torch.einsum("bkj,bk->bj", Y, gq)  # the gradient in the Ritz basis
    top = theta.abs().amax(dim=1).clamp_min(1e-300)  # (b,)
    floor = (-theta[:, 0]).clamp_min(0)  # shifts must exceed this
    mu = floor[:, None] + top[:, None] * 4.0 ** -torch.arange(
        ladder, dtype=torch.float64, device=dev
    )
    coef = -gy[:, None, :] / (theta[:, None, :] + mu[:, :, None])  # (b, ladder, k)
    y = torch.einsum("bkj,blj->blk", Y, coef)  # (b, ladder, k)
    path = torch.einsum("kbnd,blk->blnd", Q, y)  # (b, ladder, n, d)
    # the lowest Ritz vector both ways (tried only where its curvature is negative)
    v = torch.einsum("kbnd,bk->bnd", Q, Y[:, :, 0])
    v = v / _dot(v, v).sqrt().clamp_min(1e-300)[:, None, None]
    t = scale.double()[:, None] * 2.0 ** -torch.arange(
        1, ladder + 1, dtype=torch.float64, device=dev
    )  # (b, ladder)
    t = torch.cat([t, -t], dim=1)
    sideways = t[:, :, None, None] * v[:, None]  # (b, 2 ladder, n, d)
    moves = torch.cat([path, sideways], dim=1)  # (b, L, n, d)
    trial = x[:, None] + moves.to(x.dtype)
    L = trial.shape[1]
    owner = torch.arange(b, device=dev).repeat_interleave(L)
    # no node moves farther than ``scale``: a huge step would be judged by an objective whose
    # sub-points no longer resolve the curve
    near = moves.norm(dim=3).amax(dim=2) <= scale.double()[:, None]  # (b, L)
    near[:, ladder:] &= theta[:, :1] < 0  # sideways steps only along negative curvature
    finite = (torch.isfinite(trial).flatten(2).all(dim=2) & near).reshape(-1)  # (b L,)
    flat = trial.reshape(b * L, n, d)
    vals = torch.full((b * L,), torch.inf, dtype=torch.float64, device=dev)
    if bool(finite.any()):
        vals[finite] = objective(flat[finite], owner[finite]).double()
    vals = torch.where(torch.isfinite(vals), vals, torch.full_like(vals, torch.inf))
    best, at = vals.reshape(b, L).min(dim=1)
    drop = S.double() - best
    ok = torch.isfinite(best) & (drop > 0)
    out = x.clone()
    out[ok] = trial[ok, at[ok]]
    gain = torch.where(ok, drop, torch.zeros_like(drop))
    return out, gain
