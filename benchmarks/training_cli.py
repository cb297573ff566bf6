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
import os
import sys

import torch

from benchmarks.training import VARIANTS, run_paired_fits
from benchmarks.training_report import print_report
from pipeline.settings import RunSettings

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
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
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per stage and variant.

    Args:
        argv: the arguments (``None``: ``sys.argv[1:]``).

    Returns:
        The exit status, 0 (a bad option exits with status 2 and a message).
    """
    parser = build_parser()
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

    pairs = run_paired_fits(args)
    print_report(pairs, args.repeats, args.epochs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
