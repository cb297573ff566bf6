"""The public base class of the epoch-end geometry callbacks: when they run, each epoch once."""

from __future__ import annotations

import time
from typing import Any

import pytorch_lightning as pl

from callbacks.model_context import model_stage

__all__ = ["EpochScheduledCallback", "check_ints"]


def check_ints(**limits: tuple[object, int]) -> None:
    """Check settings given as ``name=(value, minimum)``: each an int (not bool) >= minimum.

    Raises:
        ValueError: naming the first bad setting, its value and what is accepted.
    """
    for name, (value, minimum) in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")


class EpochScheduledCallback(pl.Callback):
    """Base class: run :meth:`run_epoch` every ``every_n_epochs`` epochs and at the end of training.

    The work happens once per epoch, at the first of these points that the epoch reaches:

    1. ``on_train_epoch_end`` (after the epoch's validation; before Lightning's checkpoint
       callbacks, which Lightning calls last, so the saved state records the epoch as handled);
    2. ``on_train_end``: the last epoch of the fit when it was not handled at its end (a fit
       stopped early by a stop request). Scalars are then written to the loggers directly.

    The last epoch handled is kept per model stage in the checkpoint state, so a resumed run never
    handles an epoch twice, and one instance may serve both stages. ``total_seconds`` accumulates
    the wall time spent in :meth:`run_epoch` over the callback's lifetime.

    Args:
        every_n_epochs: run every this many epochs (epoch indices ``n-1, 2n-1, ...``); 0 = only at
            the end of each stage.
        run_at_end: also run on the last epoch of each stage.
    """

    def __init__(self, every_n_epochs: int, run_at_end: bool = True) -> None:
        super().__init__()
        check_ints(every_n_epochs=(every_n_epochs, 0))
        if every_n_epochs == 0 and not run_at_end:
            raise ValueError("every_n_epochs=0 with run_at_end=False would never run")
        self.every_n_epochs = every_n_epochs
        self.run_at_end = bool(run_at_end)
        self.total_seconds: float = 0.0
        self.last_epoch_by_stage: dict[int, int] = {}
        #: (stage, epoch) pairs handled by this instance (not checkpointed; for inspection/tests).
        self.history: list[tuple[int, int]] = []
        self._last_started_epoch = -1

    # -- to implement
    def run_epoch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int, can_log: bool
    ) -> None:  # pragma: no cover - abstract
        """Do the work for ``epoch``; ``can_log`` says whether ``pl_module.log`` is allowed."""
        raise NotImplementedError

    # -- decisions (identical on every rank: they depend only on epoch counters and settings)
    def _is_last_epoch(self, trainer: pl.Trainer, epoch: int) -> bool:
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0 and epoch + 1 >= max_epochs:
            return True
        return trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step

    def _due(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> bool:
        if epoch < 0 or epoch <= self.last_epoch_by_stage.get(model_stage(pl_module), -1):
            return False
        if self.every_n_epochs > 0 and (epoch + 1) % self.every_n_epochs == 0:
            return True
        return self.run_at_end and self._is_last_epoch(trainer, epoch)

    def _handle(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int, can_log: bool
    ) -> None:
        start = time.perf_counter()
        try:
            self.run_epoch(trainer, pl_module, epoch, can_log)
        finally:
            self.total_seconds += time.perf_counter() - start
        stage = model_stage(pl_module)
        self.last_epoch_by_stage[stage] = epoch
        self.history.append((stage, epoch))

    # -- hooks
    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last_started_epoch = trainer.current_epoch

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self._due(trainer, pl_module, epoch):
            self._handle(trainer, pl_module, epoch, can_log=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.run_at_end:
            return
        epoch = self._last_started_epoch  # the fit's last epoch (the counter may have moved on)
        if epoch > self.last_epoch_by_stage.get(model_stage(pl_module), -1):
            self._handle(trainer, pl_module, epoch, can_log=False)

    # -- checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {
            "last_epoch_by_stage": {int(k): int(v) for k, v in self.last_epoch_by_stage.items()}
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        last = state_dict.get("last_epoch_by_stage", {})
        self.last_epoch_by_stage = {int(k): int(v) for k, v in last.items()}
