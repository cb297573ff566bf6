"""Per-pair geodesic, straight-line, latent and data-space distances, and their summary
statistics: the numbers behind :class:`callbacks.GeodesicDistanceStats`, usable on their own for
any ``embed`` (see that callback's module for what each ratio means).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import Tensor

import geometry

__all__ = [
    "RATIOS",
    "PairStatistics",
    "pair_statistics",
    "solver_keywords",
    "spearman",
    "summarize_pairs",
    "summary",
]

RATIOS = ("line_ratio", "euclid_ratio", "data_ratio")
_EPS = 1e-12


def summary(values: np.ndarray) -> dict[str, float]:
    """mean, median, 10 % and 90 % quantiles of the finite entries (NaN when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": math.nan, "median": math.nan, "q10": math.nan, "q90": math.nan}
    return {
        "mean": float(v.mean()),
        "median": float(np.median(v)),
        "q10": float(np.quantile(v, 0.1)),
        "q90": float(np.quantile(v, 0.9)),
    }


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of the pairs where both are finite (NaN if undefined)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan
    return float(spearmanr(a[ok], b[ok]).statistic)


@dataclass
class PairStatistics:
    """Per-pair results (all ``(P,)`` tensors on the CPU, float64 unless noted).

    Attributes:
        geodesic: geodesic lengths.
        line: Riemannian lengths of the straight latent lines (same nodes as the geodesic solver).
        euclidean: Euclidean latent distances ``||z1 - z0||``.
        data: data-space distances ``||mu(z1) - mu(z0)||`` of the decoded means.
        converged: bool, the solver's per-curve convergence flag.
        iterations: solver iterations per curve.
        curves: ``(P, N, d)`` geodesic nodes.
        length_errors: estimated absolute errors of ``geodesic`` (the lengths of the returned
            polylines are measured to ``length_rtol``, not summed over chords).
        length_rtol: relative tolerance of every length measurement.
    """

    geodesic: Tensor
    line: Tensor
    euclidean: Tensor
    data: Tensor
    converged: Tensor
    iterations: Tensor
    curves: Tensor
    length_errors: Tensor
    length_rtol: Tensor

    def map(self, fn: Callable[[Tensor], Tensor]) -> PairStatistics:
        """A new :class:`PairStatistics` with ``fn`` applied to every field (same order)."""
        return PairStatistics(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def __len__(self) -> int:
        return int(self.geodesic.shape[0])

    def ratios(self) -> dict[str, np.ndarray]:
        """``line_ratio``, ``euclid_ratio``, ``data_ratio`` per pair (NaN where undefined)."""
        geo = self.geodesic.double().numpy()
        out = {}
        for name, den in (
            ("line_ratio", self.line),
            ("euclid_ratio", self.euclidean),
            ("data_ratio", self.data),
        ):
            d = den.double().numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                out[name] = np.where(d > _EPS, geo / np.where(d > _EPS, d, 1.0), np.nan)
        return out


#: solver settings of the epoch-end callbacks, under any ``geodesic_options``: one start (the
#: straight line; no bent lines, no auxiliary graph start at d = 2) and at most 8 sub-points
#: per segment keep a 64-pair batch to seconds, and a pair's result independent of how the
#: pairs are sharded over DDP ranks. Lengths are still the measured lengths of the returned
#: polylines (to the solver's ``rtol``), and a curve whose objective was too coarse is reported
#: not converged.
EPOCH_END_SOLVER: dict[str, Any] = {"bent_starts": 0, "max_sub_steps": 8, "auxiliary_points": 0}


def solver_keywords(
    num_nodes: int, max_iterations: int, tolerance: float, optimizer: str, **further: Any
) -> dict[str, Any]:
    """The keyword arguments of ``geometry.connecting_geodesics`` for the callbacks' settings.

    The one place where the callbacks' settings become ``geometry``'s keyword arguments;
    :data:`EPOCH_END_SOLVER` is the default of ``further``, which is passed on unchanged.
    """
    return {
        **EPOCH_END_SOLVER,
        "num_nodes": num_nodes,
        "max_iterations": max_iterations,
        "tolerance": tolerance,
        "optimizer": optimizer,
        **further,
    }


def pair_statistics(
    embed: Callable[[Tensor], Tensor],
    mean_fn: Callable[[Tensor], Tensor],
    z0: Tensor,
    z1: Tensor,
    **geodesic_options: Any,
) -> PairStatistics:
    """Geodesic, straight-line, latent and data-space distances for pairs ``z0[i] -> z1[i]``.

    Call under ``torch.enable_grad()`` in eval mode (see ``callbacks.model_context.geometry_mode``).

    Args:
        embed: ``(B, d) -> (B, D')``, its Euclidean pull-back is the metric (``model.embed``).
        mean_fn: ``(B, d) -> (B, ...)`` the decoded mean, for the data-space distance.
        z0: start points ``(P, d)``.
        z1: end points ``(P, d)``.
        **geodesic_options: passed to ``geometry.connecting_geodesics`` (its own names, e.g.
            from :func:`solver_keywords`). The initialization is always the straight
            line, so that the returned ``initial_lengths`` are the straight lines' lengths.

    Returns:
        The per-pair :class:`PairStatistics`.
    """
    options = {k: v for k, v in geodesic_options.items() if v is not None}
    options["init"] = "line"
    res = geometry.connecting_geodesics(embed, z0, z1, **options)
    with torch.no_grad():
        data = (mean_fn(z1) - mean_fn(z0)).flatten(1).norm(dim=1)
    return PairStatistics(
        geodesic=res.lengths.detach().double().cpu(),
        line=res.initial_lengths.detach().double().cpu(),
        euclidean=(z1 - z0).detach().norm(dim=1).double().cpu(),
        data=data.detach().double().cpu(),
        converged=res.converged.detach().bool().cpu(),
        iterations=res.iterations.detach().cpu(),
        curves=res.curves.detach().cpu(),
        length_errors=res.length_errors.detach().double().cpu(),
        length_rtol=res.length_rtol.detach().double().cpu(),
    )


def summarize_pairs(
    stats: PairStatistics, labels0: Tensor | None = None, labels1: Tensor | None = None
) -> dict[str, float]:
    """Summary statistics of :func:`pair_statistics` (keys without the ``geo/`` prefix).

    Args:
        stats: per-pair results.
        labels0: labels of the start points ``(P,)``, or None.
        labels1: labels of the end points ``(P,)``, or None.

    Returns:
        ``{line,euclid,data}_ratio_{mean,median,q10,q90}``, ``spearman_geodesic_euclid``,
        ``converged_fraction``, ``mean_geodesic_length``, ``mean_line_length``, ``num_pairs``,
        the measurement's ``length_rtol`` and ``length_error_max`` (largest estimated relative
        error of a geodesic length) and, with labels, the ``within_class_*`` /
        ``between_class_*`` means and ``class_stretch``.
    """
    ratios = stats.ratios()
    out: dict[str, float] = {}
    for name in RATIOS:
        for stat, value in summary(ratios[name]).items():
            out[f"{name}_{stat}"] = value
    out["spearman_geodesic_euclid"] = spearman(stats.geodesic.numpy(), stats.euclidean.numpy())
    out["converged_fraction"] = float(stats.converged.double().mean())
    out["mean_geodesic_length"] = float(stats.geodesic.mean())
    out["mean_line_length"] = float(stats.line.mean())
    out["num_pairs"] = float(len(stats.geodesic))
    out["length_rtol"] = float(stats.length_rtol.max()) if len(stats) else math.nan
    rel = stats.length_errors / stats.geodesic.clamp_min(_EPS)
    out["length_error_max"] = float(rel.max()) if len(stats) else math.nan
    if labels0 is not None and labels1 is not None:
        same = (labels0.cpu() == labels1.cpu()).numpy()
        for group, mask in (("within_class", same), ("between_class", ~same)):
            out[f"{group}_pairs"] = float(mask.sum())
            for name in RATIOS:
                out[f"{group}_{name}_mean"] = summary(ratios[name][mask])["mean"]
        within = out["within_class_euclid_ratio_mean"]
        between = out["between_class_euclid_ratio_mean"]
        out["class_stretch"] = (
            between / within if within > 0 and math.isfinite(within) else math.nan
        )
    return out
