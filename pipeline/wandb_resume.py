"""How the W&B run of an invocation starts: the ``wandb.init`` arguments and which records of
the run's history (``history.jsonl``) it logs again (README "W&B").

Every call that logs to W&B is one row of the run's history (``_step`` 0, 1, ...) and one record
of ``history.jsonl``, tagged ``online`` when an online invocation logged it. A resume keeps the
records its checkpoint covers (``RunHistory.rewind``) and then:

* offline: a new offline run file with the run's id, into which every kept record is logged
  again (the earlier files are superseded), so the file holds the whole history;
* online, when an earlier invocation logged online: W&B's rewind,
  ``wandb.init(resume_from=f"{id}?_step={n}")``, with ``n`` the number of leading kept records
  that an online invocation logged (the rows the server holds and the checkpoint covers). The
  server drops its rows from ``_step`` ``n`` on (those after the checkpoint, which the resumed
  training logs again), and the kept records from ``n`` on are logged again;
* online otherwise (a first start, or earlier invocations offline only):
  ``resume="allow"`` and every kept record logged again.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pipeline.loggers import HISTORY_FILE, RunHistory, make_logger
from pipeline.run_folder import StagePlan, is_global_rank_zero, rank_zero_print
from pipeline.settings import RunSettings

__all__ = [
    "WandbStart",
    "checkpoint_global_step",
    "rewind_history",
    "start_logger",
    "wandb_start",
]


@dataclass(frozen=True)
class WandbStart:
    """How one invocation's W&B run starts.

    Attributes:
        init: ``wandb.init`` arguments about the run's identity (``id``, ``resume`` or
            ``resume_from``), passed through ``WandbLogger``.
        replay_from: index of the first kept record to log again (all before it are in the run).
    """

    init: dict[str, Any] = field(default_factory=dict)
    replay_from: int = 0


def wandb_start(
    run_id: str, mode: str, kept: Sequence[Mapping[str, Any]], *, online_before: bool
) -> WandbStart:
    """The W&B start of an invocation (see the module docstring).

    Args:
        run_id: the run's W&B id.
        mode: ``online``, ``offline`` or ``disabled``.
        kept: the history records the checkpoints cover, in order (empty for a first start).
        online_before: an earlier invocation of the run logged online (a record of the history,
            before it was rewound, is tagged ``online``).

    Returns:
        The ``wandb.init`` arguments and the first record to log again.
    """
    if mode != "online" or not online_before:
        return WandbStart({"id": run_id, "resume": "allow"}, 0)
    on_server = 0
    for record in kept:
        if not record.get("online"):
            break
        on_server += 1
    # resume_from excludes resume (W&B raises when both are set); WandbLogger sets
    # resume="allow" unless told otherwise
    return WandbStart(
        {"id": run_id, "resume": None, "resume_from": f"{run_id}?_step={on_server}"}, on_server
    )


def checkpoint_global_step(ckpt_path: str) -> int:
    """The ``global_step`` a checkpoint was written at."""
    return int(torch.load(ckpt_path, map_location="cpu", weights_only=True)["global_step"])


def _checkpoint_epoch(ckpt_path: str) -> int:
    """The 0-based epoch at whose end a checkpoint was written."""
    return int(torch.load(ckpt_path, map_location="cpu", weights_only=True)["epoch"])


def rewind_history(
    run_dir: str,
    plans: Mapping[int, StagePlan],
    stage1_ckpt: str,
    wandb_id: str,
    wandb_mode: str,
) -> tuple[WandbStart, list[dict[str, Any]]]:
    """Before the W&B run starts (rank 0, W&B online or offline): cut ``history.jsonl`` back to
    what the checkpoints of this invocation's plan cover, rebuild a missing epoch-end record;
    offline, move earlier offline run files to ``wandb/superseded/``.

    Args:
        run_dir: the run folder.
        plans: the stages' plans (``pipeline.run_folder.RunFolder.plan``).
        stage1_ckpt: the stage-1 checkpoint stage 2 starts from.
        wandb_id: the run's W&B id.
        wandb_mode: ``online`` or ``offline``.

    Returns:
        How the W&B run starts (:func:`wandb_start`) and the kept records (those from
        ``start.replay_from`` on are to be logged again).
    """
    history = RunHistory(os.path.join(run_dir, HISTORY_FILE))
    online_before = any(r.get("online") for r in history.read())
    resumed: tuple[int, str] | None = None
    if plans[1].action == "fresh":
        keep: tuple[int, float] = (0, -1)  # nothing
    elif plans[1].action == "resume":
        resumed = (1, str(plans[1].ckpt_path))
        keep = (1, _checkpoint_epoch(resumed[1]))
    elif plans[2].action == "resume":
        resumed = (2, str(plans[2].ckpt_path))
        keep = (2, _checkpoint_epoch(resumed[1]))
    else:
        keep = (1, math.inf)  # all of stage 1
    records = history.rewind(*keep)
    if resumed is not None:
        stage, path = resumed
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        offset = checkpoint_global_step(stage1_ckpt) if stage == 2 else 0
        metrics = ckpt.get("callbacks", {}).get("RunInfo", {}).get("metrics", {})
        step = offset + int(ckpt["global_step"]) - 1  # Lightning's step of epoch-end logs
        records = history.complete_epoch(records, stage, int(ckpt["epoch"]), step, metrics)
    start = wandb_start(wandb_id, wandb_mode, records, online_before=online_before)
    if wandb_mode == "online" and "resume_from" in start.init:
        rank_zero_print(
            f"note: W&B run {wandb_id} rewound to _step {start.replay_from} (the rows its "
            f"checkpoint covers); {len(records) - start.replay_from} records of "
            f"{HISTORY_FILE} logged again"
        )
    wandb_dir = os.path.join(run_dir, "wandb")
    earlier = sorted(glob.glob(os.path.join(wandb_dir, "offline-run-*")))
    if earlier and wandb_mode == "offline":
        superseded = os.path.join(wandb_dir, "superseded")
        os.makedirs(superseded, exist_ok=True)
        for path in earlier:
            os.replace(path, os.path.join(superseded, os.path.basename(path)))
        rank_zero_print(
            f"note: W&B history replayed from {HISTORY_FILE} ({len(records)} records, "
            f"images, tables and histograms included) into a new offline run file; the "
            f"earlier ones moved to {superseded}"
        )
    return start, records


def start_logger(
    run: RunSettings,
    run_dir: str,
    plans: Mapping[int, StagePlan],
    stage1_ckpt: str,
    wandb_id: str,
    wandb_mode: str,
    hyperparameters: Mapping[str, Any],
) -> Any:
    """The invocation's logger (``pipeline.loggers.make_logger``; None for no logger), its W&B
    run started as :func:`wandb_start` says, the history logged again into it (rank 0) and
    ``hyperparameters`` logged."""
    start: WandbStart | None = None
    kept: list[dict[str, Any]] = []
    rank_zero = is_global_rank_zero()
    if run.logger == "wandb" and wandb_mode in ("online", "offline") and rank_zero:
        start, kept = rewind_history(run_dir, plans, stage1_ckpt, wandb_id, wandb_mode)
    logger = make_logger(
        run.logger,
        run_dir,
        run.name,
        wandb_id,
        wandb_mode,
        run.wandb_project,
        run.wandb_entity,
        start=None if start is None else start.init,
    )
    if logger is None:
        return None
    logger.log_hyperparams(dict(hyperparameters))
    replayed = kept[start.replay_from :] if start is not None else []
    if replayed:
        logger.replay(replayed)
        if wandb_mode == "online":  # now in the online run too
            RunHistory(os.path.join(run_dir, HISTORY_FILE)).mark_online(len(kept))
    return logger
