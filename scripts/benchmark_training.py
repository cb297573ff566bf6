#!/usr/bin/env python
"""Time per epoch of each stage: this framework (Lightning) versus a plain PyTorch loop.

Same process, same seed, same model (copies of one TwoStageVAE), same datamodule, batch size and
optimizer. One "epoch" is a training pass over the training split plus a validation pass (what
the default job does every epoch); the Lightning epoch also includes what the framework adds
(metric logging, checkpoint writing, reconstruction images, progress lines), depending on the
variant.

The two are measured in pairs: right before each Lightning epoch, one epoch of the plain loop runs
(on its own copy of the model), so both halves of a pair see the same machine load. Shared
machines drift by tens of percent over minutes; pairing epoch by epoch cancels that drift, where
comparing whole runs did not. The first pair is warm-up and dropped. Reported per stage and
variant: the median of the per-pair ratios (a typical epoch) and the ratio of the summed times
(which also carries periodic work such as the reconstruction images every 10 epochs)::

    python scripts/benchmark_training.py                     # default job: quiet and full
    python scripts/benchmark_training.py --epochs 61 --variants lean full
    python scripts/benchmark_training.py --max_per_class 100 # quicker
    python scripts/benchmark_training.py --architecture conv --epochs 11 --variants full

Variants: ``full`` (as the default job: W&B offline logger, reconstruction images, ``log``
progress lines, checkpoints, run-info callback), ``lean`` (no logger, no progress lines,
checkpoints on), ``csv`` (CSV logger instead of W&B), and two diagnostics: ``bare`` (no
checkpoints, no logger: the Lightning loop with the model's own ``self.log`` calls) and ``quiet``
(``bare`` with a subclass whose steps log nothing and skip the finiteness check: Lightning's loop
overhead alone).

The two targets, printed at the end: on the default job, the job's own features (logging, NaN
check, checkpoints, W&B, progress) over Lightning's bare loop, ``full / quiet`` <= 1.10; with
``--architecture conv``, the full job over the plain loop, ``full / plain`` <= 1.10.
"""

from __future__ import annotations

import argparse
import copy
import io
import math
import os
import statistics
import sys
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
    ReconstructionImages,
    RunInfo,
)
from datamodules.vae_datamodule import VAEDataModule
from lightning_modules import TwoStageVAE
from lightning_modules.rbf import RBFPrecision
from pipeline.loggers import make_logger
from pipeline.settings import RunSettings, StageSettings, TrainerSettings
from pipeline.trainer_factory import fit_stage, make_trainer

VARIANTS = ("lean", "full", "csv", "bare", "quiet")


class QuietVAE(TwoStageVAE):
    """Diagnostic: the same model and loss without any ``self.log`` call or finiteness check."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(self.loss_terms(batch[0]))
        self.optimize(loss)
        return loss.detach()

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.loss_terms(batch[0])


def _quiet_copy(model: TwoStageVAE) -> QuietVAE:
    quiet = QuietVAE(**dict(model.hparams))
    quiet.load_state_dict(model.state_dict())
    return quiet


class PlainLoop:
    """The reference: a hand-written loop doing the same work (train pass + validation pass).

    Args:
        model: its own copy of the model (trained by this loop only).
        dm: the datamodule (set up for ``fit``).
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
        _synchronize(self.device)
        return time.perf_counter() - t0


class PairedEpochTimer(Callback):
    """Time each Lightning epoch, and run one plain-loop epoch right before it.

    A Lightning epoch spans from one ``on_train_epoch_start`` to the next (so it includes
    validation, checkpoint writing and logger flushes), the last one ends at ``on_train_end``.
    This callback must come first in the Trainer's list, so that the plain epoch runs outside the
    Lightning epoch's window and the other callbacks' epoch-start work inside it.

    Args:
        plain: the plain loop to interleave.
    """

    def __init__(self, plain: PlainLoop) -> None:
        self.plain = plain
        self.plain_seconds: list[float] = []
        self.lightning_seconds: list[float] = []
        self._start: float | None = None

    def _close_epoch(self) -> None:
        _synchronize(self.plain.device)
        if self._start is not None:
            self.lightning_seconds.append(time.perf_counter() - self._start)
            self._start = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_epoch()
        state = torch.random.get_rng_state()
        self.plain_seconds.append(self.plain.epoch())
        torch.random.set_rng_state(state)  # the Lightning run's randomness stays its own
        self._start = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close_epoch()


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
    for ``variant``, each preceded by one plain-loop epoch on a copy of ``model``;
    ``checkpoint_seconds`` is ``run.checkpoint_every_n_seconds``; ``accelerator`` is ``cpu`` or
    ``gpu`` (one CUDA device, for both loops).

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


def _synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that wall-clock times include it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_confidence_interval(values: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free confidence interval of the median: the order statistics at
    n/2 -+ z sqrt(n)/2 (normal approximation of the binomial; 95 % for z = 1.96)."""
    ordered = sorted(values)
    n = len(ordered)
    half_width = z * math.sqrt(n) / 2
    low = max(0, math.floor(n / 2 - half_width))
    high = min(n - 1, math.ceil(n / 2 + half_width) - 1)
    return ordered[low], ordered[high]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per stage and variant."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--epochs",
        type=int,
        default=31,
        help="paired epochs per fit (>= 2; the first is dropped; the default "
        "leaves 30, three periods of the reconstruction images)",
    )
    parser.add_argument("--variants", nargs="+", default=["quiet", "full"], choices=VARIANTS)
    parser.add_argument("--max_per_class", type=int, default=None)
    parser.add_argument(
        "--architecture",
        choices=["mlp", "conv"],
        default="mlp",
        help="model.architecture (the default job: mlp)",
    )
    parser.add_argument(
        "--accelerator",
        choices=["cpu", "gpu"],
        default="cpu",
        help="run both loops on the CPU (the default job) or on one CUDA GPU",
    )
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: the training job's run.torch_threads)",
    )
    parser.add_argument(
        "--checkpoint_seconds",
        type=float,
        default=RunSettings().checkpoint_every_n_seconds,
        help="run.checkpoint_every_n_seconds (0: a checkpoint at every epoch end)",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=2,
        help="fits per stage and variant; their epoch pairs are pooled",
    )
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.repeats < 1:
        parser.error(
            f"--epochs {args.epochs} / --repeats {args.repeats}: need epochs >= 2 and repeats >= 1"
        )
    if args.accelerator == "gpu" and not torch.cuda.is_available():
        parser.error("--accelerator gpu: no CUDA device is available here; use --accelerator cpu")
    if args.threads is None:
        args.threads = RunSettings().torch_threads or torch.get_num_threads()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")

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
    pairs: dict[tuple[int, str], list[tuple[float, float]]] = {}
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

    print(
        f"{args.repeats} repeat(s) of {args.epochs} paired epochs per stage and variant "
        "(the first pair of each dropped); seconds per epoch are medians; ratio = median of "
        "the per-pair ratios, with its 95% confidence interval; sum ratio = summed times"
    )
    header = (
        "stage",
        "variant",
        "pairs",
        "plain s/epoch",
        "lightning s/epoch",
        "ratio",
        "95% CI",
        "sum ratio",
    )
    print(
        f"{header[0]:>5} {header[1]:>8} {header[2]:>5} {header[3]:>14} {header[4]:>18} "
        f"{header[5]:>6} {header[6]:>11} {header[7]:>10}"
    )
    for (stage, variant), rows in sorted(pairs.items()):
        plain_s = [p for p, _ in rows]
        light_s = [lt for _, lt in rows]
        ratios = [lt / p for p, lt in rows]
        low, high = median_confidence_interval(ratios)
        print(
            f"{stage:>5} {variant:>8} {len(rows):>5} {statistics.median(plain_s):>14.4f} "
            f"{statistics.median(light_s):>18.4f} {statistics.median(ratios):>6.2f} "
            f"{low:>5.2f}-{high:<5.2f} {sum(light_s) / sum(plain_s):>10.2f}"
        )
    medians = {key: statistics.median([lt / p for p, lt in rows]) for key, rows in pairs.items()}
    for stage in (1, 2):
        if (stage, "full") not in medians:
            continue
        print(
            f"stage {stage}: full job / plain loop: {medians[(stage, 'full')]:.3f} "
            "(target with --architecture conv: <= 1.10)"
        )
        if (stage, "quiet") in medians:
            features = medians[(stage, "full")] / medians[(stage, "quiet")]
            print(
                f"stage {stage}: job features over Lightning's bare loop (full / quiet): "
                f"{features:.3f} (target on the default job: <= 1.10)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
