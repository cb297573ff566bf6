"""The run's logger (W&B, CSV or none), shared by both stages' Trainers, and the W&B mode."""

from __future__ import annotations

import netrc
import os
from typing import Any

__all__ = ["finish_logger", "has_wandb_credentials", "make_logger", "resolve_wandb_mode"]


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

    W&B: ``WandbLogger(id=wandb_id, resume="allow")`` under ``<run_dir>/wandb``, online or
    offline as resolved by :func:`resolve_wandb_mode`.
    """
    if kind == "none":
        return None
    if kind == "csv":
        from pytorch_lightning.loggers import CSVLogger

        return CSVLogger(save_dir=run_dir, name="csv", version="")
    from pytorch_lightning.loggers import WandbLogger

    if wandb_mode == "disabled":
        os.environ["WANDB_MODE"] = "disabled"
    return WandbLogger(
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
