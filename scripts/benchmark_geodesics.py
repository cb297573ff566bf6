#!/usr/bin/env python
"""Benchmark batched geodesics on a family of decoders against stochman and our own references.

A thin command line over :mod:`benchmarks` (see :mod:`benchmarks.geodesics_cli` for the options
and examples): ``python scripts/benchmark_geodesics.py --decoders synthetic --quick``.
"""

from __future__ import annotations

import sys

from benchmarks.geodesics_cli import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
