#!/usr/bin/env python
"""Train the two-stage VAE of "Latent Space Oddity" (both stages) into one run folder.

A thin command line over :func:`pipeline.train` (see :mod:`pipeline.cli` for the options and
examples): ``python scripts/train.py`` with no arguments is the main job. Exit status: 0 on
success, 2 for a user error (bad setting, data or checkpoint), 3 for a NaN or infinite loss.
"""

from __future__ import annotations

import time

STARTED_AT = time.perf_counter()  # before the heavy imports: wall_seconds covers the whole job

import sys  # noqa: E402

from pipeline.cli import build_parser, main, quiet_dependency_deprecations  # noqa: E402

__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    quiet_dependency_deprecations()
    sys.exit(main(started_at=STARTED_AT))
