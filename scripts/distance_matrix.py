#!/usr/bin/env python
"""All-pairs geodesic distance matrix of a trained TwoStageVAE, streamed to a ``.npy`` file.

A thin command line over :func:`geometry.write_distance_matrix` (see
:mod:`pipeline.distance_matrix_cli` for the options, examples and exit status); run it with
``python`` or ``torchrun``: ``python scripts/distance_matrix.py --checkpoint CKPT --codes train
--out d.npy``.
"""

from __future__ import annotations

import sys

from pipeline.distance_matrix_cli import main, parse_args

__all__ = ["main", "parse_args"]

if __name__ == "__main__":
    sys.exit(main())
