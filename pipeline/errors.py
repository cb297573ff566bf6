"""The errors the training pipeline reports to a user (the CLI prints them without a traceback)."""

from __future__ import annotations

from lightning_modules import CheckpointError, NonFiniteLossError

__all__ = ["CheckpointError", "NonFiniteLossError", "UserError"]


class UserError(Exception):
    """A problem with the user's settings, data or files, found before any training is lost."""
