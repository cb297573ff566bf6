"""How the training script writes checkpoints: atomic replacement of ``last.ckpt`` and the
epoch-end time gate (``run.checkpoint_every_n_seconds``)."""

from __future__ import annotations

import os

import pytest
import pytorch_lightning as pl
import torch

from callbacks.checkpointing import AtomicCheckpointIO, EpochEndCheckpoint
from datamodules.vae_datamodule import VAEDataModule
from lightning_modules import TwoStageVAE
from tests.helpers.callbacks import CrashAtEpoch, SimulatedCrashError


def test_failed_write_leaves_the_previous_checkpoint_whole(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "last.ckpt"
    good = {"epoch": 1, "weights": torch.arange(100_000, dtype=torch.float32)}
    io.save_checkpoint(good, path)
    # a real failure half-way through serialization: the tensor is written, the lambda is not
    # picklable
    bad = {"epoch": 2, "weights": torch.zeros(100_000), "hook": lambda: None}
    with pytest.raises(Exception, match="pickle|lambda"):
        io.save_checkpoint(bad, path)
    assert os.listdir(path.parent) == ["last.ckpt"]  # no temporary file left behind
    loaded = torch.load(path, weights_only=True)
    assert loaded["epoch"] == 1 and torch.equal(loaded["weights"], good["weights"])


def test_written_file_has_the_permissions_of_a_normal_file(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"a": torch.ones(2)}, path)
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("seconds", [-1.0, float("nan"), float("inf")])
def test_bad_interval_is_rejected(tmp_path, seconds):
    with pytest.raises(ValueError, match=f"min_interval_seconds={seconds!r} must be a finite"):
        EpochEndCheckpoint(str(tmp_path), seconds)


@pytest.fixture(scope="module")
def small_data() -> VAEDataModule:
    dm = VAEDataModule(max_per_class=10, batch_size=32, seed=0)  # 80 training images: 3 steps
    dm.setup("fit")
    return dm


def _trainer(
    tmp_path,
    ckpt_dir: str,
    seconds: float,
    epochs: int,
    callbacks: list[pl.Callback],
    **trainer_kwargs,
) -> pl.Trainer:
    return pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        logger=False,
        callbacks=[EpochEndCheckpoint(ckpt_dir, seconds), *callbacks],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
        **trainer_kwargs,
    )


def _model() -> TwoStageVAE:
    torch.manual_seed(0)
    return TwoStageVAE(num_centers=4, hidden_dims=[16, 8])


def _fit(
    tmp_path,
    dm,
    seconds: float,
    epochs: int = 3,
    crash_at: int | None = None,
    callbacks: tuple[pl.Callback, ...] = (),
    **trainer_kwargs,
) -> tuple[pl.Trainer, str]:
    ckpt_dir = str(tmp_path / "ckpt")
    extra = [*callbacks] + ([CrashAtEpoch(stage=1, epoch=crash_at)] if crash_at is not None else [])
    trainer = _trainer(tmp_path, ckpt_dir, seconds, epochs, extra, **trainer_kwargs)
    if crash_at is None:
        trainer.fit(_model(), datamodule=dm)
    else:
        with pytest.raises(SimulatedCrashError):
            trainer.fit(_model(), datamodule=dm)
    return trainer, os.path.join(ckpt_dir, "last.ckpt")


def test_interval_zero_writes_at_every_epoch_end(tmp_path, small_data):
    _, last = _fit(tmp_path, small_data, 0.0, crash_at=2)
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 6  # epochs 0 and 1, 3 steps each
    assert os.listdir(os.path.dirname(last)) == ["last.ckpt"]  # one file per stage


def test_long_interval_writes_only_at_the_end_of_the_fit(tmp_path, small_data):
    _, last = _fit(tmp_path, small_data, 3600.0, crash_at=2)
    assert not os.path.exists(last)  # epochs 0 and 1 ended within the hour: nothing written
    trainer, last = _fit(tmp_path / "full", small_data, 3600.0)
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == trainer.global_step == 9


def test_fit_cut_by_max_steps_still_writes_its_final_state(tmp_path, small_data):
    trainer, last = _fit(tmp_path, small_data, 3600.0, epochs=10, max_steps=4)
    assert trainer.global_step == 4
    assert torch.load(last, weights_only=True)["global_step"] == 4


class _StopAtStep(pl.Callback):
    """Request a stop in the middle of an epoch, as early stopping or ``max_time`` do."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            trainer.should_stop = True


def test_fit_stopped_by_a_callback_still_writes_its_final_state(tmp_path, small_data):
    trainer, last = _fit(tmp_path, small_data, 3600.0, epochs=10, callbacks=(_StopAtStep(5),))
    assert trainer.global_step == 5 and trainer.current_epoch < 9
    assert torch.load(last, weights_only=True)["global_step"] == 5


def test_resume_from_a_gated_checkpoint_continues_the_fit(tmp_path, small_data):
    _, last = _fit(tmp_path, small_data, 3600.0, epochs=2)
    resumed = _trainer(tmp_path, os.path.dirname(last), 3600.0, 3, [])
    resumed.fit(_model(), datamodule=small_data, ckpt_path=last)
    assert resumed.global_step == 9
    assert torch.load(last, weights_only=True)["global_step"] == 9
