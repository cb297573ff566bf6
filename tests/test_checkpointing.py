"""How the training script writes checkpoints: atomic replacement of ``last.ckpt`` and the
epoch-end time gate (``run.checkpoint_every_n_seconds``)."""

from __future__ import annotations

import os
import sys

import pytest
import pytorch_lightning as pl
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from datamodules.vae_datamodule import VAEDataModule  # noqa: E402
from lightning_modules import TwoStageVAE  # noqa: E402
from scripts._checkpointing import AtomicCheckpointIO, EpochEndCheckpoint  # noqa: E402
from tests.test_train_support import CrashAtEpoch, SimulatedCrashError  # noqa: E402


def test_failed_write_leaves_the_previous_checkpoint_whole(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "last.ckpt"
    good = {"epoch": 1, "weights": torch.arange(100_000, dtype=torch.float32)}
    io.save_checkpoint(good, path)
    # a real failure half-way through serialisation: the tensor is written, the lambda is not
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


def _fit(tmp_path, dm, seconds: float, epochs: int = 3, crash_at: int | None = None,
         **trainer_kwargs) -> tuple[pl.Trainer, str]:
    torch.manual_seed(0)
    model = TwoStageVAE(num_centers=4, hidden_dims=[16, 8])
    ckpt_dir = str(tmp_path / "ckpt")
    callbacks: list[pl.Callback] = [EpochEndCheckpoint(ckpt_dir, seconds)]
    if crash_at is not None:
        callbacks.append(CrashAtEpoch(stage=1, epoch=crash_at))
    trainer = pl.Trainer(accelerator="cpu", max_epochs=epochs, logger=False,
                         callbacks=callbacks, plugins=[AtomicCheckpointIO()],
                         enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, default_root_dir=str(tmp_path),
                         **trainer_kwargs)
    if crash_at is None:
        trainer.fit(model, datamodule=dm)
    else:
        with pytest.raises(SimulatedCrashError):
            trainer.fit(model, datamodule=dm)
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


def test_resume_from_a_gated_checkpoint_continues_the_fit(tmp_path, small_data):
    trainer, last = _fit(tmp_path, small_data, 3600.0, epochs=2)
    torch.manual_seed(0)
    model = TwoStageVAE(num_centers=4, hidden_dims=[16, 8])
    resumed = pl.Trainer(accelerator="cpu", max_epochs=3, logger=False,
                         callbacks=[EpochEndCheckpoint(os.path.dirname(last), 3600.0)],
                         plugins=[AtomicCheckpointIO()], enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0,
                         default_root_dir=str(tmp_path))
    resumed.fit(model, datamodule=small_data, ckpt_path=last)
    assert resumed.global_step == 9
    assert torch.load(last, weights_only=True)["global_step"] == 9
