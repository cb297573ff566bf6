"""Progress reporting: a choice of Lightning's bars, or plain periodic log lines (SLURM)."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.callbacks.progress import ProgressBar

__all__ = ["PROGRESS_BARS", "LogLinesProgressBar", "make_progress_bar"]

PROGRESS_BARS = ("auto", "tqdm", "rich", "log", "none")


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
        return " ".join(
            f"{k}={float(v):.4g}" if isinstance(v, (int, float)) else f"{k}={v}"
            for k, v in metrics.items()
        )

    def _head(self, trainer: pl.Trainer) -> str:
        total = trainer.max_epochs if trainer.max_epochs is not None else "?"
        return f"[stage {self.stage}] epoch {trainer.current_epoch + 1}/{total}"

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = self._last_print = time.monotonic()

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        now = time.monotonic()
        if now - self._last_print >= self.every_n_seconds:
            self._last_print = now
            total = self.total_train_batches
            self._print(
                trainer,
                f"{self._head(trainer)} batch {batch_idx + 1}/{total} "
                f"{self._metrics(trainer, pl_module)}",
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = time.monotonic() - self._epoch_start
        self._print(
            trainer,
            f"{self._head(trainer)} done in {seconds:.1f}s {self._metrics(trainer, pl_module)}",
        )


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
            raise ValueError(
                f"run.progress_bar='rich' needs the rich package ({err}); "
                "pip install rich, or use tqdm / log / none"
            ) from err
    return LogLinesProgressBar(stage, every_n_seconds)
