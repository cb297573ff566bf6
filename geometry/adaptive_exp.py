"""Geodesic shooting with an adaptive step: Dormand-Prince 5(4) on the geodesic equation.

The state ``(c, c')`` follows ``c'' = -M(c)^{-1} J(c)^T D^2h(c)[c', c']``
(:func:`geometry.maps.geodesic_acceleration`) on ``t in [0, 1]``. Every row has its own step:
a step is accepted when the embedded error estimate (the difference of the 5th- and 4th-order
solutions) is below ``rtol`` times the row's scale, ``|y| + ||v||_inf`` per component, and the
next step is ``0.9 err^(-1/5)`` times the last (between 0.2 and 5 times). Steep regions of the
metric (variance walls) get short steps, flat ones long steps, so the end point is accurate to
about ``rtol`` where a fixed step either wastes work or is unstable.

A tolerance below ``8 eps`` of the dtype (float32: ``9.5e-7``) is raised to it: below that the
error estimate is roundoff, and the controller would shrink a row's steps until it fails.

A row fails (NaN end point, ``failed = True``) when its metric is singular at a stage point and
halving the step does not avoid it, when its step falls below ``1e-10``, or when it has not
reached ``t = 1`` after ``max_steps`` attempted steps; the other rows are unaffected.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from geometry._checks import Embed, check_points, check_positive_int
from geometry.maps import geodesic_acceleration

__all__ = ["GeodesicShots", "shoot_geodesics"]

# Dormand-Prince 5(4) tableau (FSAL: the 7th stage is the next step's first)
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_E = (  # 5th minus 4th order weights
    71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40,
)  # fmt: skip


@dataclass
class GeodesicShots:
    """Output of :func:`shoot_geodesics`.

    Attributes:
        ends: ``(B, d)`` ``Exp_z(v)``, the geodesic at ``t = 1`` (NaN where ``failed``).
        end_velocities: ``(B, d)`` ``c'(1)`` (NaN where ``failed``).
        steps: ``(B,)`` int64 accepted steps per row.
        failed: ``(B,)`` bool.
    """

    ends: Tensor
    end_velocities: Tensor
    steps: Tensor
    failed: Tensor


def shoot_geodesics(
    embed: Embed,
    z: Tensor,
    v: Tensor,
    *,
    rtol: float = 1e-6,
    initial_steps: int = 8,
    max_steps: int = 2000,
    groups: Tensor | None = None,
) -> GeodesicShots:
    """``Exp_z(v)`` for ``B`` rows at once with per-row adaptive steps (see module docstring).

    Args:
        embed: ``(n, d) -> (n, D')`` callable (forward-mode differentiable twice).
        z: ``(B, d)`` start points.
        v: ``(B, d)`` initial velocities.
        rtol: local error tolerance relative to each row's scale (at least ``8 eps`` of the
            dtype, see the module docstring).
        initial_steps: the first step of every row is ``1 / initial_steps``.
        max_steps: attempted steps (accepted or rejected) per row before it fails.
        groups: ``(B,)`` int64 group of each row, or None. Rows of one group take the same
            steps (the group's largest error decides), so the end points of a group are the
            same smooth discrete map of their initial conditions: finite differences between
            them (e.g. of ``Exp`` in ``v``) see no step-size noise. A failing row fails its
            group.

    Returns:
        A :class:`GeodesicShots` on the device and dtype of ``z``.
    """
    check_points(z, "z")
    check_points(v, "v", dim=z.shape[1])
    if v.shape != z.shape:
        raise ValueError(
            f"z and v must have the same shape, got {tuple(z.shape)} and {tuple(v.shape)}"
        )
    if not (isinstance(rtol, (int, float)) and 0 < rtol < 1):
        raise ValueError(f"rtol must be a number in (0, 1), got {rtol!r}")
    check_positive_int(initial_steps, "initial_steps")
    check_positive_int(max_steps, "max_steps")
    rtol = max(float(rtol), 8 * torch.finfo(z.dtype).eps)
    B, d = z.shape
    if groups is not None and (groups.shape != (B,) or groups.dtype != torch.int64):
        raise ValueError(f"groups must be a ({B},) int64 tensor, got {tuple(groups.shape)}")
    if groups is not None and B and int(groups.min()) < 0:
        raise ValueError("groups must be >= 0")
    if B == 0:
        empty = torch.zeros(0, dtype=torch.int64, device=z.device)
        return GeodesicShots(z.clone(), v.clone(), empty, empty.bool())
    x, u = z.detach().clone(), v.detach().clone()
    t = torch.zeros(B, dtype=torch.float64, device=z.device)
    h = torch.full_like(t, 1.0 / initial_steps)
    steps = torch.zeros(B, dtype=torch.int64, device=z.device)
    tries = torch.zeros_like(steps)
    failed = torch.zeros(B, dtype=torch.bool, device=z.device)
    scale_v = v.detach().abs().amax(dim=1, keepdim=True)  # (B, 1)
    k1 = geodesic_acceleration(embed, x, u, singular="nan")  # (B, d), FSAL first stage
    failed |= ~torch.isfinite(k1).all(dim=1)
    while True:
        live = ((t < 1 - 1e-12) & ~failed).nonzero().flatten()
        if live.numel() == 0:
            break
        xr, ur, a1 = x[live], u[live], k1[live]  # (b, d)
        hr = torch.minimum(h[live], 1 - t[live]).to(x.dtype)[:, None]  # (b, 1)
        kx, ku = [ur], [a1]  # stage derivatives of position and velocity
        for i in range(1, 7):
            xi = xr + hr * sum(a * k for a, k in zip(_A[i], kx, strict=False))
            ui = ur + hr * sum(a * k for a, k in zip(_A[i], ku, strict=False))
            kx.append(ui)
            ku.append(geodesic_acceleration(embed, xi, ui, singular="nan"))
        x5, u5 = xi, ui  # the 7th stage point is the 5th-order solution (FSAL)
        ex = hr * sum(e * k for e, k in zip(_E, kx, strict=True))  # (b, d)
        eu = hr * sum(e * k for e, k in zip(_E, ku, strict=True))
        sx = rtol * (torch.maximum(xr.abs(), x5.abs()) + scale_v[live])
        su = rtol * (torch.maximum(ur.abs(), u5.abs()) + scale_v[live])
        err = torch.cat([ex / sx, eu / su], dim=1).pow(2).mean(dim=1).sqrt()  # (b,)
        err = torch.where(torch.isfinite(err), err, torch.inf).double()
        if groups is not None:
            g = groups[live]
            worst = torch.zeros(int(groups.max()) + 1, dtype=err.dtype, device=err.device)
            err = worst.scatter_reduce(0, g, err, "amax")[g]  # (b,) the group's error
        ok = err <= 1
        acc = live[ok]
        x[acc], u[acc], k1[acc] = x5[ok], u5[ok], ku[6][ok]
        t[acc] += hr[ok, 0].double()
        steps[acc] += 1
        tries[live] += 1
        factor = (0.9 * err.clamp_min(1e-10).pow(-0.2)).clamp(0.2, 5.0)
        factor = torch.where(torch.isfinite(err), factor, 0.5)  # a NaN stage: halve the step
        h[live] = hr[:, 0].double() * factor
        failed[live] |= (h[live] < 1e-10) | (tries[live] >= max_steps)
    if groups is not None:
        bad = torch.zeros(int(groups.max()) + 1, dtype=torch.bool, device=z.device)
        failed = bad.index_put((groups[failed],), torch.tensor(True, device=z.device))[groups]
    nan = torch.full_like(x, torch.nan)
    f = failed[:, None]
    return GeodesicShots(torch.where(f, nan, x), torch.where(f, nan, u), steps, failed)
