"""The Lightning callbacks of one training stage, in the order the pipeline needs them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pytorch_lightning.callbacks import Callback

from callbacks import (
    CurvaturePlots,
    EpochEndCheckpoint,
    EpochSeeder,
    GeodesicDistanceStats,
    GeodesicResultStore,
    HistoryPosition,
    ReconstructionImages,
    RunInfo,
    make_progress_bar,
)
from pipeline.errors import UserError
from pipeline.loggers import RunHistory
from pipeline.settings import RunSettings

__all__ = ["CallbackFactory", "geometry_callbacks", "stage_callbacks"]

#: a function giving the extra callbacks of one stage (called once per stage: new instances)
CallbackFactory = Callable[[int], Sequence[Callback]]


def geometry_callbacks(
    geodesic_stats: Mapping[str, Any] | None,
    curvature_plots: Mapping[str, Any] | None,
    figures_dir: str,
) -> list[Callback]:
    """Fresh ``GeodesicDistanceStats`` / ``CurvaturePlots`` (None: off) sharing one result
    store; bad settings raise :class:`UserError`."""
    store = GeodesicResultStore()
    out: list[Callback] = []
    if geodesic_stats is not None:
        try:
            out.append(GeodesicDistanceStats(**geodesic_stats, results=store))
        except (ValueError, TypeError) as err:
            raise UserError(f"invalid geodesic_stats settings: {err}") from err
    if curvature_plots is not None:
        kwargs = {**curvature_plots, "output_dir": figures_dir}
        try:
            out.append(CurvaturePlots(**kwargs, geodesics=store))
        except (ValueError, TypeError) as err:
            raise UserError(f"invalid curvature_plots settings: {err}") from err
    return out


def stage_callbacks(
    stage: int,
    run: RunSettings,
    *,
    wandb_id: str,
    figures_dir: str,
    checkpoint_dir: str,
    geometry: list[Callback],
    history: RunHistory | None,
    extra: CallbackFactory | None,
    on_checkpoint_write: Callable[[], None],
) -> tuple[list[Callback], bool]:
    """The stage's callbacks, and whether they include a progress bar.

    Order: the history tagger first (records are tagged before any logging), the seeder, the
    run info, reconstructions, ``geometry`` (statistics before figures), ``extra(stage)``, the
    progress bar, and the checkpoint last (after every epoch-end hook that logs).
    """
    callbacks: list[Callback] = [EpochSeeder(run.seed, stage), RunInfo(wandb_id, run.name, stage)]
    if run.reconstructions > 0:
        callbacks.append(
            ReconstructionImages(
                run.reconstructions, run.reconstructions_every_n_epochs, save_dir=figures_dir
            )
        )
    callbacks += geometry
    if history is not None:
        callbacks.insert(0, HistoryPosition(history, stage))
    if extra is not None:
        callbacks += list(extra(stage))
    try:
        progress = make_progress_bar(run.progress_bar, stage, run.log_every_n_seconds)
    except ValueError as err:
        raise UserError(str(err)) from err
    if progress is not None:
        callbacks.append(progress)
    callbacks.append(
        EpochEndCheckpoint(
            checkpoint_dir, run.checkpoint_every_n_seconds, on_write=on_checkpoint_write
        )
    )
    return callbacks, progress is not None
