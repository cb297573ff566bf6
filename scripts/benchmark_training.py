#!/usr/bin/env python
"""Time per epoch of each stage: this framework (Lightning) versus a plain PyTorch loop.

A thin command line over :mod:`benchmarks` (see :mod:`benchmarks.training_cli` for the options,
the variants and examples): ``python scripts/benchmark_training.py`` is the default job.
"""

from __future__ import annotations

import sys

from benchmarks.training_cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
