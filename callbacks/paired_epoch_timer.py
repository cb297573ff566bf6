"""Lightning epochs timed in pairs with an epoch of another loop run right before each (the
training benchmark, :mod:`benchmarks.training`)."""

from __future__ import annotations

import time
from typing import Protocol

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

__all__ = ["EpochRunner", "PairedEpochTimer", "synchronize"]


class EpochRunner(Protocol):
    """What :class:`PairedEpochTimer` interleaves: one epoch of a loop, timed by itself.

    Attributes:
        device: the device the loop runs on (CUDA work is waited for before a time is taken).
    """

    device: torch.device

    def epoch(self) -> float:
        """Run one epoch; its wall time in seconds."""
        ...


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that wall-clock times include it.

    Args:
        device: the device whose queue is waited for (a no-op on the CPU).
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PairedEpochTimer(Callback):
    """Time each Lightning epoch, and run one plain-loop epoch right before it.

    A Lightning epoch spans from one ``on_train_epoch_start`` to the next (so it includes
    validation, checkpoint writing and logger flushes), the last one ends at ``on_train_end``.
    This callback must come first in the Trainer's list, so that the plain epoch runs outside the
    Lightning epoch's window and the other callbacks' epoch-start work inside it. The plain epoch
    leaves torch's global RNG as it found it.

    Args:
        plain: the plain loop to interleave (e.g. :class:`benchmarks.training.PlainLoop`).

    Attributes:
        plain_seconds: the plain loop's epoch times, one per Lightning epoch.
        lightning_seconds: the Lightning epochs' times.
    """

    def __init__(self, plain: EpochRunner) -> None:
        self.plain = plain
        self.plain_seconds: list[float] = []
        self.lightning_seconds: list[float] = []
        self._start: float | None = None

    def _close_epoch(self) -> None:
        synchronize(self.plain.device)
        if self._start is not None:
            self.lightning_seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_epoch()
        state = torch.random.get_rng_state()
        self.plain_seconds.append(self.plain.epoch())
        torch.random.set_rng_state(state)  # the Lightning run's randomness stays its own
        self._start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_epoch()
