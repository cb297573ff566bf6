"""The training benchmark's measurements: a plain PyTorch loop and the pipeline's Lightning fit,
epoch by epoch in pairs (:class:`callbacks.PairedEpochTimer`), per stage and variant."""

from __future__ import annotations

import argparse
import copy
import io
import os
import tempfile
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from callbacks import (
    EpochEndCheckpoint,
    EpochSeeder,
    LogLinesProgressBar,
    PairedEpochTimer,
    ReconstructionImages,
    RunInfo,
)
from callbacks.paired_epoch_timer import synchronize
from datamodules.vae_datamodule import VAEDataModule
from lightning_modules import TwoStageVAE
from lightning_modules.rbf import RBFPrecision
from pipeline.loggers import make_logger
from pipeline.settings import RunSettings, StageSettings, TrainerSettings
from pipeline.trainer_factory import fit_stage, make_trainer

__all__ = ["VARIANTS", "EpochPairs", "PlainLoop", "QuietVAE", "paired_epochs", "run_paired_fits"]

VARIANTS = ("lean", "full", "csv", "bare", "quiet")

#: (stage, variant) -> (plain seconds, Lightning seconds) of each kept epoch pair
EpochPairs = dict[tuple[int, str], list[tuple[float, float]]]


class QuietVAE(TwoStageVAE):
    """Diagnostic: the same model and loss without any ``self.log`` call or finiteness check."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(self.loss_terms(batch[0]))
        self.optimize(loss)
        return loss.detach()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.loss_terms(batch[0])


def _quiet_copy(model: TwoStageVAE) -> QuietVAE:
    """A :class:`QuietVAE` with ``model``'s hyper-parameters and weights."""
    quiet = QuietVAE(**dict(model.hparams))
    quiet.load_state_dict(model.state_dict())
    return quiet


class PlainLoop:
    """The reference: a hand-written loop doing the same work (train pass + validation pass).

    Args:
        model: its own copy of the model (trained by this loop only).
        dm: the datamodule (set up for ``fit``).
        device: where the loop runs (the model is moved there).
    """

    def __init__(self, model: TwoStageVAE, dm: VAEDataModule, device: torch.device) -> None:
        self.model = model.to(device)
        self.device = device
        self.opt = model.configure_optimizers()  # the framework's optimizer and settings
        self.train_loader, self.val_loader = dm.train_dataloader(), dm.val_dataloader()
        self.project = model.stage == 2 and isinstance(model.variance_net, RBFPrecision)

    def epoch(self) -> float:
        """Run one epoch; its wall time in seconds."""
        model, opt = self.model, self.opt
        t0 = time.perf_counter()
        model.train()
        for x, _y in self.train_loader:
            x = x.to(self.device, non_blocking=True)
            loss = model.training_loss(model.loss_terms(x))
            if not torch.isfinite(loss):
                raise FloatingPointError("non-finite loss in the plain loop")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if self.project:
                model.variance_net.project_()
        model.eval()
        with torch.no_grad():
            for x, _y in self.val_loader:
                model.loss_terms(x.to(self.device, non_blocking=True))
        synchronize(self.device)
        return time.perf_counter() - t0


def paired_epochs(
    model: TwoStageVAE,
    dm: VAEDataModule,
    epochs: int,
    variant: str,
    workdir: str,
    seed: int,
    checkpoint_seconds: float,
    accelerator: str = "cpu",
) -> tuple[list[float], list[float]]:
    """``epochs`` Lightning epochs, with the pipeline's Trainer (``make_trainer``) and callbacks
    for ``variant``, each preceded by one plain-loop epoch on a copy of ``model``.

    Args:
        model: the model to fit (stage 1 or 2); the plain loop trains a deep copy.
        dm: the datamodule (set up for ``fit``).
        epochs: Lightning epochs (each paired with one plain epoch).
        variant: one of :data:`VARIANTS`.
        workdir: folder for checkpoints, figures and logs.
        seed: the run seed (per-epoch reseeding, :class:`callbacks.EpochSeeder`).
        checkpoint_seconds: ``run.checkpoint_every_n_seconds``.
        accelerator: ``cpu`` or ``gpu`` (one CUDA device, for both loops).

    Returns:
        (plain seconds, Lightning seconds), one entry per epoch each.
    """
    stage = model.stage
    device = torch.device("cuda" if accelerator == "gpu" else "cpu")
    timer = PairedEpochTimer(PlainLoop(copy.deepcopy(model), dm, device))
    callbacks: list[Callback] = [timer, EpochSeeder(seed, stage)]
    if variant in ("bare", "quiet"):
        model = _quiet_copy(model) if variant == "quiet" else model
    else:
        callbacks.append(
            EpochEndCheckpoint(os.path.join(workdir, f"ckpt{stage}"), checkpoint_seconds)
        )
    logger: Any = False
    if variant == "full":
        run = RunSettings()
        callbacks += [
            RunInfo("benchmark", "benchmark", stage),
            ReconstructionImages(
                run.reconstructions,
                run.reconstructions_every_n_epochs,
                save_dir=os.path.join(workdir, "figures"),
            ),
            LogLinesProgressBar(
                stage, every_n_seconds=run.log_every_n_seconds, stream=io.StringIO()
            ),
        ]
        logger = make_logger(
            "wandb",
            workdir,
            "benchmark",
            f"bench{stage}{variant}",
            "offline",
            "latent-oddity-benchmark",
            None,
        )
    elif variant == "csv":
        logger = make_logger("csv", workdir, "benchmark", "", "offline", "", None)
    trainer = make_trainer(
        TrainerSettings(accelerator=accelerator),
        StageSettings(max_epochs=epochs),
        callbacks=callbacks,
        logger=logger or None,
        default_root_dir=workdir,
        progress_bar=variant == "full",
        model_summary=False,
        checkpointing=variant not in ("bare", "quiet"),
    )
    fit_stage(trainer, model, dm)  # as the pipeline fits a stage
    if variant == "full":
        import wandb

        wandb.finish()
    return timer.plain_seconds, timer.lightning_seconds


def run_paired_fits(args: argparse.Namespace) -> EpochPairs:
    """Every stage and variant, ``--repeats`` times: paired epochs of both loops.

    Sets up the datamodule, prints one line about the setting, fits a short stage 1 (2 epochs)
    for stage 2's start (RBF centers placed once for both loops), then runs
    :func:`paired_epochs` for each repeat, stage and variant on fresh copies of the models,
    with one progress line each.

    Args:
        args: the checked options (:func:`benchmarks.training_cli.build_parser`; ``threads`` set).

    Returns:
        ``{(stage, variant): [(plain s, Lightning s), ...]}`` over all repeats, the first pair of
        each fit dropped.
    """
    dm = VAEDataModule(max_per_class=args.max_per_class, batch_size=args.batch_size, seed=args.seed)
    dm.setup("fit")
    pl.seed_everything(args.seed, verbose=False)
    base1 = TwoStageVAE(
        data_shape=dm.data_shape,
        output_activation=dm.output_activation,
        architecture=args.architecture,
    )
    n_train = len(dm.train_dataset)
    print(
        f"{args.architecture} model on {args.accelerator}; data: {n_train} training points, "
        f"batch {args.batch_size}, "
        f"{-(-n_train // args.batch_size)} steps/epoch; torch threads {args.threads}; "
        f"checkpoints at most every {args.checkpoint_seconds:g} s"
    )

    # (stage, variant) -> paired epoch times over all repeats (first pair of each fit dropped)
    pairs: EpochPairs = {}
    with tempfile.TemporaryDirectory() as workdir:
        # stage 2 starts from a short stage-1 fit, RBF centers placed once for both loops
        trainer = pl.Trainer(
            accelerator=args.accelerator,
            devices=1,
            max_epochs=2,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=workdir,
        )
        trained = copy.deepcopy(base1)
        trainer.fit(trained, datamodule=dm)
        ckpt = os.path.join(workdir, "stage1.ckpt")
        trainer.save_checkpoint(ckpt)
        base2 = TwoStageVAE.stage2_from_stage1(ckpt)
        base2.init_variance_net(base2.encode_dataset(dm.full_train_dataloader()))
        base1, base2 = base1.cpu(), base2.cpu()  # each fit below moves its own copies
        for rep in range(args.repeats):
            for stage, base in ((1, base1), (2, base2)):
                for variant in args.variants:
                    torch.manual_seed(args.seed)
                    folder = os.path.join(workdir, f"{variant}{stage}_{rep}")
                    plain, light = paired_epochs(
                        copy.deepcopy(base),
                        dm,
                        args.epochs,
                        variant,
                        folder,
                        args.seed,
                        args.checkpoint_seconds,
                        args.accelerator,
                    )
                    pairs.setdefault((stage, variant), []).extend(list(zip(plain, light))[1:])
                    print(
                        f"stage {stage} {variant:>5} repeat {rep + 1}/{args.repeats}: "
                        f"{len(plain)} paired epochs",
                        flush=True,
                    )
    return pairs
