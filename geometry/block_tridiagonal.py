"""Batched symmetric block-tridiagonal linear systems (the Gauss-Newton systems of
:mod:`geometry.geodesics`: one ``d x d`` block per interior curve node)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["block_tridiagonal_matvec", "solve_block_tridiagonal", "solve_spd_block_tridiagonal"]


def solve_block_tridiagonal(diag: Tensor, off: Tensor, rhs: Tensor) -> Tensor:
    """Solve symmetric block-tridiagonal systems ``A x = rhs`` (block Thomas algorithm).

    Args:
        diag: ``(b, n, d, d)`` diagonal blocks ``A_jj``.
        off: ``(b, n - 1, d, d)`` upper blocks ``A_{j, j+1}`` (lower blocks are their transposes).
        rhs: ``(b, n, d)``.

    Returns:
        ``(b, n, d)``. Stable for symmetric positive definite ``A`` (no pivoting across blocks).
    """
    b, n, d, _ = diag.shape
    c_prime: list[Tensor] = []  # (b, d, d) each
    y_prime: list[Tensor] = []  # (b, d) each
    for j in range(n):
        S, r = diag[:, j], rhs[:, j]  # (b, d, d), (b, d)
        if j > 0:
            L = off[:, j - 1].transpose(1, 2)  # (b, d, d)
            S = S - L @ c_prime[j - 1]
            r = r - (L @ y_prime[j - 1][..., None])[..., 0]
        if j < n - 1:
            sol = torch.linalg.solve(S, torch.cat([off[:, j], r[..., None]], dim=2))  # (b, d, d+1)
            c_prime.append(sol[..., :d])
            y_prime.append(sol[..., d])
        else:
            y_prime.append(torch.linalg.solve(S, r[..., None])[..., 0])
    x = [y_prime[n - 1]]
    for j in range(n - 2, -1, -1):
        x.append(y_prime[j] - (c_prime[j] @ x[-1][..., None])[..., 0])
    return torch.stack(x[::-1], dim=1)  # (b, n, d)


def _solve_dense(diag: Tensor, off: Tensor, rhs: Tensor) -> Tensor:
    """Same as :func:`solve_block_tridiagonal` via one dense Cholesky solve (small n*d)."""
    b, n, d, _ = diag.shape
    A = diag.new_zeros(b, n, d, n, d)
    idx = torch.arange(n, device=diag.device)
    A[:, idx, :, idx, :] = diag.permute(1, 0, 2, 3)
    if n > 1:
        A[:, idx[:-1], :, idx[1:], :] = off.permute(1, 0, 2, 3)
        A[:, idx[1:], :, idx[:-1], :] = off.transpose(2, 3).permute(1, 0, 2, 3)
    A = A.reshape(b, n * d, n * d)
    L, info = torch.linalg.cholesky_ex(A)
    x = torch.cholesky_solve(rhs.reshape(b, n * d, 1), L).reshape(b, n, d)
    bad = info != 0
    if bool(bad.any()):  # not numerically SPD: general solve for those systems
        x[bad] = torch.linalg.solve(A[bad], rhs.reshape(b, n * d)[bad]).reshape(-1, n, d)
    return x


def solve_spd_block_tridiagonal(diag: Tensor, off: Tensor, rhs: Tensor) -> Tensor:
    """Solve ``A x = rhs`` for symmetric positive definite block-tridiagonal ``A``: one dense
    Cholesky solve when ``n * d <= 128``, else the block Thomas algorithm (shapes as in
    :func:`solve_block_tridiagonal`)."""
    n, d = diag.shape[1], diag.shape[2]
    if n * d <= 128:
        return _solve_dense(diag, off, rhs)
    return solve_block_tridiagonal(diag, off, rhs)


def block_tridiagonal_matvec(diag: Tensor, off: Tensor, v: Tensor) -> Tensor:
    """``A v`` for symmetric block-tridiagonal ``A`` (shapes as in
    :func:`solve_block_tridiagonal`; ``v (b, n, d)``)."""
    out = (diag @ v[..., None])[..., 0]  # (b, n, d)
    if diag.shape[1] > 1:
        out[:, :-1] += (off @ v[:, 1:, :, None])[..., 0]
        out[:, 1:] += (off.transpose(2, 3) @ v[:, :-1, :, None])[..., 0]
    return out
