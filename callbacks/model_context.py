"""Running geometry code inside training without changing anything the training sees."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

__all__ = ["geometry_mode", "model_stage"]


@contextlib.contextmanager
def geometry_mode(pl_module: torch.nn.Module) -> Iterator[None]:
    """Run geometry code on ``pl_module`` without changing anything the training sees.

    Inside the block the module is in eval mode, autograd is enabled (also when the caller runs
    under ``no_grad`` or inference mode) and the global RNG streams (torch CPU, the module's CUDA
    device, numpy, Python ``random``) are forked: whatever is drawn inside is forgotten on exit.
    Each submodule's ``training`` flag is restored individually on exit.

    Gradients must be taken with ``torch.autograd.grad`` (as ``geometry`` does), never with
    ``.backward()``, so no ``.grad`` is written on the parameters.
    """
    modes = [(m, m.training) for m in pl_module.modules()]
    device = next((p.device for p in pl_module.parameters()), torch.device("cpu"))
    cuda_devices = [device] if device.type == "cuda" else []
    np_state = np.random.get_state()
    py_state = random.getstate()
    try:
        with (
            torch.random.fork_rng(devices=cuda_devices),
            torch.inference_mode(False),
            torch.enable_grad(),
        ):
            pl_module.eval()
            yield
    finally:
        for module, mode in modes:
            module.training = mode
        np.random.set_state(np_state)
        random.setstate(py_state)


def model_stage(pl_module: Any) -> int:
    """The model's training stage (``TwoStageVAE.stage``), or 0 for models without one."""
    return int(getattr(pl_module, "stage", 0) or 0)
