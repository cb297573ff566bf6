"""Reconstruction images at the end of validation epochs.

A grid of fixed validation images (top row), their reconstructions through the encoder mean and
the generator mean mu(z) (middle row) and the generator standard deviation sigma(z) (bottom row,
min-max scaled per image) is sent to the logger (W&B: ``wandb.Image``; TensorBoard: ``add_image``)
and written as a PNG with labelled rows and a title naming the stage and the (1-based) epoch.
The images are a class-stratified sample of the validation set (one per class in turn), so a
validation set sorted by class still shows every class. Drawn on rank 0 only, with the
unwrapped ``pl_module`` and no collective, so it is safe under DDP.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from callbacks.validation_data import fetch_items


class ReconstructionImages(Callback):
    """Log originals, reconstructions and sigma(z) of a fixed set of validation images.

    Args:
        num_images: number of validation images (columns of the grid); 0 turns the callback off.
        every_n_epochs: draw every this many epochs (the last epoch of a fit is always drawn).
        save_dir: folder for ``reconstructions_stage{s}.png`` (overwritten at each drawing, so it
            holds the latest one); ``None`` writes no file.
        key: the logger key of the image.

    Attributes:
        total_seconds: time spent in this callback (summed into the run's ``callback_seconds``).

    Non-image data (e.g. 2-D toy data, ``data_shape`` of length 1) are skipped silently.
    """

    def __init__(
        self,
        num_images: int = 16,
        every_n_epochs: int = 1,
        save_dir: str | None = None,
        key: str = "reconstructions",
    ) -> None:
        super().__init__()
        if num_images < 0:
            raise ValueError(f"num_images={num_images} must be >= 0")
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs} must be >= 1")
        self.num_images = int(num_images)
        self.every_n_epochs = int(every_n_epochs)
        self.save_dir = save_dir
        self.key = key
        self.total_seconds = 0.0
        self.last_path: str | None = None
        self._indices: list[int] | None = None

    def _should_draw(self, trainer: pl.Trainer) -> bool:
        if self.num_images == 0 or trainer.sanity_checking or not trainer.is_global_zero:
            return False
        epoch = trainer.current_epoch + 1
        max_epochs = trainer.max_epochs
        last = max_epochs is not None and max_epochs > 0 and epoch >= max_epochs
        return last or epoch % self.every_n_epochs == 0

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Draw the grid (rank 0, not during the sanity check)."""
        if not self._should_draw(trainer):
            return
        start = time.perf_counter()
        try:
            grid = self.make_grid(trainer, pl_module)
            if grid is not None:
                self._emit(trainer, pl_module, grid)
        finally:
            self.total_seconds += time.perf_counter() - start

    def _validation_images(self, trainer: pl.Trainer) -> Tensor | None:
        dm = trainer.datamodule
        dataset = getattr(dm, "val_dataset", None) if dm is not None else None
        if dataset is None or len(dataset) == 0:
            dataset = getattr(dm, "train_dataset", None) if dm is not None else None
        if dataset is None or len(dataset) == 0:
            return None
        if self._indices is None or max(self._indices, default=0) >= len(dataset):
            labels = fetch_items(dataset, range(len(dataset)))[1]
            self._indices = stratified_indices(labels, len(dataset), self.num_images)
        return fetch_items(dataset, self._indices)[0]

    @torch.no_grad()
    def make_grid(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Tensor | None:
        """The (C, H, W) image grid in [0, 1], or ``None`` for non-image data."""
        x = self._validation_images(trainer)
        if x is None or x.dim() != 4 or x.shape[1] not in (1, 3):
            return None
        was_training = pl_module.training
        pl_module.eval()
        try:
            param = next(pl_module.parameters())
            mu_x, sigma_x = pl_module(x.to(device=param.device, dtype=param.dtype))
        finally:
            pl_module.train(was_training)
        low, high = _pixel_range(trainer, x)
        return reconstruction_grid(x.cpu(), mu_x.float().cpu(), sigma_x.float().cpu(), low, high)

    def _emit(self, trainer: pl.Trainer, pl_module: pl.LightningModule, grid: Tensor) -> None:
        stage = int(getattr(pl_module, "stage", 0))
        epoch = trainer.current_epoch + 1  # 1-based, as on the console
        caption = f"stage {stage}, epoch {epoch}: input / reconstruction mu(z) / sigma(z)"
        if self.save_dir is not None:
            os.makedirs(self.save_dir, exist_ok=True)
            self.last_path = os.path.join(self.save_dir, f"reconstructions_stage{stage}.png")
            fig = labelled_grid_figure(grid, f"Reconstructions, stage {stage}, epoch {epoch}")
            fig.savefig(self.last_path, dpi=100, bbox_inches="tight")
        for logger in trainer.loggers:
            _log_image(logger, f"{self.key}/stage{stage}", grid, caption, trainer.global_step)


ROW_LABELS = ("input", "reconstruction\nmu(z)", "sigma(z)")


def stratified_indices(labels: Tensor | None, n: int, k: int) -> list[int]:
    """``k`` of ``n`` item indices, one per class in turn (classes in increasing order, items in
    dataset order); evenly spaced when there are no labels."""
    k = min(k, n)
    if labels is None:
        return [int(i) for i in torch.linspace(0, n - 1, k).round().long()]
    by_class = [torch.nonzero(labels == c).flatten().tolist() for c in labels.unique().tolist()]
    out: list[int] = []
    while len(out) < k:
        for members in by_class:
            if members and len(out) < k:
                out.append(members.pop(0))
    return out


def labelled_grid_figure(grid: Tensor, title: str) -> Any:
    """A matplotlib ``Figure`` of the ``(C, H, W)`` grid with its rows labelled
    (:data:`ROW_LABELS`) and ``title``."""
    from matplotlib.figure import Figure

    image = grid.clamp(0, 1).permute(1, 2, 0).numpy()  # (H, W, C)
    height, width = image.shape[:2]
    fig = Figure(figsize=(max(4.0, width / 40 + 1.5), max(2.5, height / 40 + 0.8)))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(image if image.shape[2] == 3 else image[..., 0], cmap="gray", vmin=0, vmax=1)
    rows = len(ROW_LABELS)
    ax.set_yticks([(r + 0.5) * height / rows for r in range(rows)], ROW_LABELS)
    ax.set_xticks([])
    ax.set_title(title)
    fig.tight_layout()
    return fig


def reconstruction_grid(
    x: Tensor, mu_x: Tensor, sigma_x: Tensor, low: float, high: float
) -> Tensor:
    """The ``(C, H', W')`` grid in [0, 1]: data ``x (n, C, H, W)`` (top row), the means
    ``mu_x`` (middle row), both scaled from ``[low, high]``, and ``sigma_x`` min-max scaled per
    image (bottom row). A pure function: no Trainer, no model."""
    from torchvision.utils import make_grid

    rows = [
        ((x - low) / (high - low)).clamp(0, 1),
        ((mu_x - low) / (high - low)).clamp(0, 1),
        _minmax(sigma_x),
    ]
    return make_grid(torch.cat(rows), nrow=x.shape[0], padding=2, pad_value=1.0)


def _pixel_range(trainer: pl.Trainer, x: Tensor) -> tuple[float, float]:
    rng = getattr(trainer.datamodule, "pixel_range", None)
    if isinstance(rng, tuple) and len(rng) == 2:
        return float(rng[0]), float(rng[1])
    low, high = float(x.min()), float(x.max())
    return (low, high) if high > low else (low, low + 1.0)


def _minmax(t: Tensor) -> Tensor:
    flat = t.flatten(1)
    low = flat.min(1).values.view(-1, 1, 1, 1)
    high = flat.max(1).values.view(-1, 1, 1, 1)
    return (t - low) / (high - low).clamp_min(1e-12)


def _log_image(logger: Any, key: str, grid: Tensor, caption: str, step: int) -> None:
    """Send ``grid`` to a W&B or TensorBoard logger; other loggers are skipped."""
    from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

    if isinstance(logger, WandbLogger):
        # wandb.Image casts numpy data to uint8 as is: scale [0, 1] to [0, 255] first. Lightning's
        # log_image puts the step into "trainer/global_step" (never wandb.log(step=...)).
        pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
        logger.log_image(key=key, images=[pixels], caption=[caption], step=step)
    elif isinstance(logger, TensorBoardLogger):
        logger.experiment.add_image(key, grid, global_step=step)
