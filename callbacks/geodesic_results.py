"""The latest results of a :class:`~callbacks.GeodesicDistanceStats`, shared explicitly.

A :class:`GeodesicResultStore` is handed to both callbacks that use the results: the statistics
callback publishes into it (``GeodesicDistanceStats(results=store)``) and the curvature figures
read from it (``CurvaturePlots(geodesics=store)``) to draw the same geodesics instead of solving
new ones. Neither callback looks for the other in ``trainer.callbacks``.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from callbacks.pair_statistics import PairStatistics

__all__ = ["GeodesicResult", "GeodesicResultStore"]


@dataclass(frozen=True)
class GeodesicResult:
    """One epoch's pair results (identical on every DDP rank; tensors on the CPU).

    Attributes:
        stage: the model stage.
        epoch: the epoch.
        pairs: ``(i, j)`` indices into the validation dataset, one per pair.
        stats: per-pair lengths, flags and curves.
        z0: start codes ``(P, d)``.
        z1: end codes ``(P, d)``.
        labels0: labels of the start points ``(P,)``, or None.
        labels1: labels of the end points ``(P,)``, or None.
        metrics: the logged scalars (with the key prefix).
    """

    stage: int
    epoch: int
    pairs: list[tuple[int, int]]
    stats: PairStatistics
    z0: Tensor
    z1: Tensor
    labels0: Tensor | None
    labels1: Tensor | None
    metrics: dict[str, float]


class GeodesicResultStore:
    """Holds the latest :class:`GeodesicResult` (one store per Trainer)."""

    def __init__(self) -> None:
        self.latest: GeodesicResult | None = None

    def publish(self, result: GeodesicResult) -> None:
        """Replace the latest result."""
        self.latest = result

    def get(self, stage: int, epoch: int) -> GeodesicResult | None:
        """The result of ``(stage, epoch)`` if that is the latest, else None."""
        res = self.latest
        if res is not None and res.stage == stage and res.epoch == epoch:
            return res
        return None
