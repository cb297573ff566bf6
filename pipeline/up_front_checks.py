"""Checks and warnings of the training pipeline that run before any work: settings that only
make sense together, and valid but suspicious settings (a ``warning:`` line on stderr)."""

from __future__ import annotations

import os
import sys
from typing import Any

from pytorch_lightning.accelerators import CPUAccelerator

from datamodules import VAEDataModule
from lightning_modules import TwoStageVAE
from pipeline.errors import UserError
from pipeline.run_folder import is_global_rank_zero
from pipeline.settings import TrainerSettings

__all__ = [
    "MAX_USUAL_LR",
    "check_stage1_checkpoint_path",
    "check_validation_data",
    "warn",
    "warn_about_devices",
    "warn_about_learning_rates",
]

#: learning rates above this get a warning (Adam's step size is about the learning rate)
MAX_USUAL_LR = 1.0


def warn(text: str) -> None:
    """A warning about a valid but suspicious setting (stderr, rank 0)."""
    if is_global_rank_zero():
        print(f"warning: {text}", file=sys.stderr, flush=True)


def _cores() -> int:
    return os.cpu_count() or 1


def warn_about_devices(trainer: TrainerSettings, probe: Any) -> None:
    """Warn when more CPU processes than cores would run (``probe``: the up-front Trainer of
    ``pipeline.trainer_factory.check_trainer_settings``)."""
    if isinstance(probe.accelerator, CPUAccelerator) and probe.num_devices > _cores():
        warn(
            f"trainer.devices={trainer.devices!r} starts {probe.num_devices} CPU "
            f"processes on {_cores()} cores: they compete for the cores, and the effective "
            f"batch size is {probe.num_devices} x data.batch_size, so results differ from "
            f"a run with fewer processes; use trainer.devices <= {_cores()}"
        )


def warn_about_learning_rates(model: TwoStageVAE) -> None:
    """Warn about a stage-1 or stage-2 learning rate above :data:`MAX_USUAL_LR`."""
    lr1 = model.hparams.lr
    model.set_stage(2)
    lr2 = model.optimizer_hparams()["lr"]
    model.set_stage(1)
    for key, value in (("lr", lr1), ("stage2_lr", lr2)):
        if value > MAX_USUAL_LR:
            warn(
                f"model.{key}={value!r} is above {MAX_USUAL_LR}: Adam then moves each "
                "weight by up to that much per step, and the loss usually explodes (often "
                "without becoming NaN). The defaults are lr=3e-3 and stage2_lr=0.1 (RBF)."
            )


def check_stage1_checkpoint_path(ckpt: str | None) -> None:
    """Raise :class:`UserError` unless ``run.stage1_checkpoint`` is None or an existing file."""
    if ckpt is None:
        return
    if os.path.isdir(ckpt):
        inside = os.path.join(ckpt, "checkpoints", "stage1", "last.ckpt")
        hint = f"e.g. {inside!r}" if os.path.isfile(inside) else "a .ckpt file"
        raise UserError(
            f"run.stage1_checkpoint={ckpt!r} is a folder; pass a checkpoint file ({hint})"
        )
    if not os.path.isfile(ckpt):
        raise UserError(f"run.stage1_checkpoint={ckpt!r} does not exist")


def check_validation_data(
    dm: VAEDataModule, limit_val_batches: int | float, enabled: list[str]
) -> None:
    """Raise :class:`UserError` when the callbacks in ``enabled`` (``geodesic_stats``,
    ``curvature_plots``) are on and there is no validation data for them."""
    if not enabled:
        return
    n_val = len(dm.val_dataset) if dm.val_dataset is not None else 0
    if n_val == 0 or limit_val_batches == 0:
        cause = (
            f"trainer.limit_val_batches={limit_val_batches!r} turns validation off"
            if n_val
            else f"data.val_fraction={dm.val_fraction!r} leaves no validation data"
        )
        raise UserError(
            f"{cause}, but {' and '.join(enabled)} run on the validation set at epoch ends; "
            "set data.val_fraction > 0 (default 0.1) and trainer.limit_val_batches > 0, or "
            + " ".join(f"--{g}.enabled false" for g in enabled)
        )
