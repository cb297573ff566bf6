"""Exponential and logarithmic maps of the pull-back metric.

Geodesic ODE for ``M = J^T J`` with ``J = dh/dz``: the embedded curve ``h(c(t))`` has no
acceleration tangent to the image of ``h``, i.e. ``J^T (J c'' + D^2h[c', c']) = 0``, so

    ``c'' = -M(c)^{-1} J(c)^T D^2h(c)[c', c']``,

which equals ``-Gamma(c', c')`` with the Christoffel symbols of ``M``. ``D^2h[v, v]`` is a nested
forward-mode derivative of ``embed``; no Christoffel tensor is formed. Requires a non-singular
``M`` along the path (``D' >= d`` and full-rank Jacobian).

* :func:`exp_map` integrates the ODE with classical RK4 (fixed step, ``num_steps`` steps on
  ``t in [0, 1]``); the error is ``O(num_steps^-4)`` for smooth decoders.
* :func:`log_map` is approximate: it solves the boundary value problem with
  :func:`connecting_geodesics`; the direction of the velocity is the one-sided second-order
  difference of the first three nodes in their measured Riemannian arc length, and its norm
  ``||v||_M`` is the measured length of the whole curve (so ``||log_{z0}(z1)||_{M(z0)}`` is the
  reported geodesic distance). The nodes of a length-minimizing polyline sit off the geodesic
  by ``O(N^-2)``, so the direction error is ``O(1/N)`` in the number of nodes ``N``.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor
from torch.func import jvp

from geometry._checks import Embed, check_points, check_positive_int, embed_flat
from geometry.curves import measure_curve_lengths
from geometry.geodesics import GeodesicResult, connecting_geodesics
from geometry.metric import embed_and_tangents, metric_tensor

__all__ = ["geodesic_acceleration", "exp_map", "initial_velocities", "log_map"]


def geodesic_acceleration(embed: Embed, z: Tensor, v: Tensor, singular: str = "raise") -> Tensor:
    """``c'' = -M^{-1} J^T D^2h[v, v]`` at positions ``z (B, d)`` with velocities ``v (B, d)``.

    ``singular="raise"``: a ``ValueError`` naming the rows where ``M`` is singular; ``"nan"``:
    those rows of the result are NaN.
    """
    flat = partial(embed_flat, embed)
    with torch.no_grad():
        _, T = embed_and_tangents(embed, z, mode="forward")  # (d, B, D'): T[k] = J e_k
        second = jvp(lambda x: jvp(flat, (x,), (v,))[1], (z,), (v,))[1]  # (B, D')
        M = torch.einsum("kbD,lbD->bkl", T, T).double()  # (B, d, d), solved in float64
        rhs = torch.einsum("kbD,bD->bk", T, second).double()  # (B, d)
        acc, info = torch.linalg.solve_ex(M, rhs)
        acc = acc.to(z.dtype)
    if singular == "nan":
        return torch.where((info == 0)[:, None], -acc, torch.nan)
    if bool((info != 0).any()):
        bad = (info != 0).nonzero().flatten().tolist()
        raise ValueError(
            f"the metric is singular at {len(bad)} of {z.shape[0]} points (first rows {bad[:5]}): "
            "the geodesic equation needs an invertible M = J^T J, i.e. embed must have at least "
            "d outputs and a full-rank Jacobian along the path"
        )
    return -acc


def exp_map(
    embed: Embed,
    z: Tensor,
    v: Tensor,
    num_steps: int = 64,
    return_path: bool = False,
    rtol: float | None = None,
) -> Tensor:
    """Shoot geodesics: ``exp_z(v)``, the end point at ``t = 1`` of the geodesic with ``c(0) = z``
    and ``c'(0) = v``.

    Args:
        embed: ``(n, d) -> (n, D')`` callable (forward-mode differentiable twice).
        z: ``(B, d)`` start points.
        v: ``(B, d)`` initial velocities.
        num_steps: RK4 steps on ``[0, 1]``.
        return_path: return the whole ``(B, num_steps + 1, d)`` path instead of the end point
            (fixed-step RK4 only).
        rtol: None for fixed-step RK4; a float integrates with adaptive steps to that
            tolerance (:func:`geometry.shoot_geodesics`, first step ``1 / num_steps``).

    Returns:
        ``(B, d)`` end points, or the ``(B, num_steps + 1, d)`` path.
    """
    check_points(z, "z")
    check_points(v, "v", dim=z.shape[1])
    if v.shape != z.shape:
        raise ValueError(
            f"z and v must have the same shape, got {tuple(z.shape)} and {tuple(v.shape)}"
        )
    check_positive_int(num_steps, "num_steps")
    if rtol is not None:
        if return_path:
            raise ValueError("return_path=True needs the fixed-step integrator (rtol=None)")
        from geometry.adaptive_exp import shoot_geodesics  # imports this module

        shots = shoot_geodesics(embed, z, v, rtol=rtol, initial_steps=num_steps)
        if bool(shots.failed.any()):
            bad = shots.failed.nonzero().flatten().tolist()
            raise ValueError(
                f"{len(bad)} of {z.shape[0]} shots failed (first rows {bad[:5]}): the metric is "
                "singular on their path or their step fell below 1e-10"
            )
        return shots.ends
    h = 1.0 / num_steps
    x, u = z.detach().clone(), v.detach().clone()
    path = [x]

    def f(x: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        return u, geodesic_acceleration(embed, x, u)

    for _ in range(num_steps):
        k1x, k1u = f(x, u)
        k2x, k2u = f(x + 0.5 * h * k1x, u + 0.5 * h * k1u)
        k3x, k3u = f(x + 0.5 * h * k2x, u + 0.5 * h * k2u)
        k4x, k4u = f(x + h * k3x, u + h * k3u)
        x = x + h / 6 * (k1x + 2 * k2x + 2 * k3x + k4x)
        u = u + h / 6 * (k1u + 2 * k2u + 2 * k3u + k4u)
        path.append(x)
    return torch.stack(path, dim=1) if return_path else x


def log_map(
    embed: Embed, z0: Tensor, z1: Tensor, **geodesic_options: Any
) -> tuple[Tensor, GeodesicResult]:
    """Approximate ``log_{z0}(z1)``: initial velocity of the connecting geodesic.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        z0: ``(B, d)`` base points.
        z1: ``(B, d)`` targets.
        **geodesic_options: forwarded to :func:`connecting_geodesics` (e.g. ``num_nodes``; more
            nodes give a more accurate velocity); ``tolerance`` defaults to ``1e-8`` here.

    Returns:
        ``v (B, d)`` and the :class:`GeodesicResult` it came from (check ``converged``).
    """
    geodesic_options.setdefault("tolerance", 1e-8)  # the velocity needs a well-converged curve
    res = connecting_geodesics(embed, z0, z1, **geodesic_options)
    return initial_velocities(embed, res.curves, res.lengths), res


def initial_velocities(embed: Embed, curves: Tensor, lengths: Tensor) -> Tensor:
    """Initial velocities ``(B, d)`` of discrete geodesics ``curves (B, N, d)`` on ``t in [0, 1]``.

    The direction is the one-sided second-order difference of the first three nodes in their
    Riemannian arc length (measured to ``1e-4``), the norm ``||v||_{M(c_0)}`` is ``lengths (B,)``;
    ``v = 0`` where the length is 0.
    """
    c = curves.double()  # (B, N, d)
    B, N, d = c.shape
    if N < 3:
        u = c[:, 1] - c[:, 0]  # (B, d)
    else:
        with torch.no_grad():  # a solver's output: no graph through the model's parameters
            seg = measure_curve_lengths(embed, curves[:, :3], rtol=1e-4).segment_lengths.double()
        s1, s2 = seg[:, :1], seg[:, :1] + seg[:, 1:2]  # (B, 1) arc length at c_1, c_2
        ok = (seg > 0).all(dim=1, keepdim=True)
        s1, s2 = torch.where(ok, s1, 1.0), torch.where(ok, s2, 2.0)  # uniform where degenerate
        u = (
            c[:, 0] * (-(s1 + s2) / (s1 * s2))
            + c[:, 1] * (s2 / (s1 * (s2 - s1)))
            + c[:, 2] * (-s1 / (s2 * (s2 - s1)))
        )  # (B, d), d c / d s at s = 0
    with torch.enable_grad():
        M = metric_tensor(embed, curves[:, 0]).detach().double()  # (B, d, d)
    speed = torch.einsum("bi,bij,bj->b", u, M, u).clamp_min(0).sqrt()  # (B,)
    L = lengths.double()
    scale = torch.where((speed > 0) & (L > 0), L / speed.clamp_min(1e-300), 0.0)
    return (scale[:, None] * u).to(curves.dtype)
