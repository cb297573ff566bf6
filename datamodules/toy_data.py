"""Procedurally generated toy data sets (``toy_*`` in :data:`datamodules.sources.DATASETS`): 2-D
and 3-D shapes in the spirit of the paper's synthetic examples, seeded and generated in
milliseconds.
"""

from __future__ import annotations

import math

import numpy as np


def _split_counts(n: int, weights: tuple[float, ...]) -> list[int]:
    total = sum(weights)
    counts = [int(math.floor(n * w / total)) for w in weights]
    counts[0] += n - sum(counts)
    return counts


def make_toy(name: str, n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Generate a toy dataset, then center it and divide by one scalar.

    The clean shapes live at unit scale (radius about 1), isotropic Gaussian noise of standard
    deviation ``noise`` is added, and the result is centerd and divided by the root mean per-
    coordinate variance: a single scalar, so the geometry (gaps, aspect ratios) is preserved
    while every coordinate has unit variance on average.

    Args:
        name: one of the ``toy_*`` names in :data:`datamodules.sources.DATASETS`.
        n: number of points (>= 2).
        noise: standard deviation of the additive Gaussian noise (unit-scale coordinates).
        rng: numpy generator; the output is a deterministic function of its state.

    Returns:
        x: float32 ``(n, D)``; y: int64 ``(n,)`` component labels (see ``class_names``).
    """
    if name == "toy_moons":
        n0, n1 = _split_counts(n, (1.0, 1.0))
        t0, t1 = rng.uniform(0.0, math.pi, n0), rng.uniform(0.0, math.pi, n1)
        x = np.concatenate(
            [
                np.stack([np.cos(t0), np.sin(t0)], 1),
                np.stack([1.0 - np.cos(t1), 0.5 - np.sin(t1)], 1),
            ]
        )
        y = np.repeat([0, 1], [n0, n1])
    elif name == "toy_circles":
        n0, n1 = _split_counts(n, (1.0, 0.5))  # equal density along both circles
        t = rng.uniform(0.0, 2 * math.pi, n)
        r = np.repeat([1.0, 0.5], [n0, n1])
        x = r[:, None] * np.stack([np.cos(t), np.sin(t)], 1)
        y = np.repeat([0, 1], [n0, n1])
    elif name == "toy_arcs":
        gap = math.radians(60.0)
        t = np.sort(rng.uniform(gap / 2, 2 * math.pi - gap / 2, n))
        x = np.stack([np.cos(t), np.sin(t)], 1)
        y = (t >= math.pi).astype(np.int64)
    elif name == "toy_sphere":
        v = rng.standard_normal((n, 3))
        x = v / np.linalg.norm(v, axis=1, keepdims=True).clip(min=1e-12)
        y = (x[:, 2] < 0).astype(np.int64)
    elif name == "toy_swissroll":
        t = np.sort(1.5 * math.pi * (1.0 + 2.0 * rng.uniform(0.0, 1.0, n)))
        t_max = 4.5 * math.pi
        height = rng.uniform(-0.5, 0.5, n)
        x = np.stack([t * np.cos(t) / t_max, height, t * np.sin(t) / t_max], 1)
        y = (np.arange(n) >= n // 2).astype(np.int64)
    else:
        raise ValueError(f"unknown toy dataset {name!r}")
    x = x + noise * rng.standard_normal(x.shape)
    x = x - x.mean(0, keepdims=True)
    x = x / max(float(np.sqrt((x**2).mean())), 1e-12)
    return x.astype(np.float32), np.asarray(y, dtype=np.int64)
