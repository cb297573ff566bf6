"""Tell the run's history which stage and epoch the records being logged belong to."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

__all__ = ["HistoryPosition"]


class HistoryPosition(Callback):
    """Set ``history.stage`` and ``history.epoch`` (0-based) at the start of training and of
    every epoch, so each record the logger keeps is tagged with the epoch it belongs to (what a
    resume from an epoch's checkpoint keeps: ``pipeline.loggers.RunHistory.rewind``).

    Args:
        history: any object with ``stage`` and ``epoch`` attributes.
        stage: the training stage of this fit.
    """

    def __init__(self, history: Any, stage: int) -> None:
        self.history = history
        self.stage = stage

    def _set(self, trainer: pl.Trainer) -> None:
        self.history.stage = self.stage
        self.history.epoch = trainer.current_epoch

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._set(trainer)
