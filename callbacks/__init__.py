"""Every Lightning callback and plugin of latent-oddity.

Geometry during training: :class:`GeodesicDistanceStats` (geodesic-vs-straight-line statistics),
:class:`CurvaturePlots` (magnification, geodesic, variance and interpolation figures), sharing
results through a :class:`GeodesicResultStore`; :class:`ReconstructionImages`. The pipeline's
own: :class:`EpochSeeder`, :class:`RunInfo`, :class:`EpochEndCheckpoint` and the
:class:`AtomicCheckpointIO` plugin, :class:`LogLinesProgressBar`, :class:`HistoryPosition`. Subclass
:class:`EpochScheduledCallback` for epoch-end work of your own. The training benchmark's:
:class:`PairedEpochTimer`.
"""

from callbacks.checkpointing import AtomicCheckpointIO, EpochEndCheckpoint
from callbacks.curvature_plots import CurvaturePlots
from callbacks.epoch_seeding import EpochSeeder
from callbacks.geodesic_results import GeodesicResult, GeodesicResultStore
from callbacks.geodesic_stats import GeodesicDistanceStats
from callbacks.history_position import HistoryPosition
from callbacks.pair_statistics import PairStatistics
from callbacks.paired_epoch_timer import PairedEpochTimer
from callbacks.progress import LogLinesProgressBar, make_progress_bar
from callbacks.reconstructions import ReconstructionImages
from callbacks.run_info import RunInfo
from callbacks.scheduling import EpochScheduledCallback

__all__ = [
    "AtomicCheckpointIO",
    "CurvaturePlots",
    "EpochEndCheckpoint",
    "EpochScheduledCallback",
    "EpochSeeder",
    "GeodesicDistanceStats",
    "GeodesicResult",
    "GeodesicResultStore",
    "HistoryPosition",
    "LogLinesProgressBar",
    "PairStatistics",
    "PairedEpochTimer",
    "ReconstructionImages",
    "RunInfo",
    "make_progress_bar",
]
