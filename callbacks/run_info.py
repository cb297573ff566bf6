"""The run's identity (W&B id, name, stage) inside every checkpoint."""

from __future__ import annotations

from typing import Any

from pytorch_lightning.callbacks import Callback

__all__ = ["RunInfo"]


class RunInfo(Callback):
    """Store the run's identity (W&B id, name, stage) in every checkpoint.

    Args:
        wandb_id: the W&B run id of this run.
        run_name: the run's name.
        stage: the training stage.
    """

    def __init__(self, wandb_id: str, run_name: str, stage: int) -> None:
        self.info: dict[str, Any] = {"wandb_id": wandb_id, "run_name": run_name, "stage": stage}
        self.loaded: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        return "RunInfo"

    def state_dict(self) -> dict[str, Any]:
        return dict(self.info)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.loaded = dict(state_dict)
