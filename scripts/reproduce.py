#!/usr/bin/env python
"""Run the paper's experiments: ``python scripts/reproduce.py --experiment table1|...|all``.

A thin command line over :mod:`experiments` (see :mod:`experiments.cli` for the options).
Exit status: 0 on success, 2 for a user error (unknown experiment, bad option or data).
"""

from __future__ import annotations

import sys

from experiments.cli import build_parser, main

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
