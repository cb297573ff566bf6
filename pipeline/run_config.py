"""The settings of one invocation as plain values: ``config.yaml`` (and the
``config.invocation-<n>.yaml`` of a later invocation that differs) and the logger's
hyper-parameters."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import yaml

from pipeline.run_folder import RunFolder, rank_zero_print
from pipeline.settings import RunSettings, TrainerSettings

__all__ = ["logger_hyperparameters", "settings_record", "write_config"]


def settings_record(
    *,
    model: Mapping[str, Any],
    data: Mapping[str, Any],
    trainer: TrainerSettings,
    run: RunSettings,
    geodesic_stats: Mapping[str, Any] | None,
    curvature_plots: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """Every setting of an invocation, as plain values (None callback settings: disabled)."""

    def group(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
        return {"enabled": False} if cfg is None else {"enabled": True, **cfg}

    return {
        "model": dict(model),
        "data": dict(data),
        "trainer": dataclasses.asdict(trainer),
        "run": dataclasses.asdict(run),
        "geodesic_stats": group(geodesic_stats),
        "curvature_plots": group(curvature_plots),
    }


def write_config(folder: RunFolder, record: Mapping[str, Any], invocation: int) -> None:
    """Write ``config.yaml``; when it exists and differs, ``config.invocation-<n>.yaml`` with a
    note (rank 0)."""
    text = yaml.safe_dump(dict(record), sort_keys=False)
    path = folder.config_path
    if os.path.isfile(path):
        with open(path) as fh:
            if fh.read() == text:
                return
        path = os.path.join(folder.path, f"config.invocation-{invocation}.yaml")
        rank_zero_print(
            f"note: the configuration differs from {folder.config_path}; "
            f"this invocation's is saved as {path}"
        )
    with open(path, "w") as fh:
        fh.write(text)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def logger_hyperparameters(record: Mapping[str, Any]) -> dict[str, Any]:
    """The trainer, run and data settings as ``"<group>/<key>"`` values (nested keys joined by
    dots); the model logs its own."""
    return {
        f"{group}/{k}": v
        for group in ("trainer", "run", "data")
        for k, v in _flatten(record[group]).items()
    }
