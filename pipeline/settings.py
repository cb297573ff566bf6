"""The ``trainer`` and ``run`` settings of the training pipeline (plain dataclasses: the CLI
derives its keys, types, defaults and help from them), and their checks."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Literal

from pipeline.errors import UserError

LOGGERS = ("wandb", "csv", "none")
PROGRESS_BARS = ("auto", "tqdm", "rich", "log", "none")
WANDB_MODES = ("auto", "online", "offline", "disabled")


@dataclass
class StageSettings:
    """Length of one stage.

    Args:
        max_epochs: epochs of this stage.
        max_steps: optimizer steps of this stage (-1: no limit).
    """

    max_epochs: int = 1
    max_steps: int = -1


@dataclass
class TrainerSettings:
    """Settings of both stages' Trainers (each stage gets a new Trainer).

    Args:
        accelerator: ``auto``, ``cpu``, ``gpu``, ``cuda``, ``mps``...
        devices: number of devices per node, a list of device ids, or ``auto``.
        strategy: ``auto``, ``ddp`` (one process per device; torchrun and SLURM supported),
            ``ddp_spawn``, or any Lightning strategy name. ``ddp*`` get a timeout (``ddp_timeout``).
        num_nodes: number of nodes (multi-node: launch with SLURM ``srun`` or ``torchrun``).
        precision: Lightning precision, e.g. ``32-true``, ``bf16-mixed``, ``16-mixed``.
        stage1: length of stage 1 (encoder + generator mean).
        stage2: length of stage 2 (RBF precision weights only).
        limit_train_batches: fraction or number of training batches per epoch.
        limit_val_batches: fraction or number of validation batches per epoch.
        log_every_n_steps: logging interval of per-step metrics (optimizer steps); epoch means
            are logged at every epoch end.
        deterministic: ``torch.use_deterministic_algorithms`` (``true``/``false``/``warn``).
        num_sanity_val_steps: validation batches run before training (0: off).
        check_val_every_n_epoch: validate every this many epochs.
        ddp_timeout: seconds before a hung collective fails (DDP strategies).
    """

    accelerator: str = "auto"
    devices: int | str | list[int] = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: str = "32-true"
    stage1: StageSettings = field(default_factory=lambda: StageSettings(max_epochs=120))
    stage2: StageSettings = field(default_factory=lambda: StageSettings(max_epochs=30))
    limit_train_batches: int | float = 1.0
    limit_val_batches: int | float = 1.0
    log_every_n_steps: int = 50
    deterministic: bool | Literal["warn"] = False
    num_sanity_val_steps: int = 0
    check_val_every_n_epoch: int = 1
    ddp_timeout: int = 1800


@dataclass
class RunSettings:
    """The run: folder, seed, logging, progress, stages.

    Args:
        name: run name; the folder is ``<root>/<name>`` (rerun the same name to resume).
        root: parent folder of runs.
        dir: explicit run folder (overrides ``root``/``name``).
        seed: global seed (Lightning ``seed_everything``; each epoch is reseeded from it).
        stages: stages to run in this invocation (``[1, 2]``, ``[1]`` or ``[2]``).
        stage1_checkpoint: start stage 2 from this stage-1 checkpoint instead of training
            stage 1 (architecture settings come from the checkpoint).
        logger: ``wandb`` (default), ``csv`` or ``none``.
        wandb_project: W&B project.
        wandb_entity: W&B entity (team or user); ``null``: your default entity.
        wandb_mode: ``auto`` (online with credentials - ``WANDB_API_KEY`` or ``~/.netrc`` -,
            offline without; ``WANDB_MODE`` wins when set), ``online``, ``offline``, ``disabled``.
        progress_bar: ``auto`` (tqdm on a terminal, ``log`` otherwise), ``tqdm``, ``rich``,
            ``log`` (plain periodic lines, for SLURM logs) or ``none``.
        log_every_n_seconds: interval of the ``log`` progress lines.
        checkpoint_every_n_seconds: least time between two writes of the stage's ``last.ckpt``
            (written at epoch ends only, and always at the end of the stage). A crash loses at
            most this long plus one epoch of training; 0 writes at every epoch end.
        reconstructions: validation images in the reconstruction grid (0: off).
        reconstructions_every_n_epochs: draw the grid every this many epochs (and at the end
            of each stage).
        torch_threads: intra-op CPU threads per process (``null``: torch's default). The paper's
            MLP is too small to gain from more: on 2 shared cores a second thread made a step
            up to 100x slower. Raise it for the conv architecture on CPU.
    """

    name: str = "default"
    root: str = "runs"
    dir: str | None = None
    seed: int = 0
    stages: list[int] = field(default_factory=lambda: [1, 2])
    stage1_checkpoint: str | None = None
    logger: Literal["wandb", "csv", "none"] = "wandb"
    wandb_project: str = "latent-oddity"
    wandb_entity: str | None = None
    wandb_mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    progress_bar: Literal["auto", "tqdm", "rich", "log", "none"] = "auto"
    log_every_n_seconds: float = 30.0
    checkpoint_every_n_seconds: float = 5.0
    reconstructions: int = 16
    reconstructions_every_n_epochs: int = 10
    torch_threads: int | None = 1


def check_settings(trainer: TrainerSettings, run: RunSettings) -> None:
    """Raise :class:`UserError` naming the first bad setting and what is accepted.

    The Trainer's own settings (accelerator, devices, strategy, precision...) are checked by
    ``pipeline.trainer_factory.check_trainer_settings``.
    """
    if run.dir is None and (
        not run.name.strip() or run.name in (".", "..") or os.path.isabs(run.name)
    ):
        raise UserError(
            f"run.name={run.name!r} must be a non-empty relative name (the run folder is "
            f"<run.root>/<run.name>); or set run.dir to an explicit folder"
        )
    if run.dir is not None and not run.dir.strip():
        raise UserError(f"run.dir={run.dir!r} must be a folder path or null")
    ltb = trainer.limit_train_batches
    if isinstance(ltb, bool) or not (
        (isinstance(ltb, int) and ltb >= 1) or (isinstance(ltb, float) and 0 < ltb <= 1)
    ):
        raise UserError(
            f"trainer.limit_train_batches={ltb!r} must be a number of batches >= 1 or a "
            "fraction in (0, 1] (0 would train nothing)"
        )
    lvb = trainer.limit_val_batches
    if isinstance(lvb, bool) or not (
        (isinstance(lvb, int) and lvb >= 0) or (isinstance(lvb, float) and 0 <= lvb <= 1)
    ):
        raise UserError(
            f"trainer.limit_val_batches={lvb!r} must be a number of batches >= 0 or a "
            "fraction in [0, 1]"
        )
    if trainer.check_val_every_n_epoch < 1:
        raise UserError(
            f"trainer.check_val_every_n_epoch={trainer.check_val_every_n_epoch} must be >= 1"
        )
    if trainer.num_sanity_val_steps < -1:
        raise UserError(
            f"trainer.num_sanity_val_steps={trainer.num_sanity_val_steps} must be >= 0 (or -1: all)"
        )
    if trainer.ddp_timeout < 1:
        raise UserError(f"trainer.ddp_timeout={trainer.ddp_timeout} must be >= 1 second")
    if run.reconstructions < 0 or run.reconstructions_every_n_epochs < 1:
        raise UserError(
            f"run.reconstructions={run.reconstructions} must be >= 0 and "
            f"run.reconstructions_every_n_epochs={run.reconstructions_every_n_epochs} >= 1"
        )
    stages = run.stages
    if not stages or any(s not in (1, 2) for s in stages):
        raise UserError(f"run.stages={stages!r} must be a non-empty list of 1 and/or 2")
    for s in (1, 2):
        st = getattr(trainer, f"stage{s}")
        if st.max_epochs < 1:
            raise UserError(f"trainer.stage{s}.max_epochs={st.max_epochs} must be >= 1")
        if st.max_steps == 0 or st.max_steps < -1:
            raise UserError(
                f"trainer.stage{s}.max_steps={st.max_steps} must be >= 1 or -1 (no limit)"
            )
    if run.torch_threads is not None and run.torch_threads < 1:
        raise UserError(f"run.torch_threads={run.torch_threads} must be >= 1 or null")
    for key in ("checkpoint_every_n_seconds", "log_every_n_seconds"):
        value = getattr(run, key)
        if not (math.isfinite(value) and value >= 0):
            raise UserError(f"run.{key}={value!r} must be a finite number of seconds >= 0")
    if trainer.log_every_n_steps < 1:
        raise UserError(f"trainer.log_every_n_steps={trainer.log_every_n_steps} must be >= 1")
    for name, accepted in (
        ("logger", LOGGERS),
        ("progress_bar", PROGRESS_BARS),
        ("wandb_mode", WANDB_MODES),
    ):
        if getattr(run, name) not in accepted:
            raise UserError(
                f"run.{name}={getattr(run, name)!r} is not supported; accepted: {accepted}"
            )
