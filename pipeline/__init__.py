"""The two-stage training pipeline: :func:`train` runs both stages into one run folder.

Example::

    from datamodules import VAEDataModule
    from pipeline import RunSettings, StageSettings, TrainerSettings, train

    summary = train(
        model={"latent_dim": 2, "num_centers": 32},
        data=VAEDataModule(digits=[0, 1, 2]),
        trainer=TrainerSettings(stage1=StageSettings(max_epochs=50),
                                stage2=StageSettings(max_epochs=20)),
        run=RunSettings(name="digits012", logger="csv"),
    )
    summary["stage2"]["metrics"]["val/elbo"]

``scripts/train.py`` is its command line (:mod:`pipeline.cli`); ``scripts/distance_matrix.py``
(:mod:`pipeline.distance_matrix_cli`) writes a trained model's geodesic distance matrix.
"""

from pipeline.errors import UserError
from pipeline.job import train
from pipeline.settings import RunSettings, StageSettings, TrainerSettings

__all__ = ["RunSettings", "StageSettings", "TrainerSettings", "UserError", "train"]
