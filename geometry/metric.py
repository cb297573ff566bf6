"""The pull-back metric of a generator: Jacobians, metric tensors, magnification factors.

For an embedding ``h: R^d -> R^D'`` (for a VAE, ``h(z) = [mu(z), sigma(z)]``) the pull-back metric
is ``M(z) = J(z)^T J(z)`` with ``J = dh/dz`` of shape ``(D', d)``, i.e. the sum over **all** D'
outputs of the outer products of their gradients. For ``h = [mu, sigma]`` this is the expected
metric of Arvanitidis et al. (2018), ``M = J_mu^T J_mu + J_sigma^T J_sigma``.

Jacobians are computed with forward-mode autodiff (``torch.func.jvp``): one batched forward pass
over ``d`` copies of the input, each carrying one basis tangent, so the cost is about ``d``
forward passes and the memory is bounded by ``chunk_size``. Any architecture works (MLP,
convolutional, ...): ``embed`` is only called on ``(n, d)`` batches.
"""

from __future__ import annotations

import math
import warnings
from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.func import jvp, vmap

from geometry._checks import Embed, check_points, check_positive_int, embed_flat

__all__ = [
    "jacobian",
    "embed_and_jacobian",
    "metric_tensor",
    "magnification_factor",
    "log_magnification_factor",
]

DEFAULT_CHUNK_SIZE = 2048


def _jvp_double_backward(embed: Embed, x: Tensor, tangents: Tensor) -> tuple[Tensor, Tensor]:
    """Jacobian-vector products from two reverse-mode passes (for ops without forward AD)."""
    keep_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True) if not x.requires_grad else x
        y = embed_flat(embed, xg)  # (m, D')
        u = torch.zeros_like(y, requires_grad=True)
        (gx,) = torch.autograd.grad(y, xg, u, create_graph=True)  # (m, d), linear in u
        (jv,) = torch.autograd.grad(gx, u, tangents, create_graph=keep_graph)  # (m, D')
    if not keep_graph:
        y, jv = y.detach(), jv.detach()
    return y, jv


def embed_and_tangents(embed: Embed, z: Tensor, mode: str = "auto") -> tuple[Tensor, Tensor]:
    """Embedding and the ``d`` directional derivatives of ``embed`` at ``z`` (no chunking).

    This is the Jacobian in the layout the solvers use: ``T[k] = J e_k``.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        z: points, shape ``(n, d)``.
        mode: ``"auto"`` (forward mode, vmapped over the ``d`` basis tangents so the primal is
            computed once; if ``embed`` cannot be vmapped, ``d`` stacked copies of the batch; if an
            op has no forward-mode formula, a ``RuntimeWarning`` and double backward),
            ``"forward"`` (forward mode only) or ``"double_backward"`` (Jacobian-vector products
            from two reverse passes: exact, slower, needs only backward formulas, e.g. for
            ``torch.cdist``).

    Returns:
        ``h`` of shape ``(n, D')`` and ``T`` of shape ``(d, n, D')``.
    """
    n, d = z.shape
    if mode not in ("auto", "forward", "double_backward"):
        raise ValueError(f"mode must be 'auto', 'forward' or 'double_backward', got {mode!r}")
    basis = torch.eye(d, dtype=z.dtype, device=z.device)
    flat = partial(embed_flat, embed)
    if mode != "double_backward":
        try:
            tangents = basis[:, None, :].expand(d, n, d)  # (d, n, d)
            out_dims: Any = (None, 0)  # the primal once, the tangents stacked
            primal_and_tangents = vmap(lambda t: jvp(flat, (z,), (t,)), out_dims=out_dims)
            h, T = primal_and_tangents(tangents)[:2]
            return h, T
        except NotImplementedError as err:
            if mode == "forward" or "forward AD" not in str(err):
                raise
            warnings.warn(
                f"embed uses an operation without forward-mode AD ({str(err).splitlines()[0]}); "
                "computing Jacobians with double backward instead (exact, slower). Rewrite that "
                "operation (e.g. torch.cdist -> explicit squared differences) for speed.",
                RuntimeWarning,
                stacklevel=2,
            )
        except RuntimeError:  # embed is not vmap-compatible: stack d copies of the batch
            z_rep = z.repeat(d, 1)  # (d*n, d): block k holds all points, with tangent e_k
            h_rep, dh = jvp(flat, (z_rep,), (basis.repeat_interleave(n, dim=0),))[:2]
            return h_rep[:n], dh.reshape(d, n, -1)
    z_rep = z.repeat(d, 1)
    h_rep, dh = _jvp_double_backward(embed, z_rep, basis.repeat_interleave(n, dim=0))
    return h_rep[:n], dh.reshape(d, n, -1)


def embed_and_jacobian(embed: Embed, z: Tensor, mode: str = "auto") -> tuple[Tensor, Tensor]:
    """Embedding and Jacobian of ``embed`` at ``z`` in one batched pass (no chunking).

    Differentiable with respect to ``z`` and the parameters when grad mode is on; callers that
    need no graph should wrap the call in ``torch.no_grad()`` (forward-mode AD still works).

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        z: points, shape ``(n, d)``.
        mode: see :func:`embed_and_tangents`.

    Returns:
        ``h`` of shape ``(n, D')`` and ``J`` of shape ``(n, D', d)``.
    """
    h, T = embed_and_tangents(embed, z, mode)  # (n, D'), (d, n, D')
    return h, T.permute(1, 2, 0)  # (n, D', d)


def jacobian(
    embed: Embed, z: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE, create_graph: bool = False
) -> Tensor:
    """Jacobian of the embedding at each point.

    Args:
        embed: ``(n, d) -> (n, D')`` callable (e.g. ``TwoStageVAE.embed``).
        z: latent points, shape ``(B, d)``.
        chunk_size: at most this many points per forward pass (memory ``~ d * chunk_size * D'``).
        create_graph: keep the autograd graph (for derivatives of the Jacobian); otherwise the
            result is detached and no gradient reaches the parameters of ``embed``.

    Returns:
        ``J`` of shape ``(B, D', d)`` on ``z``'s device and dtype.
    """
    check_points(z)
    check_positive_int(chunk_size, "chunk_size")
    with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
        parts = [embed_and_jacobian(embed, zc)[1] for zc in _chunks(z, chunk_size)]
    return torch.cat(parts)  # (B, D', d)


def metric_tensor(
    embed: Embed, z: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE, create_graph: bool = False
) -> Tensor:
    """Pull-back metric ``M(z) = J(z)^T J(z)``, summed over all D' outputs of ``embed``.

    Args:
        embed: ``(n, d) -> (n, D')`` callable; for a VAE pass the concatenation ``[mu, sigma]``
            to obtain the paper's expected metric.
        z: latent points, shape ``(B, d)``.
        chunk_size: points per forward-mode pass (bounds memory).
        create_graph: keep the autograd graph instead of returning a detached tensor.

    Returns:
        Symmetric positive semi-definite ``M`` of shape ``(B, d, d)``, dtype/device of ``z``.
    """
    check_points(z)
    check_positive_int(chunk_size, "chunk_size")
    parts = []
    with torch.set_grad_enabled(create_graph and torch.is_grad_enabled()):
        for zc in _chunks(z, chunk_size):
            J = embed_and_jacobian(embed, zc)[1]  # (b, D', d)
            M = J.transpose(1, 2) @ J  # (b, d, d)
            parts.append(0.5 * (M + M.transpose(1, 2)))
    return torch.cat(parts)


def _chunks(z: Tensor, chunk_size: int) -> list[Tensor]:
    """``z.split(chunk_size)``, with one empty chunk for an empty batch (so results are empty)."""
    return list(z.split(chunk_size)) if z.shape[0] else [z]


def log_magnification_factor(
    embed: Embed, z: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE, floor: float | None = None
) -> Tensor:
    """``log sqrt(det M(z))``, computed stably from the singular values of ``J``.

    ``0.5 * log det(J^T J) = sum_i log s_i(J)``: no determinant is formed, so there is no
    overflow/underflow for tiny or huge metrics and the condition number is not squared.
    Points where ``M`` is singular (including ``D' < d``) give ``-inf``: far from the data a
    generator whose mean and variance saturate (tanh/sigmoid mean, RBF precision at its floor
    ``zeta``) has a vanishing metric in float arithmetic. ``floor`` clamps the result from below
    (e.g. for color scales), and is the only place a finite value replaces ``-inf``.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        z: latent points, shape ``(B, d)``.
        chunk_size: points per forward-mode pass.
        floor: optional lower bound of the returned values (a finite number).

    Returns:
        Tensor of shape ``(B,)``.
    """
    if floor is not None and not math.isfinite(floor):
        raise ValueError(f"floor must be a finite number or None, got {floor!r}")
    check_points(z)
    check_positive_int(chunk_size, "chunk_size")
    d = z.shape[1]
    parts = []
    with torch.no_grad():
        for zc in _chunks(z, chunk_size):
            J = embed_and_jacobian(embed, zc)[1]  # (b, D', d)
            if J.shape[1] < d:
                parts.append(torch.full((zc.shape[0],), -torch.inf, dtype=z.dtype, device=z.device))
                continue
            s = torch.linalg.svdvals(J)  # (b, d)
            parts.append(torch.log(s).sum(dim=1))  # log 0 = -inf for singular M
    out = torch.cat(parts)
    return out if floor is None else out.clamp_min(floor)


def magnification_factor(embed: Embed, z: Tensor, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Tensor:
    """Magnification factor ``sqrt(det M(z))`` (the Riemannian volume element).

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        z: latent points, shape ``(B, d)``.
        chunk_size: points per forward-mode pass.

    Returns:
        Tensor of shape ``(B,)``; may over/underflow for extreme metrics, prefer
        :func:`log_magnification_factor` for plotting.
    """
    return torch.exp(log_magnification_factor(embed, z, chunk_size))
