#!/usr/bin/env python
"""Hook dispatch: training epochs with Lightning's own hook dispatchers (the baseline) and with
the fast path of ``lightning_modules/lightning_speedups.py``, measured in the same run::

    python scripts/benchmark_hooks.py
    python scripts/benchmark_hooks.py --variant lean --rounds 5

Each round fits stage 1 of the default job's model and data twice, once with each set of
dispatchers (alternating, so that the machine's drift hits both), with the Trainer settings and
callbacks of ``scripts/benchmark_training.py``'s ``--variant``. Every Lightning epoch is paired
with one epoch of the plain PyTorch loop, as in that benchmark. Printed per dispatcher set: the
median seconds per Lightning epoch and the median ratio to the plain loop; then the difference of
the two ratios (the figure that cancels the machine's drift between fits) and the ratio of the two
epoch medians (Lightning's dispatchers / the fast path).
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.trainer import call  # noqa: E402

from datamodules.vae_datamodule import VAEDataModule  # noqa: E402
from lightning_modules import TwoStageVAE, lightning_speedups  # noqa: E402
from scripts._settings import RunSettings  # noqa: E402
from scripts.benchmark_training import VARIANTS, paired_epochs  # noqa: E402


def _use_dispatchers(fast: dict[str, object], lightning: bool) -> None:
    """Put Lightning's own dispatchers (``lightning``) or the fast ones in place."""
    for name, fn in fast.items():
        setattr(call, name, fn.original if lightning else fn)  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per dispatcher set."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=VARIANTS, default="full",
                        help="benchmark_training.py variant (default: full, the default job's "
                             "callbacks and W&B offline logger)")
    parser.add_argument("--epochs", type=int, default=11,
                        help="paired epochs per fit (>= 2; the first is dropped)")
    parser.add_argument("--rounds", type=int, default=3, help="fits with each dispatcher set")
    parser.add_argument("--max_per_class", type=int, default=None,
                        help="digits per class (default: all of the embedded subset)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.rounds < 1:
        parser.error(f"--epochs {args.epochs} / --rounds {args.rounds}: need epochs >= 2 and "
                     "rounds >= 1")
    if not lightning_speedups.install_hook_fast_path():
        parser.error("this Lightning version lacks the hook dispatchers: nothing to compare")
    torch.set_num_threads(RunSettings().torch_threads or torch.get_num_threads())
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    fast = {name: getattr(call, name) for name in lightning_speedups.HOOK_DISPATCHERS}

    dm = VAEDataModule(max_per_class=args.max_per_class, seed=args.seed)
    dm.setup("fit")
    pl.seed_everything(args.seed, verbose=False)
    base = TwoStageVAE(data_shape=dm.data_shape, output_activation=dm.output_activation)
    # dispatcher set -> (plain seconds, Lightning seconds) per epoch, first of each fit dropped
    pairs: dict[str, list[tuple[float, float]]] = {"lightning": [], "fast path": []}
    try:
        with tempfile.TemporaryDirectory() as workdir:
            for rnd in range(args.rounds):
                for name in pairs:
                    _use_dispatchers(fast, lightning=name == "lightning")
                    torch.manual_seed(args.seed)
                    plain, light = paired_epochs(
                        copy.deepcopy(base), dm, args.epochs, args.variant,
                        os.path.join(workdir, f"{name.replace(' ', '_')}{rnd}"), args.seed,
                        RunSettings().checkpoint_every_n_seconds)
                    pairs[name].extend(list(zip(plain, light))[1:])
                print(f"round {rnd + 1}/{args.rounds} done", flush=True)
    finally:
        _use_dispatchers(fast, lightning=False)

    print(f"stage 1, variant {args.variant}: {args.rounds} fits of {args.epochs} paired epochs "
          "per dispatcher set (first pair of each dropped); medians")
    print(f"{'dispatchers':>12} {'lightning s/epoch':>18} {'ratio to plain':>15}")
    medians, ratios = {}, {}
    for name, rows in pairs.items():
        medians[name] = statistics.median(light for _, light in rows)
        ratios[name] = statistics.median(light / plain for plain, light in rows)
        print(f"{name:>12} {medians[name]:>18.4f} {ratios[name]:>15.3f}")
    # the ratio to the paired plain epoch cancels the machine's drift between fits
    print(f"ratio to plain, Lightning's dispatchers - fast path: "
          f"{ratios['lightning'] - ratios['fast path']:.3f}")
    print(f"epoch time, Lightning's dispatchers / fast path: "
          f"{medians['lightning'] / medians['fast path']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
