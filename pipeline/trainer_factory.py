"""The one place where the pipeline's settings become a ``pl.Trainer``, and how it fits."""

from __future__ import annotations

import logging
import warnings
from datetime import timedelta
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from callbacks.checkpointing import AtomicCheckpointIO
from pipeline.errors import UserError
from pipeline.settings import StageSettings, TrainerSettings

__all__ = [
    "callback_seconds",
    "check_trainer_settings",
    "fit_stage",
    "float_metrics",
    "make_strategy",
    "make_trainer",
]


def check_trainer_settings(settings: TrainerSettings) -> pl.Trainer:
    """Build (and return) a Trainer from the hardware settings only, to check them up front.

    Lightning's own accelerator / devices / strategy / precision checks run in the Trainer's
    constructor, which starts no process, writes no file and creates no logger. Its complaints
    become a :class:`UserError` naming the settings, before any run folder exists.
    """
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    t = settings
    given = (
        f"trainer.accelerator={t.accelerator!r}, trainer.devices={t.devices!r}, "
        f"trainer.strategy={t.strategy!r}, trainer.num_nodes={t.num_nodes!r}, "
        f"trainer.precision={t.precision!r}"
    )
    if str(t.accelerator) in ("gpu", "cuda") and not torch.cuda.is_available():
        raise UserError(
            f"trainer.accelerator={t.accelerator!r}, but no CUDA GPU is visible here "
            "(torch.cuda.is_available() is False); accepted here: 'cpu' or 'auto'"
        )
    from pytorch_lightning.strategies import StrategyRegistry

    strategies = ("auto", *StrategyRegistry.available_strategies())
    if isinstance(t.strategy, str) and t.strategy not in strategies:
        raise UserError(f"trainer.strategy={t.strategy!r} is unknown; accepted: {strategies}")
    quiet = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # no "GPU available: ..." lines for the probe
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return pl.Trainer(
                **_hardware_arguments(t),
                logger=False,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
    except (MisconfigurationException, ValueError, TypeError, RuntimeError) as err:
        text = " ".join(str(err).split())
        raise UserError(f"invalid trainer settings ({given}): {text}") from err
    finally:
        quiet.setLevel(level)


def make_trainer(
    settings: TrainerSettings,
    stage: StageSettings,
    *,
    callbacks: list[Callback],
    logger: Any,
    default_root_dir: str,
    progress_bar: bool,
    model_summary: bool,
    checkpointing: bool = True,
) -> pl.Trainer:
    """A new Trainer for one stage.

    Args:
        settings: the ``trainer`` settings (both stages).
        stage: the stage's length.
        callbacks: the stage's callbacks (a progress bar among them when ``progress_bar``).
        logger: the run's logger, or None.
        default_root_dir: the run folder.
        progress_bar: whether ``callbacks`` hold a progress bar.
        model_summary: print Lightning's model summary.
        checkpointing: False for no checkpoint at all (benchmarks); the pipeline's own
            ``EpochEndCheckpoint`` is among ``callbacks``.
    """
    t = settings
    return pl.Trainer(
        **_hardware_arguments(t),
        max_epochs=stage.max_epochs,
        max_steps=stage.max_steps,
        limit_train_batches=None if t.limit_train_batches == 1.0 else t.limit_train_batches,
        limit_val_batches=None if t.limit_val_batches == 1.0 else t.limit_val_batches,
        log_every_n_steps=t.log_every_n_steps,
        deterministic=t.deterministic,
        num_sanity_val_steps=t.num_sanity_val_steps,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        logger=logger if logger is not None else False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=checkpointing,
        enable_progress_bar=progress_bar,
        enable_model_summary=model_summary,
        inference_mode=False,  # geometry callbacks need autograd during validation
        default_root_dir=default_root_dir,
    )


def _hardware_arguments(t: TrainerSettings) -> dict[str, Any]:
    """The ``pl.Trainer`` arguments that place the run on devices: the same for the up-front
    check and for every stage's Trainer."""
    return {
        "accelerator": t.accelerator,
        "devices": t.devices,
        "strategy": make_strategy(t.strategy, t.ddp_timeout),
        "num_nodes": t.num_nodes,
        "precision": t.precision,
    }


def make_strategy(strategy: str, ddp_timeout: int) -> Any:
    """``ddp`` / ``ddp_spawn`` become a DDPStrategy with a timeout; other names pass through."""
    if strategy in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
        from pytorch_lightning.strategies import DDPStrategy

        start = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork", "ddp_notebook": "fork"}[
            strategy
        ]
        return DDPStrategy(start_method=start, timeout=timedelta(seconds=ddp_timeout))
    return strategy


def fit_stage(
    trainer: pl.Trainer, model: pl.LightningModule, datamodule: Any, ckpt_path: str | None = None
) -> None:
    """``trainer.fit`` without Lightning's warning that an epoch has fewer batches than
    ``log_every_n_steps``: per-step metrics are written every ``log_every_n_steps`` global steps
    across epoch boundaries, and the epoch means every epoch, so short epochs lose nothing."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"The number of training batches .* is "
            r"smaller than the logging interval",
        )
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)


def callback_seconds(callbacks: list[Callback]) -> float:
    """Sum of ``total_seconds`` over the callbacks that expose it."""
    total = 0.0
    for cb in callbacks:
        value = getattr(cb, "total_seconds", None)
        if isinstance(value, (int, float)):
            total += float(value)
    return total


def float_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Scalar tensors / numbers -> floats (for JSON)."""
    out: dict[str, float] = {}
    for key, value in metrics.items():
        scalar_tensor = isinstance(value, torch.Tensor) and value.numel() == 1
        if scalar_tensor or isinstance(value, (int, float)):
            out[key] = float(value)
    return out
