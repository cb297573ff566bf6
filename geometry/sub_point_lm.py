"""Levenberg-Marquardt on the sub-point length of polylines, as :mod:`geometry.geodesics` runs it.

One call optimizes the interior nodes of a batch of polylines at ``m`` sub-points per segment
(:mod:`geometry.sub_point_length`): first the segment energy ``(N - 1) sum_i lambda_i^2`` (well
conditioned: it fixes where the nodes sit along the curve), then the length
``sum_i lambda_i`` from there, by :func:`geometry.polyline_lm.levenberg_marquardt`.

The length is not a sum of squares: its Gauss-Newton model drops the second derivatives of the
decoder and LM on it converges linearly. From latent dimension ``NEWTON_MIN_DIM`` on, every
length step also tries a truncated Newton step on its exact Hessian (``d // 2`` Hessian-vector
products at most, preconditioned by the Gauss-Newton solve); a product costs about one reverse
pass, the Gauss-Newton model ``d`` forward-mode tangents, so below that dimension the products
would cost more than the steps they save. With the Newton steps, trial steps are judged by
forward passes alone (the Jacobians only where a step is taken, and after an accepted step up to
``MAX_FROZEN`` frozen-model steps: the same Gauss-Newton matrix with the exact gradient by one
reverse pass); below that dimension a forward pass costs about as much as the terms.

Each forward-mode pass and Hessian graph holds at most ``PASS_ELEMENTS`` embedded values (rows
times ``D'``), so that the tangents stay cache-sized on wide decoders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geometry._checks import Embed, embed_flat
from geometry.polyline_lm import LMTerms, leave_saddles, levenberg_marquardt
from geometry.sub_point_length import (
    sub_point_gradient,
    sub_point_length_hvp,
    sub_point_length_terms,
    sub_point_values,
)

__all__ = [
    "MAX_FROZEN",
    "NEWTON_MIN_DIM",
    "PASS_ELEMENTS",
    "SubPointLM",
    "has_hessian_products",
    "leave_sub_point_saddles",
    "pass_rows",
    "sub_point_lm",
]

NEWTON_MIN_DIM = 4  # latent dimension from which the length phase takes Newton-CG steps
MAX_FROZEN = 8  # most consecutive frozen-model LM steps (where trial steps are forward-only)
PASS_ELEMENTS = 1 << 22  # most embedded values (rows x D') per forward-mode pass or Hessian graph


@dataclass
class SubPointLM:
    """Optimized interior nodes of ``B`` curves at one sub-point level.

    ``x (B, n, d)`` final nodes (a copy), ``stationary (B,)``, ``iterations (B,)`` (both
    phases), ``length (B,)`` the objective's length ``sum_i lambda_i`` at ``x`` and ``noise
    (B,)`` its roundoff level (float64).
    """

    x: Tensor
    stationary: Tensor
    iterations: Tensor
    length: Tensor
    noise: Tensor


class _Objective:
    """The sub-point length (or segment energy) of ``embed`` at ``m`` sub-points, as the
    callables :func:`~geometry.polyline_lm.levenberg_marquardt` takes."""

    def __init__(self, embed: Embed, m: int, rows: int, chunk_size: int, energy: bool) -> None:
        self.embed, self.m, self.rows, self.chunk_size, self.energy = (
            embed, m, rows, chunk_size, energy,
        )  # fmt: skip

    def terms(self, xs: Tensor, a: Tensor, b: Tensor) -> LMTerms:
        return sub_point_length_terms(self.embed, xs, a, b, self.m, self.rows, energy=self.energy)

    def values(self, xs: Tensor, a: Tensor, b: Tensor) -> Tensor:
        return sub_point_values(self.embed, xs, a, b, self.m, self.chunk_size, energy=self.energy)

    def gradient(self, xs: Tensor, a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return sub_point_gradient(self.embed, xs, a, b, self.m, self.rows, energy=self.energy)

    def hessian(self, xs: Tensor, a: Tensor, b: Tensor) -> Callable[[Tensor], Tensor]:
        """Hessian-vector products of the length (not of the energy)."""
        return sub_point_length_hvp(self.embed, xs, a, b, self.m, self.rows)


def sub_point_lm(
    embed: Embed,
    x: Tensor,
    z0: Tensor,
    z1: Tensor,
    m: int,
    tolerance: float,
    max_iterations: int,
    chunk_size: int,
    bar: tqdm,
    saddle_rtol: float | None = None,
    energy_phase: bool = True,
) -> SubPointLM:
    """LM on interior nodes ``x (B, n, d)`` for the length at ``m`` sub-points per segment:
    the segment-energy phase, then the length phase, each at most ``max_iterations`` steps.

    With ``saddle_rtol`` the length phase also tries second-order steps where it is stationary
    (``levenberg_marquardt``'s ``saddle_hessian``, moves that lower the length by more than
    ``saddle_rtol``); ``energy_phase=False`` skips the energy phase (a run from a second-order
    step, which the energy phase would slide along the curve, possibly into another basin).
    """
    rows = pass_rows(embed, z0, chunk_size)
    length = _Objective(embed, m, rows, chunk_size, energy=False)
    energy = _Objective(embed, m, rows, chunk_size, energy=True)
    d = x.shape[2]
    products = has_hessian_products(embed, x, z0, z1, m, chunk_size)
    newton = d >= NEWTON_MIN_DIM and products
    # trial steps judged by forward passes alone where a pass is much cheaper than the terms
    frozen = MAX_FROZEN if newton else 0
    its0 = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    if energy_phase:
        x, _, its0, _ = levenberg_marquardt(
            energy.terms, x, z0, z1, tolerance, max_iterations, bar,
            energy.values if newton else None, gradient=energy.gradient, max_frozen=frozen,
        )  # fmt: skip
    x, stationary, iterations, tm = levenberg_marquardt(
        length.terms, x, z0, z1, tolerance, max_iterations, bar,
        length.values if newton else None, length.hessian if newton else None, d // 2,
        gradient=length.gradient, max_frozen=frozen,
        saddle_hessian=length.hessian if products and saddle_rtol is not None else None,
        saddle_objective=length.values, saddle_rtol=saddle_rtol or 0.0,
    )  # fmt: skip
    return SubPointLM(x, stationary, iterations + its0, tm.L, tm.noise)


def leave_sub_point_saddles(
    embed: Embed, x: Tensor, z0: Tensor, z1: Tensor, m: int, min_decrease: float, chunk_size: int
) -> Tensor | None:
    """Second-order trial steps (:func:`geometry.polyline_lm.leave_saddles`) on the length at
    ``m`` sub-points from interior nodes ``x (B, n, d)``, moved in place; returns the indices of
    the curves whose length dropped by more than ``min_decrease`` (relative, plus roundoff), or
    ``None`` where ``embed`` has no second derivatives by autograd."""
    if not has_hessian_products(embed, x, z0, z1, m, chunk_size):
        return None
    length = _Objective(embed, m, pass_rows(embed, z0, chunk_size), chunk_size, energy=False)
    tm = length.terms(x, z0, z1)
    every = torch.arange(x.shape[0], device=x.device)
    return leave_saddles(
        length.hessian, length.values, x, z0, z1, every, tm, min_decrease, tm.noise
    )


def pass_rows(embed: Embed, z: Tensor, chunk_size: int) -> int:
    """Rows per forward-mode pass (and points per Hessian graph) of the LM terms: at most
    ``chunk_size`` and at most ``PASS_ELEMENTS`` embedded values (``D'`` per row, read off
    ``embed`` at the first point of ``z (B, d)``), so that a pass's tangents stay cache-sized
    on wide decoders; at least one row."""
    width = int(embed_flat(embed, z[:1]).shape[1])
    return max(1, min(chunk_size, PASS_ELEMENTS // max(1, width)))


def has_hessian_products(
    embed: Embed, x: Tensor, z0: Tensor, z1: Tensor, m: int, chunk_size: int
) -> bool:
    """Whether ``embed`` has second derivatives by autograd (double backward), tried on the
    first curve of ``x (B, n, d)``; e.g. ``torch.cdist`` has none."""
    try:
        sub_point_length_hvp(embed, x[:1], z0[:1], z1[:1], m, chunk_size)(torch.zeros_like(x[:1]))
    except (RuntimeError, NotImplementedError):
        return False
    return True
