"""Data for the latent-oddity experiments: one LightningDataModule, :class:`VAEDataModule`."""

from datamodules.sources import DATASETS, DatasetSpec, DatasetUnavailableError
from datamodules.vae_datamodule import SCALES, VAEDataModule

__all__ = ["DATASETS", "SCALES", "DatasetSpec", "DatasetUnavailableError", "VAEDataModule"]
