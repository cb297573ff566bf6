#!/usr/bin/env python
"""Benchmark streamed all-pairs geodesic distance matrices (scripts/distance_matrix.py).

A thin command line over :mod:`benchmarks` (see :mod:`benchmarks.distances_cli` for the options
and examples): ``python scripts/benchmark_distances.py --checkpoint <stage-2 checkpoint>``.
"""

from __future__ import annotations

import sys

from benchmarks.distances_cli import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
