"""Shared pytest fixtures: seeding, an isolated W&B environment and a Trainer factory."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads() -> Iterator[None]:
    """Seed every test and keep torch on the two cores CI has."""
    torch.manual_seed(0)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield


@pytest.fixture()
def single_thread() -> Iterator[None]:
    """One torch thread for tests dominated by small-op overhead: no OpenMP contention with other
    jobs on the 2-core CI machine. Geometry test modules use it for every test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def rbf() -> Any:
    """Trained-like toy decoder: small sigma near 6 centers, large far away (float64)."""
    from geometry.toy_models import ToyRBFDecoder

    return ToyRBFDecoder(data_dim=24, num_centers=6, seed=3).double()


@pytest.fixture()
def wandb_offline_env(tmp_path, monkeypatch) -> Iterator[str]:
    """Offline W&B confined to ``tmp_path``; the environment is restored afterwards.

    ``WandbLogger(offline=True)`` writes ``WANDB_MODE`` into ``os.environ`` for the whole process,
    so every W&B variable is snapshotted and restored here.
    """
    saved = {k: v for k, v in os.environ.items() if k.startswith("WANDB_")}
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    yield str(tmp_path)
    for key in [k for k in os.environ if k.startswith("WANDB_")]:
        del os.environ[key]
    os.environ.update(saved)


@pytest.fixture()
def make_trainer(tmp_path) -> Callable[..., Any]:
    """Factory for small, quiet, deterministic CPU Trainers (no fast_dev_run: it disables logging
    and checkpointing)."""
    import pytorch_lightning as pl

    def _make(**overrides: Any) -> pl.Trainer:
        kwargs: dict[str, Any] = dict(
            accelerator="cpu",
            devices=1,
            max_epochs=2,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            deterministic=True,
            inference_mode=False,
            default_root_dir=str(tmp_path),
        )
        kwargs.update(overrides)
        return pl.Trainer(**kwargs)

    return _make
