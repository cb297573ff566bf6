"""The run's identity (W&B id, name, stage) inside every checkpoint."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

__all__ = ["RunInfo"]


class RunInfo(Callback):
    """Store the run's identity (W&B id, name, stage) and the latest epoch's metrics in every
    checkpoint.

    The metrics let a resumed fit that has nothing left to train (killed after its last
    checkpoint) report the stage's final metrics: ``loaded["metrics"]``.

    Args:
        wandb_id: the W&B run id of this run.
        run_name: the run's name.
        stage: the training stage.
    """

    def __init__(self, wandb_id: str, run_name: str, stage: int) -> None:
        self.info: dict[str, Any] = {"wandb_id": wandb_id, "run_name": run_name, "stage": stage}
        self.metrics: dict[str, float] = {}
        self.loaded: dict[str, Any] | None = None

    def _record(self, trainer: pl.Trainer) -> None:
        metrics = {}
        for key, value in trainer.callback_metrics.items():
            scalar_tensor = isinstance(value, torch.Tensor) and value.numel() == 1
            if scalar_tensor or isinstance(value, (int, float)):
                metrics[key] = float(value)
        self.metrics = metrics

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._record(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._record(trainer)

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        # the metrics as the checkpoint is written, after every epoch-end hook that logs (the
        # geometry callbacks' included, whichever order the callbacks have)
        self._record(trainer)
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if isinstance(state, dict):
            state["metrics"] = dict(self.metrics)

    @property
    def state_key(self) -> str:
        return "RunInfo"

    def state_dict(self) -> dict[str, Any]:
        return {**self.info, "metrics": dict(self.metrics)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.loaded = dict(state_dict)
