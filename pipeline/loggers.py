"""The run's logger (W&B, CSV or none), shared by both stages' Trainers, and the W&B mode."""

from __future__ import annotations

import json
import netrc
import os
from collections.abc import Mapping
from typing import Any

__all__ = [
    "RunHistory",
    "finish_logger",
    "has_wandb_credentials",
    "make_logger",
    "resolve_wandb_mode",
]

HISTORY_FILE = "history.jsonl"


def has_wandb_credentials() -> bool:
    """True when W&B can log online: ``WANDB_API_KEY`` or a netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    path = os.environ.get("NETRC", os.path.join(os.path.expanduser("~"), ".netrc"))
    try:
        return netrc.netrc(path).authenticators(host.split(":")[0]) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(requested: str) -> str:
    """``auto`` -> ``WANDB_MODE`` if set, else ``online`` with credentials, ``offline`` without."""
    if requested != "auto":
        return requested
    env_mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if env_mode in ("online", "offline", "disabled"):
        return env_mode
    if env_mode == "dryrun":
        return "offline"
    return "online" if has_wandb_credentials() else "offline"


class RunHistory:
    """The run's scalar W&B history as JSON lines (``<run folder>/history.jsonl``), written as
    it is logged, so that a resumed run can give W&B its whole history again.

    Each line is ``{"step": s, "stage": t, "epoch": e, "metrics": {...}}``: ``s`` on the run's
    step axis (stage 1's steps, then stage 2's plus stage 1's last global step,
    :attr:`step_offset`), ``t`` and ``e`` the stage and 0-based epoch the record belongs to (set
    by ``callbacks.HistoryPosition``).
    Media (images, tables) are not kept. A line is written (and flushed) before the record goes
    to W&B, so a kill loses at most a line being written, which :meth:`read` skips.

    Args:
        path: the JSON-lines file.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.step_offset = 0
        self.stage = 0
        self.epoch = -1

    def read(self) -> list[dict[str, Any]]:
        """The records in the file (a torn last line is dropped)."""
        if not os.path.isfile(self.path):
            return []
        out = []
        with open(self.path) as fh:
            for line in fh:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict) and "step" in record and "metrics" in record:
                    out.append(record)
        return out

    def rewind(self, stage: int, epoch: float) -> list[dict[str, Any]]:
        """Keep the records up to epoch ``epoch`` of stage ``stage`` (what the checkpoint a run
        resumes from covers; later records are logged again by the resumed training) and
        return them."""
        kept = [r for r in self.read() if (r.get("stage", 0), r.get("epoch", -1)) <= (stage, epoch)]
        tmp = f"{self.path}.rewind.tmp"
        with open(tmp, "w") as fh:
            for record in kept:
                fh.write(json.dumps(record) + "\n")
        os.replace(tmp, self.path)
        return kept

    def complete_epoch(
        self,
        records: list[dict[str, Any]],
        stage: int,
        epoch: int,
        step: int,
        metrics: Mapping[str, float],
    ) -> list[dict[str, Any]]:
        """Add the epoch-end record of ``epoch`` when a kill came between the epoch's checkpoint
        and that record (Lightning logs an epoch's training means after the epoch-end
        callbacks, the checkpoint among them).

        The record is rebuilt from ``metrics``, the epoch's metrics that the checkpoint holds
        (``callbacks.RunInfo``): every key except those of the epoch's other records (the
        per-step and validation records). The epoch-end record is the one that carries
        ``stage`` (``TwoStageVAE`` logs it with its training means).
        """
        own = [r for r in records if (r.get("stage"), r.get("epoch")) == (stage, epoch)]
        if any("stage" in r["metrics"] for r in own) or not metrics:
            return records
        others = {k for r in own for k in r["metrics"]}
        rebuilt = {k: v for k, v in metrics.items() if k not in others}
        rebuilt["epoch"] = float(epoch)
        self.stage, self.epoch = stage, epoch
        self.append(step, rebuilt)
        return [*records, {"step": step, "stage": stage, "epoch": epoch, "metrics": rebuilt}]

    def append(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Add one record (numbers only)."""
        scalars = {
            k: float(v)
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if not scalars:
            return
        with open(self.path, "a") as fh:
            record = {"step": int(step), "stage": self.stage, "epoch": self.epoch}
            fh.write(json.dumps({**record, "metrics": scalars}) + "\n")
            fh.flush()


def _resumable_wandb_logger_class() -> type:
    from pytorch_lightning.loggers import WandbLogger
    from pytorch_lightning.utilities import rank_zero_only

    class ResumableWandbLogger(WandbLogger):
        """``WandbLogger`` on the run's step axis whose scalars also go to a
        :class:`RunHistory`; :meth:`replay` logs a rewound history into a new W&B run file.

        Args:
            history: the run's history file.
            **kwargs: ``WandbLogger`` arguments.
        """

        def __init__(self, history: RunHistory, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.history = history

        @rank_zero_only
        def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
            if step is not None:
                step = step + self.history.step_offset
                self.history.append(step, metrics)
            super().log_metrics(metrics, step)

        @rank_zero_only
        def replay(self, records: list[dict[str, Any]]) -> None:
            """Log ``records`` (from :meth:`RunHistory.rewind`) in order, as they were logged."""
            for record in records:
                WandbLogger.log_metrics(self, record["metrics"], record["step"])

    return ResumableWandbLogger


def make_logger(
    kind: str,
    run_dir: str,
    run_name: str,
    wandb_id: str,
    wandb_mode: str,
    project: str,
    entity: str | None,
) -> Any:
    """The run's logger, shared by both stages' Trainers (``None`` for no logger).

    W&B: a ``WandbLogger(id=wandb_id, resume="allow")`` under ``<run_dir>/wandb``, online or
    offline as resolved by :func:`resolve_wandb_mode`, that also keeps the run's scalar history
    in ``<run_dir>/history.jsonl`` (:class:`RunHistory`).
    """
    if kind == "none":
        return None
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=run_dir, name="csv", version="")
    if wandb_mode == "disabled":
        os.environ["WANDB_MODE"] = "disabled"
    return _resumable_wandb_logger_class()(
        RunHistory(os.path.join(run_dir, HISTORY_FILE)),
        name=run_name,
        id=wandb_id,
        resume="allow",
        save_dir=run_dir,
        project=project,
        entity=entity,
        offline=wandb_mode == "offline",
        log_model=False,
    )


def finish_logger(logger: Any, rank_zero: bool) -> None:
    """Close the W&B run of ``logger`` (rank 0), so the next run in this process starts anew."""
    from pytorch_lightning.loggers import WandbLogger

    if isinstance(logger, WandbLogger) and rank_zero:
        import wandb

        if wandb.run is not None:
            wandb.finish()
