"""The run folder of the training pipeline: layout, run state, resume plan.

Layout of ``runs/<name>/``::

    config.yaml                     resolved configuration of the first invocation
    config.invocation-<n>.yaml      a later invocation whose configuration differed
    run_state.json                  W&B id, stage status (pending / running / done / external)
    history.jsonl                   one record per W&B row (pipeline.loggers.RunHistory)
    media/                          images logged to W&B, as PNG files
    checkpoints/stage1/last.ckpt    written at epoch ends (callbacks/checkpointing.py)
    checkpoints/stage2/last.ckpt
    wandb/                          the W&B run (offline-run-* when offline)
    csv/                            CSV logs when ``--run.logger csv``
    figures/                        reconstruction grids and other figures
    summary.json                    final metrics per stage, checkpoints, timings

Only rank 0 writes. Every rank reads the folder *before* its first Trainer starts, so all ranks
derive the same plan (which stage to skip, resume or start) from the same files.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from typing import Any

from pipeline.errors import UserError

STATE_FILE = "run_state.json"
SUMMARY_FILE = "summary.json"
CONFIG_FILE = "config.yaml"
STAGE_DONE = "done"
STAGE_EXTERNAL = "external"


def is_global_rank_zero() -> bool:
    """Whether this process is global rank 0, from the launcher's environment.

    Usable before any Trainer exists: torchrun sets ``RANK``; SLURM ``SLURM_PROCID``; Lightning's
    own launcher ``NODE_RANK`` / ``LOCAL_RANK`` in the processes it starts.
    """
    env = os.environ
    if "RANK" in env:
        return int(env["RANK"]) == 0
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return int(env["SLURM_PROCID"]) == 0
    node = int(env.get("NODE_RANK", env.get("GROUP_RANK", "0")) or 0)
    local = int(env.get("LOCAL_RANK", "0") or 0)
    return node == 0 and local == 0


def rank_zero_print(*args: Any) -> None:
    """``print`` on global rank 0 (stdout, flushed)."""
    if is_global_rank_zero():
        print(*args, flush=True)


@dataclass
class StagePlan:
    """What one stage does in this invocation.

    Attributes:
        action: ``"skip"`` (done, or not requested), ``"fresh"`` or ``"resume"``.
        ckpt_path: the checkpoint to resume from (``"resume"`` only).
    """

    action: str
    ckpt_path: str | None = None


class RunFolder:
    """Paths and state files of one run.

    Args:
        path: the run folder (created by :meth:`create` on rank 0).
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)

    # ------------------------------------------------------------------ paths
    def stage_dir(self, stage: int) -> str:
        """Checkpoint folder of a stage."""
        return os.path.join(self.path, "checkpoints", f"stage{stage}")

    def last_ckpt(self, stage: int) -> str:
        """``checkpoints/stage{s}/last.ckpt``."""
        return os.path.join(self.stage_dir(stage), "last.ckpt")

    @property
    def figures(self) -> str:
        """Figures folder."""
        return os.path.join(self.path, "figures")

    @property
    def state_path(self) -> str:
        """``run_state.json``."""
        return os.path.join(self.path, STATE_FILE)

    @property
    def summary_path(self) -> str:
        """``summary.json``."""
        return os.path.join(self.path, SUMMARY_FILE)

    @property
    def config_path(self) -> str:
        """``config.yaml``."""
        return os.path.join(self.path, CONFIG_FILE)

    # ------------------------------------------------------------------ state
    def read_state(self) -> dict[str, Any]:
        """The run state, or an empty dict for a new run."""
        if not os.path.isfile(self.state_path):
            return {}
        try:
            with open(self.state_path) as fh:
                state = json.load(fh)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            state = err
        if not isinstance(state, dict):
            detail = state if isinstance(state, Exception) else f"a {type(state).__name__}"
            raise UserError(
                f"{self.state_path} is corrupt ({detail}); it holds the run's W&B id and the "
                "status of each stage. Restore it, or delete it: the run then resumes from its "
                "checkpoints under a new W&B run id"
            )
        return state

    def write_json(self, path: str, data: dict[str, Any]) -> None:
        """Atomic JSON write (temporary file + rename), so a killed run never leaves half a file."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        name = os.path.basename(path)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=f".{name}.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.replace(tmp, path)

    def write_state(self, state: dict[str, Any]) -> None:
        """Write ``run_state.json`` (rank 0 only)."""
        self.write_json(self.state_path, state)

    def check_writable(self) -> None:
        """Raise :class:`UserError` unless the run folder (or, for a new run, its nearest
        existing parent) and its existing subfolders accept new files."""
        folders = [self.path, self.figures, self.stage_dir(1), self.stage_dir(2)]
        probe = self.path
        while not os.path.exists(probe):
            parent = os.path.dirname(probe)
            if parent == probe:
                break
            probe = parent
        for folder in [probe, *[f for f in folders[1:] if os.path.isdir(f)]]:
            if not os.path.isdir(folder):
                raise UserError(f"run folder {self.path!r}: {folder!r} is not a folder")
            try:
                fd, tmp = tempfile.mkstemp(dir=folder, prefix=".write-check.", suffix=".tmp")
                os.close(fd)
                os.remove(tmp)
            except OSError as err:
                raise UserError(
                    f"run folder {self.path!r} cannot be written ({folder!r}: {err.strerror}); "
                    "choose a writable --run.root or --run.dir"
                ) from err

    def remove_stale_temporary_files(self) -> list[str]:
        """Delete the temporary files a killed writer left behind (rank 0, before training):
        ``checkpoints/stage*/.last.ckpt.*.tmp`` and ``.run_state.json.*.tmp``-style JSON
        temporaries. Returns the removed paths."""
        patterns = [
            os.path.join(self.path, "checkpoints", "stage*", ".*.ckpt.*.tmp"),
            os.path.join(self.path, ".*.json.*.tmp"),
            os.path.join(self.path, ".write-check.*.tmp"),
        ]
        removed = []
        for pattern in patterns:
            for path in glob.glob(pattern):
                with contextlib.suppress(OSError):
                    os.remove(path)
                    removed.append(path)
        return sorted(removed)

    def create(self) -> None:
        """Create the folder tree (rank 0)."""
        for sub in ("checkpoints/stage1", "checkpoints/stage2", "figures"):
            os.makedirs(os.path.join(self.path, sub), exist_ok=True)

    def resume_note(self, stage: int) -> str:
        """What the same command does for ``stage`` after a failure: resume from its checkpoint
        (named with its 1-based epoch) or start the stage again."""
        import torch

        path = self.last_ckpt(stage)
        if not os.path.isfile(path):
            return (
                f"No stage-{stage} checkpoint was written before the failure: the same "
                f"command starts stage {stage} from its beginning."
            )
        epoch = int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
        return (
            f"The stage-{stage} checkpoint {path} (end of epoch {epoch + 1}) was written before "
            "the failure: the same command resumes from it."
        )

    @staticmethod
    def new_wandb_id() -> str:
        """A fresh W&B run id (8 lowercase hex characters, W&B's own style)."""
        return secrets.token_hex(4)

    def plan(
        self, state: dict[str, Any], stages: list[int], stage1_checkpoint: str | None
    ) -> dict[int, StagePlan]:
        """Decide, from files only, what each stage does in this invocation.

        A stage marked done is skipped; a stage with a ``last.ckpt`` resumes from it; otherwise
        it starts fresh. Stage 1 is skipped when ``stage1_checkpoint`` is given.
        """
        plans: dict[int, StagePlan] = {}
        for stage in (1, 2):
            status = state.get(f"stage{stage}", {}).get("status")
            external = stage == 1 and stage1_checkpoint is not None
            if stage not in stages or status in (STAGE_DONE, STAGE_EXTERNAL) or external:
                plans[stage] = StagePlan("skip")
            elif os.path.isfile(self.last_ckpt(stage)):
                plans[stage] = StagePlan("resume", self.last_ckpt(stage))
            else:
                plans[stage] = StagePlan("fresh")
        return plans
