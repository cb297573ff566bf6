"""A speed fix for one Lightning internal that dominates ``self.log`` on small models.

Every ``LightningModule.log`` call ends in ``_ResultCollection.log``, which calls
``_ResultMetric.to(value.device)``. In pytorch-lightning 2.6 that method rebuilds the metric's whole
``__dict__`` through ``apply_to_collection``, walking about 70 objects and deep-copying its
``_Metadata`` dataclass, even when every tensor already sits on that device: about 0.4 ms per
call on this project's 2-core CI machine, longer than a training step of the paper's MLP.

:func:`install` wraps that method with a fast path: when the target is a single
``torch.device`` and every tensor the metric holds is already on it (and it holds no nested
torchmetrics ``Metric``), it returns the metric unchanged, which is what the original computes (it
moves nothing; the fresh ``_Metadata`` copy compares equal). Every other call goes to the original.
The wrapper is installed once per process when :mod:`lightning_modules` is imported, and does
nothing if the Lightning internal is missing (another Lightning version).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch
from torch import Tensor

_MARKER = "_latent_oddity_fast_path"


def _already_on(state: dict[str, Any], device: torch.device) -> bool:
    """True when moving a ``_ResultMetric`` with this ``__dict__`` to ``device`` would move
    nothing: every tensor it holds (directly, or one level down in a dict, list or tuple) is on
    ``device``, and it holds no module (a logged torchmetrics ``Metric``) and no dataclass other
    than its tensor-free ``_Metadata``. Anything else is left to the original method."""
    if state.get("_modules"):
        return False
    for value in state.values():
        if isinstance(value, Tensor):
            if value.device != device:
                return False
        elif isinstance(value, (dict, list, tuple)):
            items = value.values() if isinstance(value, dict) else value
            for item in items:
                if isinstance(item, Tensor):
                    if item.device != device:
                        return False
                elif isinstance(item, (dict, list, tuple, torch.nn.Module)):
                    return False
        elif isinstance(value, torch.nn.Module) or (
                dataclasses.is_dataclass(value) and type(value).__name__ != "_Metadata"):
            return False
    return True


def install() -> bool:
    """Wrap ``_ResultMetric.to`` with the fast path (idempotent).

    Returns:
        True when the fast path is active, False when this Lightning version lacks the internal.
    """
    try:
        from pytorch_lightning.trainer.connectors.logger_connector.result import _ResultMetric
    except ImportError:  # pragma: no cover - another Lightning layout
        return False
    original = _ResultMetric.__dict__.get("to")
    if original is None:  # pragma: no cover
        return False
    if getattr(original, _MARKER, False):
        return True

    @functools.wraps(original)
    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        if (len(args) == 1 and not kwargs and isinstance(args[0], torch.device)
                and _already_on(self.__dict__, args[0])):
            return self
        return original(self, *args, **kwargs)

    setattr(to, _MARKER, True)
    to.original = original  # type: ignore[attr-defined]
    _ResultMetric.to = to
    return True
