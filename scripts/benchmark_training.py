#!/usr/bin/env python
"""Time per epoch of each stage: this framework (Lightning) versus a plain PyTorch loop.

Same process, same seed, same model (a fresh TwoStageVAE built from the same settings), same
datamodule, batch size and optimiser. One "epoch" is a training pass over the training split plus
a validation pass (what the default job does every epoch); the Lightning epoch also includes
what the framework adds (metric logging, checkpoint writing, reconstruction images, the progress
bar), depending on the variant. The median over the timed epochs (the first, warm-up, epoch is
dropped) is reported, and the ratio Lightning / plain::

    python scripts/benchmark_training.py                     # default job's data and model
    python scripts/benchmark_training.py --epochs 6 --variants lean full
    python scripts/benchmark_training.py --max_per_class 100 # quicker

Variants: ``lean`` (no logger, no progress bar, checkpoints on), ``full`` (as the default job:
W&B offline logger, reconstruction images, ``log`` progress lines, checkpoints), ``csv``
(CSV logger instead of W&B), and two diagnostics: ``bare`` (no checkpoints, no logger: the
Lightning loop with the model's own ``self.log`` calls) and ``quiet`` (``bare`` with a subclass
whose steps log nothing and skip the finiteness check: Lightning's loop overhead alone).
"""

from __future__ import annotations

import argparse
import copy
import io
import os
import statistics
import sys
import tempfile
import time
from typing import Any

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.callbacks import Callback  # noqa: E402

from datamodules.vae_datamodule import VAEDataModule  # noqa: E402
from lightning_modules import TwoStageVAE  # noqa: E402
from lightning_modules.rbf import RBFPrecision  # noqa: E402

VARIANTS = ("lean", "full", "csv", "bare", "quiet")


class QuietVAE(TwoStageVAE):
    """Diagnostic: the same model and loss without any ``self.log`` call or finiteness check."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        terms = self.loss_terms(batch[0])
        return terms["rec"] + self.kl_weight() * terms["kl"]

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.loss_terms(batch[0])


def _quiet_copy(model: TwoStageVAE) -> QuietVAE:
    quiet = QuietVAE(**dict(model.hparams))
    quiet.load_state_dict(model.state_dict())
    return quiet


class EpochTimer(Callback):
    """Wall time of each epoch, from one train-epoch start to the next (after checkpointing)."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.end = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.end = time.perf_counter()

    @property
    def epoch_seconds(self) -> list[float]:
        marks = [*self.starts, self.end]
        return [b - a for a, b in zip(marks[:-1], marks[1:])]


def plain_epochs(model: TwoStageVAE, dm: VAEDataModule, epochs: int) -> list[float]:
    """The reference: a hand-written loop doing the same work (train pass + validation pass)."""
    opt = model.configure_optimizers()  # the same optimiser and settings as the framework's
    train_loader, val_loader = dm.train_dataloader(), dm.val_dataloader()
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        for x, _y in train_loader:
            terms = model.loss_terms(x)
            loss = terms["rec"] + terms["kl"]
            if not torch.isfinite(loss):
                raise FloatingPointError("non-finite loss in the plain loop")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if model.stage == 2 and isinstance(model.variance_net, RBFPrecision):
                model.variance_net.project_()
        model.eval()
        with torch.no_grad():
            for x, _y in val_loader:
                model.loss_terms(x)
        times.append(time.perf_counter() - t0)
    return times


def lightning_epochs(model: TwoStageVAE, dm: VAEDataModule, epochs: int, variant: str,
                     workdir: str, seed: int) -> list[float]:
    """The framework's epochs, with the Trainer settings and callbacks of ``scripts/train.py``."""
    from callbacks.reconstructions import ReconstructionImages
    from scripts._training import EpochSeeder, make_checkpoint_callback, make_logger

    stage = model.stage
    timer = EpochTimer()
    callbacks: list[Callback] = [EpochSeeder(seed, stage), timer]
    if variant in ("bare", "quiet"):
        model = _quiet_copy(model) if variant == "quiet" else model
    else:
        callbacks.append(make_checkpoint_callback(os.path.join(workdir, f"ckpt{stage}")))
    logger: Any = False
    if variant == "full":
        from scripts._settings import RunSettings
        from scripts._training import LogLinesProgressBar

        run = RunSettings()
        callbacks += [ReconstructionImages(run.reconstructions, run.reconstructions_every_n_epochs,
                                           save_dir=os.path.join(workdir, "figures")),
                      LogLinesProgressBar(stage, every_n_seconds=30.0, stream=io.StringIO())]
        logger = make_logger("wandb", workdir, "benchmark", f"bench{stage}{variant}", "offline",
                             "latent-oddity-benchmark", None)
    elif variant == "csv":
        logger = make_logger("csv", workdir, "benchmark", "", "offline", "", None)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, logger=logger, callbacks=callbacks,
        enable_checkpointing=variant not in ("bare", "quiet"),
        enable_progress_bar=variant == "full", enable_model_summary=False,
        num_sanity_val_steps=0, inference_mode=False, log_every_n_steps=10,
        default_root_dir=workdir,
    )
    trainer.fit(model, datamodule=dm)
    if variant == "full":
        import wandb

        wandb.finish()
    return timer.epoch_seconds


def _median(times: list[float]) -> float:
    return statistics.median(times[1:] if len(times) > 1 else times)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per stage and variant."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs per measurement (>= 2)")
    parser.add_argument("--variants", nargs="+", default=["lean", "full"], choices=VARIANTS)
    parser.add_argument("--max_per_class", type=int, default=None)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: the training job's run.torch_threads)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved plain/Lightning repetitions; the median is reported")
    args = parser.parse_args(argv)
    if args.threads is None:
        from scripts._settings import RunSettings

        args.threads = RunSettings().torch_threads or torch.get_num_threads()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")

    dm = VAEDataModule(max_per_class=args.max_per_class, batch_size=args.batch_size, seed=args.seed)
    dm.setup("fit")
    pl.seed_everything(args.seed, verbose=False)
    base1 = TwoStageVAE(data_shape=dm.data_shape, output_activation=dm.output_activation)
    n_train = len(dm.train_dataset)
    print(f"data: {n_train} training points, batch {args.batch_size}, "
          f"{-(-n_train // args.batch_size)} steps/epoch; torch threads {args.threads}")

    # (stage, variant) -> per-repeat medians of the plain and the Lightning epoch times; plain
    # and Lightning alternate within each repeat so that slow drifts of a shared machine hit both
    plain_t: dict[int, list[float]] = {1: [], 2: []}
    light_t: dict[tuple[int, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        # stage 2 starts from a short stage-1 fit, RBF centres placed once for both loops
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=False,
                             enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0, default_root_dir=workdir)
        trained = copy.deepcopy(base1)
        trainer.fit(trained, datamodule=dm)
        ckpt = os.path.join(workdir, "stage1.ckpt")
        trainer.save_checkpoint(ckpt)
        base2 = TwoStageVAE.stage2_from_stage1(ckpt)
        base2.init_variance_net(base2.encode_dataset(dm.full_train_dataloader()))
        for rep in range(args.repeats):
            for stage, base in ((1, base1), (2, base2)):
                torch.manual_seed(args.seed)
                plain_t[stage].append(_median(plain_epochs(copy.deepcopy(base), dm, args.epochs)))
                for variant in args.variants:
                    folder = os.path.join(workdir, f"{variant}{stage}_{rep}")
                    times = lightning_epochs(copy.deepcopy(base), dm, args.epochs, variant,
                                             folder, args.seed)
                    light_t.setdefault((stage, variant), []).append(_median(times))
    results = [(stage, variant, statistics.median(plain_t[stage]), statistics.median(times),
                statistics.median(lt / pt for lt, pt in zip(times, plain_t[stage])))
               for (stage, variant), times in light_t.items()]

    print(f"median over {args.repeats} interleaved repeats of {args.epochs} epochs "
          "(the first epoch of each measurement dropped)")
    header = ("stage", "variant", "plain s/epoch", "lightning s/epoch", "ratio")
    print(f"{header[0]:>5} {header[1]:>8} {header[2]:>14} {header[3]:>18} {header[4]:>6}")
    for stage, variant, plain, light, ratio in sorted(results):
        print(f"{stage:>5} {variant:>8} {plain:>14.4f} {light:>18.4f} {ratio:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
