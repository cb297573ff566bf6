"""What a resume may change: the settings a resumed stage takes from the command line and the
ones that must equal those its checkpoint was trained with (README "Resume").

A checkpoint of this project holds three records of what was trained: the model's
hyper-parameters (``hyper_parameters``), the datamodule's (Lightning's
``LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY``) and the run seed
(``callbacks["EpochSeeder"]``). :func:`resume_conflicts` compares each with this invocation's
settings and lists the fixed ones that differ, both values named.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pytorch_lightning import LightningDataModule

from lightning_modules import CheckpointError, read_checkpoint
from lightning_modules.two_stage_vae import ARCHITECTURE_HPARAMS, RESUME_HPARAMS
from pipeline.errors import UserError
from pipeline.run_folder import RunFolder, StagePlan, rank_zero_print
from pipeline.settings import RunSettings

__all__ = [
    "DATA_RESUME_SETTINGS",
    "check_continuation",
    "check_resume",
    "check_stage2_architecture",
    "RESUME_HPARAMS",
    "list_or",
    "resume_conflicts",
    "resume_error_text",
]

#: data settings a resume may change: where the files are and how they are loaded, not which
#: items are trained on, in which batches, or how their pixels are scaled
DATA_RESUME_SETTINGS = ("root", "download", "num_workers")


def list_or(value: Any) -> Any:
    """Tuples -> lists, so hyper-parameters compare equal to config values."""
    return list(value) if isinstance(value, (tuple, list)) else value


def _differ(
    saved: Mapping[str, Any], current: Mapping[str, Any], keys: set[str], group: str
) -> list[str]:
    return [
        f"{group}.{k}: checkpoint {list_or(saved[k])!r}, now {list_or(current[k])!r}"
        for k in sorted(keys)
        if k in current and list_or(saved[k]) != list_or(current[k])
    ]


def resume_conflicts(
    ckpt: Mapping[str, Any],
    *,
    model: Mapping[str, Any],
    data: Mapping[str, Any],
    seed: int,
    external_stage1: bool = False,
    model_checked: bool = True,
) -> list[str]:
    """The fixed settings in which this invocation differs from what ``ckpt`` was trained with.

    Args:
        ckpt: the checkpoint dictionary (``lightning_modules.read_checkpoint``).
        model: this invocation's ``TwoStageVAE`` hyper-parameters.
        data: this invocation's ``VAEDataModule`` hyper-parameters.
        seed: this invocation's ``run.seed``.
        external_stage1: stage 2 of a run started from ``run.stage1_checkpoint`` (its
            architecture comes from that checkpoint, not from the settings).
        model_checked: compare the model's settings (False: data and seed only).

    Returns:
        One ``"<group>.<key>: checkpoint <a>, now <b>"`` entry per differing setting; a record
        missing from the checkpoint (written by an older version) is not compared.
    """
    out: list[str] = []
    if model_checked:
        saved = dict(ckpt.get("hyper_parameters", {}))
        fixed = set(saved) - set(RESUME_HPARAMS) - {"stage"}
        if external_stage1:
            fixed -= set(ARCHITECTURE_HPARAMS)
        out += _differ(saved, model, fixed, "model")
    saved_data = dict(ckpt.get(LightningDataModule.CHECKPOINT_HYPER_PARAMS_KEY) or {})
    out += _differ(saved_data, data, set(saved_data) - set(DATA_RESUME_SETTINGS), "data")
    seeder = ckpt.get("callbacks", {}).get("EpochSeeder", {})
    if isinstance(seeder, Mapping) and "seed" in seeder:
        out += _differ({"seed": seeder["seed"]}, {"seed": seed}, {"seed"}, "run")
    return out


def resume_error_text(what: str, conflicts: list[str]) -> str:
    """The message of a resume refused for ``conflicts`` (:func:`resume_conflicts`)."""
    return (
        f"{what}: "
        + "; ".join(conflicts)
        + f". A resume may change model.{', model.'.join(RESUME_HPARAMS)}, "
        f"data.{', data.'.join(DATA_RESUME_SETTINGS)}, the trainer settings (epochs, "
        "logging), the run's logging and callbacks, not the model's structure, the data it "
        "trains on (dataset, digits, split, seed, scale, batch size) or run.seed; use the "
        "checkpoint's values, or another --run.name for a new run"
    )


def check_resume(
    stage: int,
    ckpt_path: str,
    *,
    run_dir: str,
    model: Mapping[str, Any],
    data: Mapping[str, Any],
    seed: int,
    external_stage1: bool,
    model_checked: bool = True,
) -> None:
    """Raise :class:`UserError` unless the checkpoint a stage continues from loads and was
    trained with the same settings, except those a resume may change.

    Args:
        stage: the stage that continues (1 or 2).
        ckpt_path: its checkpoint.
        run_dir: the run folder (for the message).
        model, data, seed: this invocation's settings (see :func:`resume_conflicts`).
        external_stage1: the run's stage 2 starts from ``run.stage1_checkpoint``.
        model_checked: False for stage 2 starting from this run's stage-1 checkpoint (the
            data and the seed are compared; the model's settings when stage 2 is built).
    """
    try:
        ckpt = read_checkpoint(ckpt_path)
    except CheckpointError as err:
        raise UserError(
            f"cannot resume stage {stage}: {err}. To start stage {stage} again, delete {ckpt_path}"
        ) from err
    conflicts = resume_conflicts(
        ckpt,
        model=model,
        data=data,
        seed=seed,
        external_stage1=stage == 2 and external_stage1,
        model_checked=model_checked,
    )
    if conflicts:
        what = f"cannot resume stage {stage} of run {run_dir}"
        if not model_checked:
            what = f"cannot start stage 2 of run {run_dir} from its stage-1 checkpoint {ckpt_path}"
        raise UserError(resume_error_text(what, conflicts))


def check_stage2_architecture(
    stage2: Mapping[str, Any],
    expected: Mapping[str, Any],
    *,
    run_dir: str,
    external_stage1: bool,
) -> None:
    """Compare the architecture of a stage-2 model built from a stage-1 checkpoint
    (``stage2``: its hyper-parameters) with the settings (``expected``).

    From this run's own stage 1 a difference raises :class:`UserError` naming both values; from
    ``run.stage1_checkpoint`` the checkpoint's values are used, with a note.
    """
    differ = [
        k
        for k in ARCHITECTURE_HPARAMS
        if k in stage2 and k in expected and list_or(stage2[k]) != list_or(expected[k])
    ]
    if differ and not external_stage1:
        raise UserError(
            f"stage 2 of run {run_dir} starts from this run's stage-1 checkpoint, "
            "whose architecture differs from the settings: "
            + "; ".join(
                f"model.{k}: checkpoint {list_or(stage2[k])!r}, now {list_or(expected[k])!r}"
                for k in differ
            )
            + ". Architecture settings may not change on resume; use the checkpoint's "
            "values, or another --run.name for a new run"
        )
    if differ:
        rank_zero_print(
            "note: architecture settings come from the stage-1 checkpoint; these differ from "
            f"the config and are taken from the checkpoint: {differ}"
        )


def check_continuation(
    folder: RunFolder,
    plans: Mapping[int, StagePlan],
    run: RunSettings,
    *,
    model: Mapping[str, Any],
    data: Mapping[str, Any],
) -> None:
    """Before any work: every stage that resumes has a whole checkpoint trained with the same
    fixed settings, and a stage 2 that starts from this run's finished stage 1 the same data
    and seed (:func:`check_resume`)."""
    external = run.stage1_checkpoint is not None
    for stage in (1, 2):
        path = plans[stage].ckpt_path
        if plans[stage].action == "resume" and path is not None:
            check_resume(
                stage,
                path,
                run_dir=folder.path,
                model=model,
                data=data,
                seed=run.seed,
                external_stage1=external,
            )
    own_stage1 = folder.last_ckpt(1)
    if (
        plans[2].action == "fresh"
        and plans[1].action == "skip"
        and not external
        and os.path.isfile(own_stage1)
    ):
        check_resume(
            2,
            own_stage1,
            run_dir=folder.path,
            model=model,
            data=data,
            seed=run.seed,
            external_stage1=False,
            model_checked=False,
        )
