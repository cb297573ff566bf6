"""Health checks of a LAND mixture during EM: collapsed components, unconverged log maps."""

from __future__ import annotations

import math
import warnings

import torch
from torch import Tensor

__all__ = ["ComponentCollapseError", "collapsed_components", "warn_unconverged"]


class ComponentCollapseError(RuntimeError):
    """A mixture component lost its data (too little responsibility mass or a singular cov)."""


def collapsed_components(
    r: Tensor, factors: Tensor | None, data_var: float, dim: int
) -> list[tuple[int, str]]:
    """Components with responsibility mass below ``d + 1`` points or a covariance eigenvalue
    below ``1e-10`` times the data variance, with the reason for each.

    Args:
        r: ``(n, K)`` responsibilities.
        factors: ``(K, d, d)`` precision factors, or None (only the mass is checked).
        data_var: mean coordinate variance of the data.
        dim: d.
    """
    mass = r.sum(dim=0)  # (K,)
    min_eig = (
        torch.full_like(mass, math.inf)
        if factors is None
        else torch.linalg.eigvalsh(factors.transpose(1, 2) @ factors).amax(dim=1).reciprocal()
    )  # smallest covariance eigenvalue = 1 / largest precision eigenvalue
    out = []
    for k in range(r.shape[1]):
        if float(mass[k]) < dim + 1:
            out.append(
                (k, f"responsibility mass {float(mass[k]):.3g} points (< d + 1 = {dim + 1})")
            )
        elif float(min_eig[k]) < 1e-10 * data_var:
            out.append(
                (k, f"covariance eigenvalue {float(min_eig[k]):.3g} (< 1e-10 x data variance)")
            )
    return out


def warn_unconverged(conv: Tensor) -> None:
    """Warn with the count of unconverged log maps in the ``converged`` mask ``conv``."""
    bad = int((~conv).sum())
    if bad:
        warnings.warn(
            f"{bad} of {conv.numel()} log maps did not converge (their geodesics are the "
            "solver's best curves; see converged_/last_converged)",
            stacklevel=3,
        )
