"""Trainer, logger and helper callbacks for ``scripts/train.py`` (no CLI here).

Helper callbacks:

* :class:`EpochSeeder` makes every epoch's randomness a function of (seed, stage, epoch, rank), so
  a run resumed from an epoch-end checkpoint continues bit-identically (Lightning does not store
  RNG states in checkpoints).
* :class:`RunInfo` keeps the W&B run id and the run name inside each checkpoint.
* :class:`LogLinesProgressBar` prints plain periodic lines instead of a live bar, for SLURM and
  other non-terminal logs.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import warnings
from datetime import timedelta
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.callbacks.progress import ProgressBar

PROGRESS_BARS = ("auto", "tqdm", "rich", "log", "none")
LOGGERS = ("wandb", "csv", "none")
WANDB_MODES = ("auto", "online", "offline", "disabled")


def derived_seed(*parts: int | str) -> int:
    """A 63-bit seed from any parts (stable across processes and Python versions)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class EpochSeeder(Callback):
    """Reseed torch and the training dataloader's shuffle generator at every epoch start.

    Reseeding at ``on_train_epoch_start`` happens before Lightning creates the epoch's dataloader
    iterator, so the shuffle order and the reparameterisation noise of epoch ``e`` depend only on
    (seed, stage, e, rank) and not on what ran before: a resumed run replays the same epochs.

    Args:
        seed: the run seed.
        stage: the training stage (1 or 2).
    """

    def __init__(self, seed: int, stage: int) -> None:
        self.seed = int(seed)
        self.stage = int(stage)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        torch.manual_seed(derived_seed(self.seed, self.stage, epoch, trainer.global_rank))
        shuffle_seed = derived_seed(self.seed, self.stage, epoch, "shuffle")
        combined = getattr(trainer.fit_loop, "_combined_loader", None)
        loaders = combined.flattened if combined is not None else []
        for loader in loaders:
            for sampler in (getattr(loader, "sampler", None),
                            getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
                generator = getattr(sampler, "generator", None)
                if isinstance(generator, torch.Generator):
                    generator.manual_seed(shuffle_seed)
        # In the first epoch of a fit (fresh or resumed) Lightning created the epoch's dataloader
        # iterator in FitLoop.setup_data, before this hook, and drew a seed from the generator
        # then; it only re-creates it itself in later epochs. Re-create it here in that case so
        # every epoch consumes the reseeded generator identically (checked against Lightning
        # 2.6's TrainingEpochLoop.on_run_start condition).
        fit_loop = trainer.fit_loop
        lightning_iterates = (epoch > 0 and not getattr(fit_loop, "is_resuming", False)
                              and not fit_loop.epoch_loop.restarting)
        fetcher = getattr(fit_loop, "_data_fetcher", None)
        if not lightning_iterates and fetcher is not None:
            iter(fetcher)


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


class LogLinesProgressBar(ProgressBar):
    """Progress as plain log lines (rank 0): one every ``every_n_seconds`` and one per epoch.

    Args:
        stage: the training stage, shown in each line.
        every_n_seconds: minimum interval between two in-epoch lines.
        stream: where to write (``sys.stdout`` by default).
    """

    def __init__(self, stage: int, every_n_seconds: float = 30.0, stream: Any = None) -> None:
        super().__init__()
        self.stage = stage
        self.every_n_seconds = float(every_n_seconds)
        self.stream = stream
        self._enabled = True
        self._last_print = 0.0
        self._epoch_start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _print(self, trainer: pl.Trainer, text: str) -> None:
        if self._enabled and trainer.is_global_zero:
            print(text, file=self.stream or sys.stdout, flush=True)

    def _metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> str:
        metrics = self.get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return " ".join(f"{k}={float(v):.4g}" if isinstance(v, (int, float)) else f"{k}={v}"
                        for k, v in metrics.items())

    def _head(self, trainer: pl.Trainer) -> str:
        total = trainer.max_epochs if trainer.max_epochs is not None else "?"
        return f"[stage {self.stage}] epoch {trainer.current_epoch + 1}/{total}"

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = self._last_print = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.monotonic()
        if now - self._last_print >= self.every_n_seconds:
            self._last_print = now
            total = self.total_train_batches
            self._print(trainer, f"{self._head(trainer)} batch {batch_idx + 1}/{total} "
                                 f"{self._metrics(trainer, pl_module)}")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = time.monotonic() - self._epoch_start
        self._print(trainer, f"{self._head(trainer)} done in {seconds:.1f}s "
                             f"{self._metrics(trainer, pl_module)}")


def make_progress_bar(kind: str, stage: int, every_n_seconds: float) -> Callback | None:
    """The progress-bar callback for ``kind``; ``None`` means no bar.

    ``auto`` is ``tqdm`` on a terminal and ``log`` otherwise (SLURM, CI, pipes).
    """
    if kind not in PROGRESS_BARS:
        raise ValueError(f"run.progress_bar={kind!r} is not supported; accepted: {PROGRESS_BARS}")
    if kind == "auto":
        kind = "tqdm" if sys.stderr.isatty() else "log"
    if kind == "none":
        return None
    if kind == "tqdm":
        from pytorch_lightning.callbacks import TQDMProgressBar

        return TQDMProgressBar()
    if kind == "rich":
        try:
            from pytorch_lightning.callbacks import RichProgressBar

            return RichProgressBar()
        except (ImportError, ModuleNotFoundError) as err:
            raise ValueError(f"run.progress_bar='rich' needs the rich package ({err}); "
                             "pip install rich, or use tqdm / log / none") from err
    return LogLinesProgressBar(stage, every_n_seconds)


def make_strategy(strategy: str, ddp_timeout: int) -> Any:
    """``ddp`` / ``ddp_spawn`` become a DDPStrategy with a timeout; other names pass through."""
    if strategy in ("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook"):
        from pytorch_lightning.strategies import DDPStrategy

        start = {"ddp": "popen", "ddp_spawn": "spawn", "ddp_fork": "fork",
                 "ddp_notebook": "fork"}[strategy]
        return DDPStrategy(start_method=start, timeout=timedelta(seconds=ddp_timeout))
    return strategy


def fit_stage(trainer: pl.Trainer, model: pl.LightningModule, datamodule: Any,
              ckpt_path: str | None = None) -> None:
    """``trainer.fit`` without Lightning's warning that an epoch has fewer batches than
    ``log_every_n_steps``: per-step metrics are written every ``log_every_n_steps`` global steps
    across epoch boundaries, and the epoch means every epoch, so short epochs lose nothing."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The number of training batches .* is "
                                r"smaller than the logging interval")
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


def make_logger(kind: str, run_dir: str, run_name: str, wandb_id: str, wandb_mode: str,
                project: str, entity: str | None) -> Any:
    """The run's logger, shared by both stages' Trainers (``None`` for no logger).

    W&B: ``WandbLogger(id=wandb_id, resume="allow")`` under ``<run_dir>/wandb``, online or
    offline as resolved by :func:`scripts._run_folder.resolve_wandb_mode`.
    """
    if kind not in LOGGERS:
        raise ValueError(f"run.logger={kind!r} is not supported; accepted: {LOGGERS}")
    if kind == "none":
        return None
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=run_dir, name="csv", version="")
    from pytorch_lightning.loggers import WandbLogger

    if wandb_mode == "disabled":
        os.environ["WANDB_MODE"] = "disabled"
    return WandbLogger(
        name=run_name,
        id=wandb_id,
        resume="allow",
        save_dir=run_dir,
        project=project,
        entity=entity,
        offline=wandb_mode == "offline",
        log_model=False,
    )
