"""Helpers shared by the geometry callbacks (internal).

Everything that makes an epoch-end geometry callback safe to run inside training lives here:

* :func:`geometry_mode`: eval mode + ``torch.enable_grad()`` (and out of inference mode) on the
  unwrapped LightningModule, with every RNG the training uses saved and restored and each
  submodule's train/eval flag put back afterwards;
* :class:`EpochScheduledCallback`: the "every n epochs and at the end of the stage, each epoch
  once, also across a stop and resume" logic and the ``total_seconds`` timer that
  ``scripts/train.py`` sums into ``summary.json``;
* validation-code selection (a seeded subset of ``trainer.datamodule.val_dataset``, encoded to
  the encoder means), figure output (PNG in the run folder) and W&B logging.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities import rank_zero_warn
from torch import Tensor


class MissingValidationDataError(RuntimeError):
    """The callback needs ``trainer.datamodule.val_dataset`` and there is none."""


# ---------------------------------------------------------------------------- model context
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


# ---------------------------------------------------------------------------- settings
def check_ints(**limits: tuple[object, int]) -> None:
    """Check settings given as ``name=(value, minimum)``: each an int (not bool) >= minimum.

    Raises:
        ValueError: naming the first bad setting, its value and what is accepted.
    """
    for name, (value, minimum) in limits.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")


# ---------------------------------------------------------------------------- scheduling
class EpochScheduledCallback(pl.Callback):
    """Base class: run :meth:`run_epoch` every ``every_n_epochs`` epochs and at the end of training.

    The work happens once per epoch, at the first of these points that the epoch reaches:

    1. ``on_validation_epoch_end`` of the validation that closes the epoch (so the state saved
       by ``ModelCheckpoint`` in ``on_validation_end`` already records the epoch as handled);
    2. ``on_train_epoch_end`` (epochs without validation);
    3. ``on_train_end``: the last epoch of the stage when neither of the above ran for it (a run
       stopped early or by ``max_steps``). Scalars are then written to the loggers directly.

    The last epoch handled is kept per model stage in the checkpoint state, so a resumed run never
    handles an epoch twice, and one instance may serve both stages. ``total_seconds`` accumulates
    the wall time spent in :meth:`run_epoch` over the callback's lifetime.

    Args:
        every_n_epochs: run every this many epochs (epoch indices ``n-1, 2n-1, ...``); 0 = only at
            the end of each stage.
        run_at_end: also run on the last epoch of each stage.
    """

    def __init__(self, every_n_epochs: int, run_at_end: bool = True) -> None:
        super().__init__()
        check_ints(every_n_epochs=(every_n_epochs, 0))
        if every_n_epochs == 0 and not run_at_end:
            raise ValueError("every_n_epochs=0 with run_at_end=False would never run")
        self.every_n_epochs = every_n_epochs
        self.run_at_end = bool(run_at_end)
        self.total_seconds: float = 0.0
        self.last_epoch_by_stage: dict[int, int] = {}
        #: (stage, epoch) pairs handled by this instance (not checkpointed; for inspection/tests).
        self.history: list[tuple[int, int]] = []

    # -- to implement
    def run_epoch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int, can_log: bool
    ) -> None:  # pragma: no cover - abstract
        """Do the work for ``epoch``; ``can_log`` says whether ``pl_module.log`` is allowed."""
        raise NotImplementedError

    # -- decisions (identical on every rank: they depend only on epoch counters and settings)
    def _is_last_epoch(self, trainer: pl.Trainer, epoch: int) -> bool:
        max_epochs = trainer.max_epochs
        if max_epochs is not None and max_epochs >= 0 and epoch + 1 >= max_epochs:
            return True
        return trainer.max_steps is not None and 0 < trainer.max_steps <= trainer.global_step

    def _due(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int) -> bool:
        if epoch < 0 or epoch <= self.last_epoch_by_stage.get(model_stage(pl_module), -1):
            return False
        if self.every_n_epochs > 0 and (epoch + 1) % self.every_n_epochs == 0:
            return True
        return self.run_at_end and self._is_last_epoch(trainer, epoch)

    def _handle(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int, can_log: bool
    ) -> None:
        start = time.perf_counter()
        try:
            self.run_epoch(trainer, pl_module, epoch, can_log)
        finally:
            self.total_seconds += time.perf_counter() - start
        stage = model_stage(pl_module)
        self.last_epoch_by_stage[stage] = epoch
        self.history.append((stage, epoch))

    # -- hooks
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        progress = trainer.fit_loop.epoch_loop.batch_progress
        closes_epoch = (
            progress.is_last_batch or progress.current.ready >= trainer.num_training_batches
        )
        epoch = trainer.current_epoch
        if closes_epoch and self._due(trainer, pl_module, epoch):
            self._handle(trainer, pl_module, epoch, can_log=True)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if self._due(trainer, pl_module, epoch):
            self._handle(trainer, pl_module, epoch, can_log=True)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.run_at_end:
            return
        # the epoch counter has already moved past a completed last epoch
        done = trainer.fit_loop.epoch_progress.current
        epoch = max(done.processed, done.completed) - 1
        last = self.last_epoch_by_stage.get(model_stage(pl_module), -1)
        if epoch > last:
            self._handle(trainer, pl_module, epoch, can_log=False)

    # -- checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {
            "last_epoch_by_stage": {int(k): int(v) for k, v in self.last_epoch_by_stage.items()}
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        last = state_dict.get("last_epoch_by_stage", {})
        self.last_epoch_by_stage = {int(k): int(v) for k, v in last.items()}


# ---------------------------------------------------------------------------- validation data
def validation_dataset(trainer: pl.Trainer, who: str) -> Any:
    """``trainer.datamodule.val_dataset``, or a clear error naming the callback ``who``."""
    dm = getattr(trainer, "datamodule", None)
    dataset = getattr(dm, "val_dataset", None) if dm is not None else None
    if dataset is None:
        raise MissingValidationDataError(
            f"{who} needs the validation latent codes: fit with a datamodule that has a "
            "`val_dataset` after setup() (e.g. datamodules.VAEDataModule), or remove the callback"
        )
    if len(dataset) < 2:
        raise MissingValidationDataError(
            f"{who} needs at least 2 validation points, "
            f"the datamodule's val_dataset has {len(dataset)}; raise data.val_fraction (or "
            "data.max_per_class / the dataset size), or disable the callback"
        )
    return dataset


def fetch_items(dataset: Any, indices: Sequence[int]) -> tuple[Tensor, Tensor | None]:
    """Stack ``dataset[i]`` for ``indices``: data ``(n, ...)`` and int64 labels ``(n,)`` or None.

    Items may be ``(x, y)`` pairs or bare ``x``; labels are None when absent or not integers.
    """
    xs, ys = [], []
    for i in indices:
        item = dataset[int(i)]
        if isinstance(item, (tuple, list)):
            xs.append(torch.as_tensor(item[0]))
            ys.append(item[1] if len(item) > 1 else None)
        else:
            xs.append(torch.as_tensor(item))
            ys.append(None)
    x = torch.stack(xs)
    labels: Tensor | None = None
    if ys and all(y is not None for y in ys):
        try:
            lab = torch.stack([torch.as_tensor(y).reshape(()) for y in ys])
            if not lab.is_floating_point() or bool((lab == lab.round()).all()):
                labels = lab.to(torch.int64)
        except (RuntimeError, TypeError, ValueError):
            labels = None
    return x, labels


@torch.no_grad()
def encode_means(pl_module: Any, x: Tensor, batch_size: int = 256) -> Tensor:
    """Encoder means ``(n, d)`` of ``x``, in the module's dtype and device (call in eval mode)."""
    param = next(pl_module.parameters())
    out = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start : start + batch_size].to(device=param.device, dtype=param.dtype)
        out.append(pl_module.encode(chunk)[0].detach())
    return torch.cat(out)


def choose_indices(n: int, k: int, seed: int) -> list[int]:
    """``min(n, k)`` distinct indices of ``range(n)``, sorted, drawn with a private generator."""
    gen = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(n, generator=gen)[: min(n, k)].tolist())


def draw_pairs(
    n: int, num_pairs: int, labels: Tensor | None, within_fraction: float, seed: int
) -> list[list[int]]:
    """A seeded list of ``num_pairs`` index pairs ``[i, j]``, ``i != j``, into ``range(n)``.

    With ``labels``, ``round(within_fraction * num_pairs)`` pairs share a label (as far as the
    classes allow) and the rest have different labels (as far as there are two classes);
    otherwise pairs are uniform. Uses a private ``torch.Generator``: the global RNG is untouched.
    """
    gen = torch.Generator().manual_seed(int(seed))

    def rand(m: int) -> int:
        return int(torch.randint(m, (1,), generator=gen))

    pairs: list[list[int]] = []
    if labels is None or int(labels.unique().numel()) < 1:
        while len(pairs) < num_pairs:
            i, j = rand(n), rand(n)
            if i != j:
                pairs.append([i, j])
        return pairs
    labels = labels.cpu()
    classes = labels.unique().tolist()
    members = {c: (labels == c).nonzero().flatten().tolist() for c in classes}
    multi = [c for c in classes if len(members[c]) >= 2]
    n_within = round(within_fraction * num_pairs) if multi else 0
    if len(classes) < 2:
        n_within = num_pairs if multi else 0
    for _ in range(n_within):
        c = multi[rand(len(multi))]
        m = members[c]
        a = rand(len(m))
        b = (a + 1 + rand(len(m) - 1)) % len(m)
        pairs.append([m[a], m[b]])
    while len(pairs) < num_pairs:
        i, j = rand(n), rand(n)
        if i != j and (len(classes) < 2 or int(labels[i]) != int(labels[j])):
            pairs.append([i, j])
    return pairs


# ---------------------------------------------------------------------------- output
def figure_dir(trainer: pl.Trainer, output_dir: str | None) -> str:
    """The folder for PNG figures: ``output_dir`` or ``<trainer.default_root_dir>/figures``."""
    path = output_dir if output_dir else os.path.join(trainer.default_root_dir, "figures")
    os.makedirs(path, exist_ok=True)
    return path


def wandb_loggers(trainer: pl.Trainer) -> list[WandbLogger]:
    """The trainer's W&B loggers (usually zero or one)."""
    return [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]


def new_figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` rendered by Agg, independent of pyplot and its global backend."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save_figure(fig: Any, path: str, dpi: int) -> str:
    """Write ``fig`` as a PNG to ``path`` (Agg canvas; nothing is shown or kept open)."""
    fig.savefig(path, dpi=dpi)
    return path


def log_images(trainer: pl.Trainer, images: dict[str, str]) -> None:
    """Log PNG files as W&B images (``key -> path``) at the trainer's global step. Rank 0 only."""
    if not images or not trainer.is_global_zero:
        return
    for logger in wandb_loggers(trainer):
        for key, path in images.items():
            logger.log_image(key=key, images=[path], step=trainer.global_step)


def log_scalars(
    trainer: pl.Trainer, pl_module: pl.LightningModule, metrics: dict[str, float], can_log: bool
) -> None:
    """Log scalars that are identical on every rank.

    With ``can_log`` (epoch-end hooks) through ``pl_module.log`` (every logger and
    ``callback_metrics``; called on every rank with the same value, no synchronisation);
    otherwise (``on_train_end``) straight to the loggers, which write on rank 0 only.
    """
    if can_log:
        for key, value in metrics.items():
            pl_module.log(key, float(value), on_step=False, on_epoch=True, sync_dist=False)
        return
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(dict(metrics), step=trainer.global_step)
    for key, value in metrics.items():
        trainer.callback_metrics[key] = torch.tensor(float(value))


def dataset_labels(dataset: Any) -> Tensor | None:
    """Int64 labels ``(n,)`` of every item of ``dataset`` (cheap for a TensorDataset), or None."""
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, (tuple, list)) and len(tensors) >= 2 and len(tensors[1]) == len(dataset):
        lab = tensors[1]
        if lab.ndim == 1 and (not lab.is_floating_point() or bool((lab == lab.round()).all())):
            return lab.to(torch.int64)
        return None
    return fetch_items(dataset, range(len(dataset)))[1]


def geometry_api() -> Any:
    """The public ``geometry`` package (imported lazily: callbacks import without it)."""
    import geometry

    return geometry


def warn_once(message: str, _seen: set[str] = set()) -> None:  # noqa: B006 - intentional cache
    """``rank_zero_warn`` a message once per process."""
    if message not in _seen:
        _seen.add(message)
        rank_zero_warn(message)


EmbedFn = Callable[[Tensor], Tensor]
