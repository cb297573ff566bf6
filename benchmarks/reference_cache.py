"""Reference curves kept between runs of the geodesic benchmark (``--reference-cache``)."""

from __future__ import annotations

import os
from typing import Any

import torch

__all__ = ["load_cache", "save_cache"]


def load_cache(path: str | None) -> dict[str, Any]:
    """The reference curves cached by earlier runs (``{}`` without a cache file).

    Args:
        path: the cache file, or ``None``.

    Returns:
        ``{key: {method: run}}``, the key naming a decoder, its pairs and the settings.
    """
    if not path or not os.path.isfile(path):
        return {}
    return torch.load(path, weights_only=False)


def save_cache(path: str, key: str, refs: dict[str, dict[str, Any]]) -> None:
    """Store the reference runs of one decoder (curves, reported lengths, flags; no fine
    lengths: every run re-measures the curves with its own measurement).

    Args:
        path: the cache file (replaced atomically).
        key: the decoder's key (its name, pairs and settings).
        refs: ``{method: run}``, each run as :mod:`benchmarks.methods` returns it.
    """
    cache = load_cache(path)
    keep = ("curves", "reported", "converged", "reverted", "wall_s", "cpu_s", "computed",
            "iterations_mean", "iterations_max", "graph_points", "auxiliary_points")  # fmt: skip
    cache[key] = {m: {k: v for k, v in r.items() if k in keep} for m, r in refs.items()}
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save(cache, path + ".tmp")
    os.replace(path + ".tmp", path)
