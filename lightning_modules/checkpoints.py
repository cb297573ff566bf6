"""Checkpoint identification and validation with clear errors.

Every checkpoint written by :class:`~lightning_modules.TwoStageVAE` carries a marker
``checkpoint["latent_oddity"] = {"model": "TwoStageVAE", "format": 1, "stage": s, ...}``.
"""

from __future__ import annotations

import os
from typing import Any

import torch

MARKER_KEY = "latent_oddity"
MODEL_NAME = "TwoStageVAE"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or not written by this project's model."""


def read_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load a checkpoint file and check that it is a TwoStageVAE checkpoint.

    Args:
        path: checkpoint file.
        map_location: where to load tensors.

    Returns:
        The checkpoint dictionary.

    Raises:
        CheckpointError: naming the path and what is wrong (missing, corrupt, another model).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        raise CheckpointError(
            f"checkpoint {path!r} is corrupt or not a PyTorch checkpoint "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
            "use another checkpoint (e.g. an earlier epoch) or delete it to retrain"
        ) from err
    check_checkpoint_dict(ckpt, path)
    return ckpt


def check_checkpoint_dict(ckpt: Any, path: str = "<checkpoint>") -> dict[str, Any]:
    """Raise :class:`CheckpointError` unless ``ckpt`` is a TwoStageVAE checkpoint.

    Returns:
        The checkpoint's latent-oddity marker dictionary.
    """
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"checkpoint {path!r} is not a Lightning checkpoint (no 'state_dict' entry)"
        )
    marker = ckpt.get(MARKER_KEY)
    if not isinstance(marker, dict) or marker.get("model") != MODEL_NAME:
        raise CheckpointError(
            f"checkpoint {path!r} was not written by latent-oddity's {MODEL_NAME} "
            f"(marker {MARKER_KEY!r} missing or names another model: {marker!r}); "
            "pass a checkpoint written by scripts/train.py (pipeline.train)"
        )
    if marker.get("format", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path!r} has format {marker.get('format')}, newer than this code "
            f"({FORMAT_VERSION}); upgrade latent-oddity"
        )
    return marker
