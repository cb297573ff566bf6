"""Where the epoch-end callbacks' results go: PNG files, W&B images, logged scalars, warnings."""

from __future__ import annotations

import os
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_warn

__all__ = ["figure_dir", "log_images", "log_scalars", "save_figure", "wandb_loggers", "warn_once"]


def figure_dir(trainer: pl.Trainer, output_dir: str | None) -> str:
    """The folder for PNG figures: ``output_dir`` or ``<trainer.default_root_dir>/figures``."""
    path = output_dir if output_dir else os.path.join(trainer.default_root_dir, "figures")
    os.makedirs(path, exist_ok=True)
    return path


def wandb_loggers(trainer: pl.Trainer) -> list[WandbLogger]:
    """The trainer's W&B loggers (usually zero or one)."""
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def save_figure(fig: Any, path: str, dpi: int) -> str:
    """Write ``fig`` as a PNG to ``path`` (Agg canvas; nothing is shown or kept open)."""
    fig.savefig(path, dpi=dpi)
    return path


def log_images(trainer: pl.Trainer, images: dict[str, str]) -> None:
    """Log PNG files as W&B images (``key -> path``) at the trainer's global step. Rank 0 only."""
    if not images or not trainer.is_global_zero:
        return
    for logger in wandb_loggers(trainer):
        for key, path in images.items():
            logger.log_image(key=key, images=[path], step=trainer.global_step)


def log_scalars(
    trainer: pl.Trainer, pl_module: pl.LightningModule, metrics: dict[str, float], can_log: bool
) -> None:
    """Log scalars that are identical on every rank.

    With ``can_log`` (epoch-end hooks) through ``pl_module.log`` (every logger and
    ``callback_metrics``; called on every rank with the same value, no synchronization);
    otherwise (``on_train_end``) straight to the loggers, which write on rank 0 only.
    """
    if can_log:
        for key, value in metrics.items():
            pl_module.log(key, float(value), on_step=False, on_epoch=True, sync_dist=False)
        return
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(dict(metrics), step=trainer.global_step)
    for key, value in metrics.items():
        trainer.callback_metrics[key] = torch.tensor(float(value))


def warn_once(message: str, _seen: set[str] = set()) -> None:  # noqa: B006 - intentional cache
    """``rank_zero_warn`` a message once per process."""
    if message not in _seen:
        _seen.add(message)
        rank_zero_warn(message)
