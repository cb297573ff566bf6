"""The LightningModule (:class:`TwoStageVAE`) and the plain networks it is built from."""

from lightning_modules.checkpoints import CheckpointError, read_checkpoint
from lightning_modules.finite_loss import NonFiniteLossError
from lightning_modules.rbf import RBFPrecision, kmeans_centers, rbf_bandwidths
from lightning_modules.two_stage_vae import TwoStageVAE

__all__ = [
    "CheckpointError",
    "NonFiniteLossError",
    "RBFPrecision",
    "TwoStageVAE",
    "kmeans_centers",
    "rbf_bandwidths",
    "read_checkpoint",
]
