"""Stopping a run on a non-finite training loss, with or without a device sync per step.

On the CPU a sync costs nothing, so :class:`TwoStageVAE` checks each loss before its optimizer
step. On an accelerator ``bool(torch.isfinite(loss))`` would stall the host once per step; there
:class:`FirstNonFiniteLoss` records the first bad loss on the device, and the host reads it at the
module's due checks.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: finiteness checks on accelerators (``finite_check_every_n_steps=None``): every this many steps
DEFERRED_FINITE_CHECK_STEPS = 50


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the run stops, earlier checkpoints stay valid."""


def nonfinite_loss_error(detail: str) -> NonFiniteLossError:
    """The error for a non-finite loss; ``detail`` says the value, stage and step."""
    return NonFiniteLossError(
        f"non-finite training loss {detail}. "
        "The run stopped. Lower the learning rate (lr / stage2_lr), raise stage1_std or zeta, "
        "and run the same command again: a resumed stage trains with the new learning rate."
    )


def finite_check_interval(every_n_steps: int | None, device: torch.device) -> int:
    """Steps between two host-side checks: ``every_n_steps``, or for ``None`` 1 on the CPU and
    :data:`DEFERRED_FINITE_CHECK_STEPS` on an accelerator."""
    if every_n_steps is None:
        return 1 if device.type == "cpu" else DEFERRED_FINITE_CHECK_STEPS
    return int(every_n_steps)


class FirstNonFiniteLoss:
    """The first non-finite loss of a fit and its global step, kept on the loss's device.

    :meth:`record` launches a few element-wise kernels and never syncs; :meth:`read` syncs once.
    """

    def __init__(self) -> None:
        self._step: Tensor | None = None  # () int64, -1 while every loss was finite
        self._loss: Tensor | None = None  # () the first non-finite loss

    def record(self, loss: Tensor, step: int) -> None:
        """Remember ``loss`` (a scalar) as taken at global ``step`` if it is the first bad one."""
        loss = loss.detach()
        if self._step is None:
            self._step = torch.full((), -1, dtype=torch.long, device=loss.device)
            self._loss = torch.zeros((), dtype=loss.dtype, device=loss.device)
        new = ~torch.isfinite(loss) & (self._step < 0)
        self._step = self._step.masked_fill(new, step)
        self._loss = torch.where(new, loss, self._loss)

    def read(self) -> tuple[int, float] | None:
        """``(global step, loss)`` of the first non-finite loss recorded, or ``None``."""
        if self._step is None:
            return None
        step = int(self._step)  # the host sync
        return None if step < 0 else (step, float(self._loss))
