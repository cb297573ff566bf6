"""Derivatives of the pull-back metric and the drift of Riemannian Brownian motion.

Brownian motion on ``(R^d, M)`` is the diffusion whose generator is **half** the
Laplace-Beltrami operator (the probabilists' convention, used throughout this package),

    ``(1/2) Delta f = (1/2) (1/sqrt(det M)) d_i( sqrt(det M) M^{ij} d_j f )``,

i.e. the Ito SDE ``dZ = b(Z) dt + M(Z)^(-1/2) dW`` with drift

    ``b^i = (1/2) (1/sqrt(det M)) d_j( sqrt(det M) M^{ij} )
          = (1/2) [ d_j M^{ij} + M^{ij} d_j log sqrt(det M) ]
          = -(1/2) M^{jk} Gamma^i_{jk}``

(``M^{ij}`` the entries of ``M^{-1}``, summation over repeated indices). Its stationary density
with respect to the Lebesgue measure of the chart, where one exists (a compact manifold), is
proportional to the volume element ``sqrt(det M)``. With the other convention (generator
``Delta``) the drift and the diffusion covariance are both twice these.

For ``M = J^T J`` (``J = dh/dz``) the derivatives of the metric are
``d_j M = H_j^T J + J^T H_j`` with ``H_j = d_j J``, whose columns are the second directional
derivatives ``D^2h[e_j, e_k]``. They are computed by nested forward-mode ``torch.func.jvp`` on
one batch holding ``d^2`` copies of the points (one per pair of basis tangents), so the cost is
about ``d^2`` forward passes and no Python loop runs over points or pairs.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor
from torch.func import jvp

from geometry._checks import Embed, check_points, check_positive_int, embed_flat

__all__ = [
    "brownian_drift",
    "drift_from_derivatives",
    "floored_inverse",
    "metric_and_derivatives",
]

DEFAULT_DRIFT_CHUNK_SIZE = 1024


def metric_and_derivatives(
    embed: Embed, z: Tensor, chunk_size: int = DEFAULT_DRIFT_CHUNK_SIZE
) -> tuple[Tensor, Tensor]:
    """Pull-back metric ``M = J^T J`` and its first partial derivatives.

    Args:
        embed: ``(n, d) -> (n, D')`` callable, forward-mode differentiable twice.
        z: latent points, shape ``(B, d)``.
        chunk_size: at most this many points per pass (a pass evaluates ``d^2`` copies of them).

    Returns:
        ``M`` of shape ``(B, d, d)`` and ``dM`` of shape ``(B, d, d, d)`` with
        ``dM[b, j] = d M / d z_j`` at ``z[b]``; detached, dtype/device of ``z``.
    """
    check_points(z)
    check_positive_int(chunk_size, "chunk_size")
    parts_m, parts_dm = [], []
    with torch.no_grad():
        for zc in z.split(chunk_size) if z.shape[0] else [z]:
            M, dM = _metric_and_derivatives(embed, zc)
            parts_m.append(M)
            parts_dm.append(dM)
    return torch.cat(parts_m), torch.cat(parts_dm)


def _metric_and_derivatives(embed: Embed, z: Tensor) -> tuple[Tensor, Tensor]:
    """One pass of :func:`metric_and_derivatives` (no chunking)."""
    n, d = z.shape
    basis = torch.eye(d, dtype=z.dtype, device=z.device)
    # block (j, k) of d*d blocks of n rows: outer tangent e_j, inner tangent e_k
    outer = basis.repeat_interleave(d * n, dim=0)  # (d*d*n, d)
    inner = basis.repeat_interleave(n, dim=0).repeat(d, 1)  # (d*d*n, d)
    flat = partial(embed_flat, embed)
    z_rep = z.repeat(d * d, 1)  # (d*d*n, d)
    jk, hjk = jvp(lambda x: jvp(flat, (x,), (inner,))[1], (z_rep,), (outer,))[:2]
    D = jk.shape[1]
    J = jk.reshape(d, d, n, D)[0]  # (d, n, D'): J[k] = J e_k (the same for every j)
    H = hjk.reshape(d, d, n, D)  # (d, d, n, D'): H[j, k] = D^2h[e_j, e_k]
    M = torch.einsum("knD,lnD->nkl", J, J)  # (n, d, d)
    HJ = torch.einsum("jknD,lnD->njkl", H, J)  # (n, d, d, d): (H_j^T J)_{kl}
    dM = HJ + HJ.transpose(2, 3)  # (n, d, d, d)
    return 0.5 * (M + M.transpose(1, 2)), dM


def floored_inverse(M: Tensor, eigenvalue_floor: float) -> tuple[Tensor, Tensor, Tensor]:
    """Eigen-decomposition of ``M`` with eigenvalues clamped below, and the clamped inverse.

    Args:
        M: ``(B, d, d)`` symmetric matrices.
        eigenvalue_floor: lower clamp of the eigenvalues (> 0).

    Returns:
        Clamped eigenvalues ``(B, d)``, eigenvectors ``U (B, d, d)`` and
        ``U diag(1 / lambda) U^T (B, d, d)``.
    """
    lam, U = torch.linalg.eigh(M)  # (B, d), (B, d, d)
    lam = lam.clamp_min(eigenvalue_floor)
    inv = (U / lam[:, None, :]) @ U.transpose(1, 2)  # (B, d, d)
    return lam, U, inv


def drift_from_derivatives(M_inv: Tensor, dM: Tensor) -> Tensor:
    """Brownian-motion drift ``b (B, d)`` from ``M^{-1} (B, d, d)`` and ``dM (B, d, d, d)``.

    ``b^i = (1/2) [ -(M^{-1} d_j M M^{-1})^{ij} + M^{ij} (1/2) tr(M^{-1} d_j M) ]`` (summed over
    ``j``), the expanded divergence form of the module docstring.
    """
    div_inv = -torch.einsum("bik,bjkl,blj->bi", M_inv, dM, M_inv)  # (B, d): d_j M^{ij}
    dlog_vol = 0.5 * torch.einsum("blk,bjkl->bj", M_inv, dM)  # (B, d): d_j log sqrt(det M)
    return 0.5 * (div_inv + torch.einsum("bij,bj->bi", M_inv, dlog_vol))


def brownian_drift(
    embed: Embed,
    z: Tensor,
    eigenvalue_floor: float = 1e-6,
    chunk_size: int = DEFAULT_DRIFT_CHUNK_SIZE,
) -> Tensor:
    """Drift ``b(z)`` of Brownian motion (generator ``Delta_LB / 2``) of the pull-back metric.

    ``b^i = (1/2) (1/sqrt(det M)) d_j( sqrt(det M) M^{ij} )``; see the module docstring. Where an
    eigenvalue of ``M`` is below ``eigenvalue_floor`` the clamped inverse
    ``U diag(1 / max(lambda, floor)) U^T`` stands for ``M^{-1}`` (the same clamp as the walk's
    diffusion), which keeps the drift finite where ``M`` is singular; elsewhere it is exact.

    Args:
        embed: ``(n, d) -> (n, D')`` callable, forward-mode differentiable twice.
        z: latent points, shape ``(B, d)``.
        eigenvalue_floor: lower clamp of the metric eigenvalues (> 0).
        chunk_size: at most this many points per pass.

    Returns:
        ``b`` of shape ``(B, d)``, detached, dtype/device of ``z``.
    """
    if not eigenvalue_floor > 0:
        raise ValueError(f"eigenvalue_floor must be > 0, got {eigenvalue_floor!r}")
    M, dM = metric_and_derivatives(embed, z, chunk_size)
    return drift_from_derivatives(floored_inverse(M, eigenvalue_floor)[2], dM)
