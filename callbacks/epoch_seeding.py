"""Per-epoch reseeding of torch's global RNG (the reparameterization noise of the training)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from datamodules.sampling import derived_seed

__all__ = ["EpochSeeder"]


class EpochSeeder(pl.Callback):
    """Reseed torch's global RNG at every epoch start from (seed, stage, epoch, rank).

    The reparameterization noise of epoch ``e`` then depends only on those and not on what ran
    before, so a run resumed from an epoch-end checkpoint replays the same epochs (Lightning does
    not store RNG states in checkpoints). The shuffle order is reproducible on its own: the
    training sampler is a :class:`~datamodules.sampling.EpochSeededSampler`, which Lightning
    calls ``set_epoch`` on.

    Args:
        seed: the run seed.
        stage: the training stage (1 or 2).
    """

    def __init__(self, seed: int, stage: int) -> None:
        self.seed = int(seed)
        self.stage = int(stage)

    @property
    def state_key(self) -> str:
        return "EpochSeeder"

    def state_dict(self) -> dict[str, int]:
        """The seed and stage, stored in every checkpoint (a resume compares the seed)."""
        return {"seed": self.seed, "stage": self.stage}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        torch.manual_seed(derived_seed(self.seed, self.stage, epoch, trainer.global_rank))
