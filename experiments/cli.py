"""The command line of ``scripts/reproduce.py``: run the paper's experiments by name.

Examples::

    python scripts/reproduce.py --experiment table1
    python scripts/reproduce.py --experiment all                      # all but land
    python scripts/reproduce.py --experiment all --experiment land    # and land (hours)
    python scripts/reproduce.py --experiment table1 --seeds 0 --stage1-epochs 60 \\
        --option table1.num_subsets=5

Every experiment's options are the keyword arguments of its ``run`` function
(e.g. :func:`experiments.clustering.run_table1`), set with ``--option NAME.KEY=VALUE``
(``VALUE`` is read as JSON, else as a string). All names and options are checked before any
training. Exit status: 0 on success, 2 for a user error.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from experiments.common import ReproduceSettings
from experiments.registry import EXPERIMENTS, get_experiment, selected_experiments
from pipeline import UserError

__all__ = ["build_parser", "main", "parse_options"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    names = ", ".join(f"{n} ({e.description})" for n, e in EXPERIMENTS.items())
    d = ReproduceSettings.__dataclass_fields__
    p = argparse.ArgumentParser(
        description=f"Run the paper's experiments. Experiments: {names}; 'all' runs each "
        "except those marked not part of 'all'."
    )
    p.add_argument("--experiment", action="append", required=True, help="name, or 'all'")
    p.add_argument("--out", default=d["out_dir"].default, help="parent of report folders")
    p.add_argument("--runs-root", default=d["runs_root"].default, help="training run folders")
    p.add_argument("--dataset", default=d["dataset"].default)
    p.add_argument("--data-root", default=d["data_root"].default)
    p.add_argument("--seeds", type=int, nargs="+", default=list(d["seeds"].default))
    p.add_argument("--stage1-epochs", type=int, default=d["stage1_epochs"].default)
    p.add_argument("--stage2-epochs", type=int, default=d["stage2_epochs"].default)
    p.add_argument("--kl-warmup-epochs", type=int, default=d["kl_warmup_epochs"].default)
    p.add_argument("--train-logger", default=d["train_logger"].default)
    p.add_argument("--wandb-mode", default=d["wandb_mode"].default)
    p.add_argument("--wandb-group", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--option", action="append", default=[], metavar="NAME.KEY=VALUE", help="experiment option"
    )
    return p


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_options(names: Sequence[str], options: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``NAME.KEY=VALUE`` strings -> ``{name: {key: value}}``, checked against each ``run``.

    Raises:
        UserError: a malformed option, an experiment not selected, or an unknown key.
    """
    out: dict[str, dict[str, Any]] = {n: {} for n in names}
    for opt in options:
        head, sep, value = opt.partition("=")
        name, dot, key = head.partition(".")
        if not sep or not dot or not key:
            raise UserError(f"--option {opt!r} must look like NAME.KEY=VALUE")
        if name not in out:
            raise UserError(
                f"--option {opt!r}: experiment {name!r} is not selected ({list(names)})"
            )
        params = inspect.signature(get_experiment(name).run).parameters
        accepted = [k for k in params if k != "settings"]
        if key not in accepted:
            raise UserError(f"--option {opt!r}: {name} has no option {key!r}; accepted: {accepted}")
        out[name][key] = _value(value)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected experiments; return the exit status."""
    args = build_parser().parse_args(argv)
    try:
        names = selected_experiments(args.experiment)
        skipped = [n for n, e in EXPERIMENTS.items() if not e.in_all and n not in names]
        if "all" in args.experiment and skipped:
            print(f"all: leaves out {', '.join(skipped)} (name it to run it)", flush=True)
        options = parse_options(names, args.option)
        settings = ReproduceSettings(
            out_dir=args.out,
            runs_root=args.runs_root,
            dataset=args.dataset,
            data_root=args.data_root,
            seeds=args.seeds,
            stage1_epochs=args.stage1_epochs,
            stage2_epochs=args.stage2_epochs,
            kl_warmup_epochs=args.kl_warmup_epochs,
            train_logger=args.train_logger,
            wandb_mode=args.wandb_mode,
            wandb_group=args.wandb_group,
            progress=not args.no_progress,
        )
        for n in names:  # every check before any training
            exp = get_experiment(n)
            if exp.check is not None:
                accepted = inspect.signature(exp.check).parameters
                exp.check(settings, **{k: v for k, v in options[n].items() if k in accepted})
        timings = {}
        for n in names:
            t0 = time.perf_counter()
            results = get_experiment(n).run(settings, **options[n])
            timings[n] = time.perf_counter() - t0
            print(f"{n}: report in {results['report_dir']} ({timings[n]:.0f} s)", flush=True)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("times: " + ", ".join(f"{n} {t:.0f} s" for n, t in timings.items()), flush=True)
    return 0
