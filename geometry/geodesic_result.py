"""The result of :func:`geometry.connecting_geodesics` and how per-pair results combine.

When several starts are optimized, or a curve is optimized again at more nodes, the results are
merged pair by pair (:func:`better`, :func:`better_at`): the measurably shorter curve is kept,
and lengths within both results' tolerances count as a tie, which a converged result wins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from geometry.curves import CurveLengths

__all__ = [
    "GeodesicResult",
    "better",
    "better_at",
    "empty_result",
    "put_measured",
    "take_measured",
]


@dataclass
class GeodesicResult:
    """Output of :func:`connecting_geodesics` (batch-first; every field is a tensor).

    Attributes:
        curves: ``(B, N, d)`` node positions; ``curves[:, 0] == z0`` and ``curves[:, -1] == z1``.
        lengths: ``(B,)`` Riemannian lengths of the returned polylines, measured to
            ``length_rtol`` (:func:`geometry.curves.measure_curve_lengths`).
        length_errors: ``(B,)`` estimated absolute errors of ``lengths``.
        length_rtol: ``(B,)`` relative tolerance the lengths were measured at.
        energies: ``(B,)`` ``(N - 1) * sum_i l_i^2`` with the measured segment lengths ``l_i``
            (``>= lengths**2``; equal for equal segments).
        chord_lengths: ``(B,)`` chord sums on the ``N`` nodes (a lower bound; for reference).
        converged: ``(B,)`` bool; stationary and faithful and measured and not reverted.
        stationary: ``(B,)`` bool; the stationarity test passed on the optimized objective
            (first order, and for ``optimizer="lm"`` on decoders with second derivatives no
            second-order step on the exact Hessian lowers the length by more than ``rtol``).
        faithful: ``(B,)`` bool; the objective's length agreed with the measured length to
            ``length_rtol`` (the sub-point resolution was fine enough).
        sub_steps: ``(B,)`` int64, sub-points per segment of the final objective.
        iterations: ``(B,)`` int64, optimizer steps taken by each curve (all starts).
        initial_lengths: ``(B,)`` measured lengths of the initial curves (after resampling to
            ``N`` nodes; the best start's when several were tried).
        reverted: ``(B,)`` bool; the initial curve was returned because the optimized one was
            longer.
        node_gains: ``(B,)`` relative decrease of the measured length at the curve's last node
            doubling (``max_num_nodes``); NaN where the node count was not refined.
    """

    curves: Tensor
    lengths: Tensor
    length_errors: Tensor
    length_rtol: Tensor
    energies: Tensor
    chord_lengths: Tensor
    converged: Tensor
    stationary: Tensor
    faithful: Tensor
    sub_steps: Tensor
    iterations: Tensor
    initial_lengths: Tensor
    reverted: Tensor
    node_gains: Tensor

    def __len__(self) -> int:
        return int(self.curves.shape[0])


def take_measured(meas: CurveLengths, mask: Tensor) -> CurveLengths:
    """The measurements of the curves selected by ``mask`` (bool or index)."""
    return CurveLengths(
        lengths=meas.lengths[mask], errors=meas.errors[mask],
        segment_lengths=meas.segment_lengths[mask], converged=meas.converged[mask],
        pieces=meas.pieces[mask], rtol=meas.rtol, evaluations=meas.evaluations,
    )  # fmt: skip


def put_measured(dst: CurveLengths, idx: Tensor, src: CurveLengths) -> None:
    """Write the measurements ``src`` into ``dst`` at the curves ``idx``, in place."""
    for name in ("lengths", "errors", "segment_lengths", "converged", "pieces"):
        getattr(dst, name)[idx] = getattr(src, name).to(getattr(dst, name).dtype)


def better(old: GeodesicResult, new: GeodesicResult, by_length: bool = False) -> GeodesicResult:
    """Per pair, the result with the smaller measured length; lengths within both results'
    tolerances (``length_rtol``) of each other count as a tie, which a converged result wins
    over an unconverged one (with ``by_length`` only the length counts). A converged curve is
    never kept over a measurably shorter one: the shorter curve is the better distance, and its
    own ``converged`` flag says whether it is stationary. Iterations add up."""
    take = new.lengths < old.lengths
    if not by_length:
        slack = (old.length_rtol * old.lengths).abs() + (new.length_rtol * new.lengths).abs()
        tie = (new.lengths - old.lengths).abs() <= slack
        prefer = (new.converged & ~old.converged) | ((new.converged == old.converged) & take)
        take = torch.where(tie, prefer, take)
    fields = {}
    for name, o in old.__dict__.items():
        n = getattr(new, name)
        mask = take.view(-1, *([1] * (o.ndim - 1)))
        fields[name] = torch.where(mask, n, o)
    fields["iterations"] = old.iterations + new.iterations
    return GeodesicResult(**fields)


def better_at(old: GeodesicResult, new: GeodesicResult, idx: Tensor) -> GeodesicResult:
    """:func:`better` of ``old`` and ``new`` on the pairs ``idx (b,)`` of ``old`` that ``new``
    holds (in that order); the other pairs keep ``old``."""
    sub = GeodesicResult(**{name: value[idx] for name, value in old.__dict__.items()})
    merged = better(sub, new)
    for name, value in merged.__dict__.items():
        getattr(old, name)[idx] = value
    return old


def empty_result(z0: Tensor, z1: Tensor, num_nodes: int, rtol: float) -> GeodesicResult:
    """Results for constant curves ``z0 -> z0`` (length 0, converged); filled in by the solver."""
    B, d = z0.shape
    zeros = z0.new_zeros(B)
    true = torch.ones(B, dtype=torch.bool, device=z0.device)
    return GeodesicResult(
        curves=z0[:, None].expand(B, num_nodes, d).clone(),
        lengths=zeros.clone(),
        length_errors=zeros.clone(),
        length_rtol=z0.new_full((B,), rtol),
        energies=zeros.clone(),
        chord_lengths=zeros.clone(),
        converged=true.clone(),
        stationary=true.clone(),
        faithful=true.clone(),
        sub_steps=torch.ones(B, dtype=torch.long, device=z0.device),
        iterations=torch.zeros(B, dtype=torch.long, device=z0.device),
        initial_lengths=zeros.clone(),
        reverted=~true,
        node_gains=torch.full_like(zeros, math.nan),
    )
