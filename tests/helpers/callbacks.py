"""Test-only callbacks for the training tests (importable as ``tests.helpers.callbacks``
by ``--callbacks`` in subprocesses). Contains no tests."""

from __future__ import annotations

import os

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback


class SimulatedCrashError(RuntimeError):
    """Raised by :class:`CrashAtEpoch` to imitate a killed job."""


class CrashAtEpoch(Callback):
    """Raise :class:`SimulatedCrashError` at the start of ``epoch`` of ``stage`` (after the previous
    epoch's checkpoint was written), like a job killed between two epochs.

    Args:
        stage: the stage to crash in.
        epoch: the 0-based epoch at whose start the crash happens.
    """

    def __init__(self, stage: int, epoch: int) -> None:
        self.stage = stage
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.stage == self.stage and trainer.current_epoch == self.epoch:
            raise SimulatedCrashError(f"simulated crash at stage {self.stage}, epoch {self.epoch}")


class NaNWeightAtEpoch(Callback):
    """Set one decoder weight to NaN at the start of ``epoch`` of ``stage``.

    Args:
        stage: the stage.
        epoch: the 0-based epoch.
    """

    def __init__(self, stage: int = 1, epoch: int = 1) -> None:
        self.stage = stage
        self.epoch = epoch

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.stage == self.stage and trainer.current_epoch == self.epoch:
            with torch.no_grad():
                params = [p for p in pl_module.parameters() if p.requires_grad]
                params[0].view(-1)[0] = float("nan")


class DumpRankState(Callback):
    """At the end of each fit, every rank saves its unwrapped module's state_dict to
    ``<out_dir>/stage{s}_rank{r}.pt``.

    Args:
        out_dir: target folder.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()}
        path = os.path.join(self.out_dir, f"stage{pl_module.stage}_rank{trainer.global_rank}.pt")
        torch.save(state, path)


class TraceBatches(Callback):
    """Debug aid: print (stage, epoch, batch, sum of x, parameter sum) at each train batch start."""

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int
    ) -> None:
        if batch_idx < 2:
            psum = sum(float(p.double().sum()) for p in pl_module.parameters())
            print(
                f"TRACE s{pl_module.stage} e{trainer.current_epoch} b{batch_idx} "
                f"x={float(batch[0].sum()):.6f} p={psum:.10f}",
                flush=True,
            )


class RecordLearningRates(Callback):
    """Append ``(stage, epoch, lr of every param group)`` at each training batch start to
    ``<out_dir>/learning_rates.txt`` (one line each), for resume tests in or out of process.

    Args:
        out_dir: target folder.
    """

    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir

    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int
    ) -> None:
        lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
        os.makedirs(self.out_dir, exist_ok=True)
        with open(os.path.join(self.out_dir, "learning_rates.txt"), "a") as fh:
            fh.write(f"{pl_module.stage} {trainer.current_epoch} {' '.join(map(repr, lrs))}\n")
