"""``summary.json``: what a run reports at its end, built from its ``run_state.json``."""

from __future__ import annotations

import os
from typing import Any

from pipeline.run_folder import RunFolder
from pipeline.settings import RunSettings

__all__ = ["build_summary"]


def build_summary(
    state: dict[str, Any],
    folder: RunFolder,
    run: RunSettings,
    wandb_id: str,
    wandb_mode: str,
) -> dict[str, Any]:
    """The run's summary: per stage its status, checkpoint, epochs, final metrics and fit
    seconds; the wall seconds of all invocations and of this one, callback seconds, the logger
    and the W&B run.

    Args:
        state: the run state (``run_state.json``), this invocation's wall time set.
        folder: the run folder.
        run: the run settings.
        wandb_id: the W&B run id.
        wandb_mode: the W&B mode of this invocation.
    """
    stages: dict[str, Any] = {}
    for s in (1, 2):
        entry = state.get(f"stage{s}", {})
        stages[f"stage{s}"] = {
            "status": entry.get("status", "pending"),
            "checkpoint": entry.get("checkpoint"),
            "epochs": entry.get("epochs"),
            "metrics": entry.get("metrics", {}),
            "fit_seconds": entry.get("fit_seconds"),
        }
    return {
        "run_dir": folder.path,
        "run_name": run.name,
        **stages,
        "checkpoints": {k: v["checkpoint"] for k, v in stages.items()},
        "wall_seconds": sum(inv["wall_seconds"] for inv in state["invocations"]),
        "wall_seconds_this_invocation": state["invocations"][-1]["wall_seconds"],
        "callback_seconds": sum(
            state.get(f"stage{s}", {}).get("callback_seconds", 0.0) for s in (1, 2)
        ),
        "logger": run.logger,
        "wandb": {
            "id": wandb_id,
            "mode": wandb_mode,
            "project": run.wandb_project,
            "dir": os.path.join(folder.path, "wandb"),
        },
        "config": folder.config_path,
    }
