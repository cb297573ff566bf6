#!/usr/bin/env python
"""Cost of one ``self.log`` call inside Lightning: its ``_ResultCollection.log``, with Lightning's
own ``_ResultMetric.to`` (the baseline) and with the fast path of
``lightning_modules/lightning_speedups.py``, measured in the same run::

    python scripts/benchmark_logging.py
    python scripts/benchmark_logging.py --calls 5000 --rounds 7

The two are timed in alternating rounds (the machine's drift hits both); printed are the median
microseconds per call of each and their ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

import torch  # noqa: E402
from pytorch_lightning.trainer.connectors.logger_connector.result import (  # noqa: E402
    _ResultCollection,
    _ResultMetric,
)

from lightning_modules import lightning_speedups  # noqa: E402


def _time_log_calls(calls: int) -> float:
    """Seconds per ``_ResultCollection.log`` call of an epoch-mean metric, as the model logs it."""
    results = _ResultCollection(training=True)
    results.batch_idx, results.dataloader_idx = 0, None
    value = torch.tensor(1.0)
    kwargs = dict(on_step=False, on_epoch=True, sync_dist=True, batch_size=128)
    results.log("training_step", "train/elbo", value, **kwargs)  # the first call creates it
    start = time.perf_counter()
    for _ in range(calls):
        results.log("training_step", "train/elbo", value, **kwargs)
    return (time.perf_counter() - start) / calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per round (>= 1)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each (>= 1)")
    args = parser.parse_args(argv)
    if args.calls < 1 or args.rounds < 1:
        parser.error(f"--calls {args.calls} / --rounds {args.rounds}: both must be >= 1")
    if not lightning_speedups.install_log_fast_path():
        parser.error("this Lightning version has no _ResultMetric.to: nothing to compare")
    fast = _ResultMetric.to
    original = fast.original
    seconds: dict[str, list[float]] = {"lightning": [], "fast path": []}
    try:
        for _ in range(args.rounds):
            for name, method in (("lightning", original), ("fast path", fast)):
                _ResultMetric.to = method
                seconds[name].append(_time_log_calls(args.calls))
    finally:
        _ResultMetric.to = fast
    base, new = (statistics.median(seconds[k]) for k in ("lightning", "fast path"))
    print(f"{args.rounds} rounds of {args.calls} calls; median microseconds per call")
    print(f"Lightning's _ResultMetric.to: {1e6 * base:8.1f}")
    print(f"fast path:                    {1e6 * new:8.1f}")
    print(f"ratio (Lightning / fast path): {base / new:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
