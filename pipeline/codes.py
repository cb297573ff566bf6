"""Latent codes for the geometry command lines: a data split's encoder means, or a file."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from lightning_modules import TwoStageVAE

__all__ = ["SPLITS", "load_codes"]

SPLITS = ("train", "val", "test")


def load_codes(spec: str, model: TwoStageVAE, checkpoint: str) -> torch.Tensor:
    """Codes ``(n, d)`` from a file, or the encoder means of a split of the run's data.

    Args:
        spec: one of :data:`SPLITS` (the encoder means of that split of the data the run in
            ``checkpoint``'s run folder was trained on, from its ``config.yaml``), or a
            ``.npy`` / ``.pt`` file holding one ``(n, d)`` floating-point array.
        model: the trained model (its encoder, and its ``latent_dim`` for the check).
        checkpoint: the checkpoint path (``<run>/checkpoints/<stage>/<file>``).

    Raises:
        ValueError: an unknown spec, a file of another format, shape or ``d``.
    """
    if spec in SPLITS:
        import yaml

        from datamodules.vae_datamodule import VAEDataModule

        run = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(checkpoint))))
        cfg_path = os.path.join(run, "config.yaml")
        data: dict[str, Any] = {}
        if os.path.exists(cfg_path):
            with open(cfg_path) as f:
                data = (yaml.safe_load(f) or {}).get("data", {}) or {}
        dm = VAEDataModule(**data)
        dm.prepare_data()
        dm.setup("fit" if spec != "test" else "test")
        loader = {"train": dm.full_train_dataloader, "val": dm.val_dataloader}.get(
            spec, dm.test_dataloader
        )()
        return model.encode_dataset(loader).cpu()
    if not os.path.isfile(spec):
        raise ValueError(f"--codes {spec!r} is neither a file nor one of {SPLITS}")
    if spec.endswith(".npy"):
        arr: Any = torch.from_numpy(np.load(spec, allow_pickle=False))
    elif spec.endswith(".pt"):
        arr = torch.load(spec, map_location="cpu", weights_only=True)
    else:
        raise ValueError(f"--codes {spec!r} must end in .npy or .pt")
    if not isinstance(arr, torch.Tensor) or not arr.is_floating_point() or arr.ndim != 2:
        raise ValueError(f"--codes {spec!r} must hold one (n, d) floating-point array")
    if arr.shape[1] != model.hparams.latent_dim:
        raise ValueError(
            f"--codes {spec!r} has d = {arr.shape[1]}, the model's latent_dim is "
            f"{model.hparams.latent_dim}"
        )
    return arr
