"""Both training stages into one run folder, as one function: :func:`train`.

Stages are two ``fit`` calls on two new Trainers. Stage 2 starts from the stage-1 weights
(``TwoStageVAE.stage2_from_stage1``), never through ``ckpt_path``. Running the same settings
again on an existing run folder resumes where it stopped (``ckpt_path`` = the stage's
``last.ckpt``; a finished stage is skipped) and continues the same W&B run. Under DDP every rank
runs its own :func:`train`; see :mod:`pipeline.run_folder` for the folder layout.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import torch
from pytorch_lightning.callbacks import Callback

from callbacks import RunInfo
from datamodules import DatasetUnavailableError, VAEDataModule
from lightning_modules import TwoStageVAE
from lightning_modules.two_stage_vae import RESUME_HPARAMS
from pipeline.errors import NonFiniteLossError, UserError
from pipeline.loggers import finish_logger, resolve_wandb_mode
from pipeline.resume_checks import check_continuation, check_stage2_architecture
from pipeline.run_config import logger_hyperparameters, settings_record, write_config
from pipeline.run_folder import RunFolder, is_global_rank_zero, rank_zero_print
from pipeline.run_summary import build_summary
from pipeline.settings import RunSettings, StageSettings, TrainerSettings, check_settings
from pipeline.stage_callbacks import CallbackFactory, geometry_callbacks, stage_callbacks
from pipeline.trainer_factory import (
    callback_seconds,
    check_trainer_settings,
    fit_stage,
    float_metrics,
    make_trainer,
)
from pipeline.up_front_checks import (
    check_stage1_checkpoint_path,
    check_validation_data,
    warn_about_devices,
    warn_about_learning_rates,
)
from pipeline.wandb_resume import checkpoint_global_step, start_logger

__all__ = ["CallbackFactory", "train"]

#: the default of the geometry callback settings: on, with the callback's own defaults
_ON: Mapping[str, Any] = MappingProxyType({})


def train(
    model: Mapping[str, Any] | None = None,
    data: VAEDataModule | Mapping[str, Any] | None = None,
    trainer: TrainerSettings | None = None,
    run: RunSettings | None = None,
    *,
    geodesic_stats: Mapping[str, Any] | None = _ON,
    curvature_plots: Mapping[str, Any] | None = _ON,
    callbacks: CallbackFactory | None = None,
    started_at: float | None = None,
) -> dict[str, Any]:
    """Train both stages of the two-stage VAE into one run folder; return the summary.

    Args:
        model: ``TwoStageVAE`` arguments. ``data_shape`` and ``output_activation`` default to
            the datamodule's. Stage 2 takes the ones in ``TwoStageVAE.STAGE2_HPARAMS`` from
            here and the rest from the stage-1 weights.
        data: a :class:`~datamodules.VAEDataModule` or its arguments (default: the embedded
            MNIST digits). Its ``shuffle_stream`` is set to ``(run.seed, stage)`` per stage.
        trainer: both stages' Trainer settings (default: ``TrainerSettings()``).
        run: run folder, seed, logger, progress, stages (default: ``RunSettings()``).
        geodesic_stats: ``GeodesicDistanceStats`` arguments, or None to turn it off.
        curvature_plots: ``CurvaturePlots`` arguments (``output_dir`` is the run's figures
            folder), or None to turn it off.
        callbacks: a function ``stage -> callbacks`` for extra Lightning callbacks.
        started_at: ``time.perf_counter()`` at the start of the job (default: now); the summary's
            ``wall_seconds`` count from there.

    Returns:
        The summary (also written to ``<run folder>/summary.json``): per stage its status,
        checkpoint, epochs, final metrics and fit seconds; ``wall_seconds``,
        ``callback_seconds``, the W&B run id and mode.

    Raises:
        UserError: a bad setting, missing data or an unusable checkpoint, before any training.
        CheckpointError: a corrupt or foreign checkpoint.
        NonFiniteLossError: the loss became NaN or infinite (the last checkpoint stays valid).
    """
    job = _Job(
        model=dict(model or {}),
        data=data if data is not None else {},
        trainer=trainer or TrainerSettings(),
        run=run or RunSettings(),
        geodesic_stats=None if geodesic_stats is None else dict(geodesic_stats),
        curvature_plots=None if curvature_plots is None else dict(curvature_plots),
        callbacks=callbacks,
        started_at=time.perf_counter() if started_at is None else started_at,
    )
    return job.execute()


def _loaded_metrics(callbacks: list[Callback]) -> dict[str, float]:
    """The metrics stored in the resumed checkpoint (a fit that had nothing left to train)."""
    for cb in callbacks:
        if isinstance(cb, RunInfo) and cb.loaded:
            return dict(cb.loaded.get("metrics", {}))
    return {}


class _Job:
    """One call of :func:`train` on one process (every rank runs its own)."""

    def __init__(
        self,
        *,
        model: dict[str, Any],
        data: VAEDataModule | Mapping[str, Any],
        trainer: TrainerSettings,
        run: RunSettings,
        geodesic_stats: dict[str, Any] | None,
        curvature_plots: dict[str, Any] | None,
        callbacks: CallbackFactory | None,
        started_at: float,
    ) -> None:
        self.model_cfg = model
        self.data = data
        self.trainer_cfg = trainer
        self.run = run
        self.geodesic_stats = geodesic_stats
        self.curvature_plots = curvature_plots
        self.callback_factory = callbacks
        self.t_start = started_at
        self.rank_zero = is_global_rank_zero()
        self.folder = RunFolder(run.dir or os.path.join(run.root, run.name))
        self.logger: Any = None
        self.state: dict[str, Any] = {}

    # ------------------------------------------------------------------ settings and data
    def _data_settings(self) -> dict[str, Any]:
        if isinstance(self.data, VAEDataModule):
            return dict(self.data.hparams)
        return dict(self.data)

    def _settings_record(self) -> dict[str, Any]:
        """Every setting of this call, as plain values (``config.yaml``, logger hparams)."""
        return settings_record(
            model=self.model_cfg,
            data=self._data_settings(),
            trainer=self.trainer_cfg,
            run=self.run,
            geodesic_stats=self.geodesic_stats,
            curvature_plots=self.curvature_plots,
        )

    def _make_datamodule(self) -> VAEDataModule:
        if isinstance(self.data, VAEDataModule):
            return self.data
        try:
            return VAEDataModule(**self.data)
        except (ValueError, TypeError) as err:
            raise UserError(f"invalid data settings: {err}") from err

    def _model_kwargs(self, dm: VAEDataModule) -> dict[str, Any]:
        kwargs = dict(self.model_cfg)
        if kwargs.get("data_shape") is None:
            kwargs["data_shape"] = list(dm.data_shape)
        if kwargs.get("output_activation") is None:
            kwargs["output_activation"] = dm.output_activation
        return kwargs

    def _prepare_data(self, dm: VAEDataModule) -> int:
        """Make the data available and split it (before any Trainer); return n_train."""
        try:
            if int(os.environ.get("LOCAL_RANK", "0") or 0) == 0:
                dm.prepare_data()
            dm.setup("fit")
        except DatasetUnavailableError as err:
            raise UserError(str(err)) from err
        except ValueError as err:
            raise UserError(f"invalid data settings: {err}") from err
        assert dm.train_dataset is not None
        return len(dm.train_dataset)

    # ------------------------------------------------------------------ main flow
    def execute(self) -> dict[str, Any]:
        """Plan, then run the planned stages; returns the summary."""
        import pytorch_lightning as pl

        check_settings(self.trainer_cfg, self.run)
        check_stage1_checkpoint_path(self.run.stage1_checkpoint)
        warn_about_devices(self.trainer_cfg, check_trainer_settings(self.trainer_cfg))
        self._geometry_callbacks()  # bad callback settings fail here, before any training
        if self.run.torch_threads is not None:
            torch.set_num_threads(self.run.torch_threads)
        pl.seed_everything(self.run.seed, workers=True, verbose=False)
        dm = self._make_datamodule()
        try:
            model1 = TwoStageVAE(**self._model_kwargs(dm), stage=1)
        except (ValueError, TypeError) as err:
            raise UserError(f"invalid model settings: {err}") from err
        warn_about_learning_rates(model1)

        self.folder.check_writable()
        state = self.folder.read_state()  # every rank reads before any Trainer: same plan
        plans = self.folder.plan(state, self.run.stages, self.run.stage1_checkpoint)
        check_continuation(
            self.folder, plans, self.run, model=dict(model1.hparams), data=dict(dm.hparams)
        )
        wandb_id = state.get("wandb_id") or RunFolder.new_wandb_id()
        wandb_mode = resolve_wandb_mode(self.run.wandb_mode)
        stage1_ckpt = self.run.stage1_checkpoint or self.folder.last_ckpt(1)
        needs_stage1 = plans[1].action == "skip" and plans[2].action != "skip"
        if needs_stage1 and not os.path.isfile(stage1_ckpt):
            raise UserError(
                f"stage 2 needs a stage-1 checkpoint and {stage1_ckpt!r} does not exist; "
                "run stage 1 first or pass --run.stage1_checkpoint PATH"
            )

        n_train = self._prepare_data(dm)
        try:
            model1.validate_data(n_train, dm.data_shape)
        except ValueError as err:
            raise UserError(f"invalid model settings for this data: {err}") from err
        check_validation_data(
            dm,
            self.trainer_cfg.limit_val_batches,
            [g for g in ("geodesic_stats", "curvature_plots") if getattr(self, g) is not None],
        )
        # stage-2 model from an external checkpoint: check it before anything else runs
        model2 = None
        if plans[2].action == "fresh" and plans[1].action == "skip":
            model2 = self._stage2_model(stage1_ckpt, dm, n_train)

        state.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
        state["wandb_id"] = wandb_id
        state.setdefault("invocations", []).append(
            {"started": time.strftime("%Y-%m-%dT%H:%M:%S"), "wall_seconds": 0.0}
        )
        if self.run.stage1_checkpoint is not None and plans[1].action == "skip":
            state.setdefault("stage1", {}).update(
                {"status": "external", "checkpoint": os.path.abspath(self.run.stage1_checkpoint)}
            )
        self.state = state
        if self.rank_zero:
            self.folder.create()
            for path in self.folder.remove_stale_temporary_files():
                rank_zero_print(f"note: removed {path}, left by a run killed while writing")
            write_config(self.folder, self._settings_record(), len(state["invocations"]))
            self.folder.write_state(state)
        if all(p.action == "skip" for p in plans.values()):
            rank_zero_print(
                f"run {self.folder.path}: every requested stage is already done "
                "(use another --run.name to train again)"
            )

        try:
            if any(p.action != "skip" for p in plans.values()):
                self.logger = start_logger(
                    self.run,
                    self.folder.path,
                    plans,
                    stage1_ckpt,
                    wandb_id,
                    wandb_mode,
                    logger_hyperparameters(self._settings_record()),
                )
            if plans[1].action != "skip":
                self._fit(1, model1, dm, plans[1].ckpt_path)
            if plans[2].action != "skip":
                if plans[2].action == "resume":
                    # what may change on resume comes from the settings, the rest from the file
                    model2 = TwoStageVAE.load_from_checkpoint(
                        plans[2].ckpt_path,
                        map_location="cpu",
                        **{k: model1.hparams[k] for k in RESUME_HPARAMS},
                    )
                elif model2 is None:
                    model2 = self._stage2_model(stage1_ckpt, dm, n_train)
                self._fit(2, model2, dm, plans[2].ckpt_path)
        finally:
            finish_logger(self.logger, self.rank_zero)
        return self._write_summary(wandb_id, wandb_mode)

    def _stage2_model(self, stage1_ckpt: str, dm: VAEDataModule, n_train: int) -> TwoStageVAE:
        overrides = TwoStageVAE.stage2_overrides(self.model_cfg)
        model2 = TwoStageVAE.stage2_from_stage1(stage1_ckpt, **overrides)
        check_stage2_architecture(
            dict(model2.hparams),
            self._model_kwargs(dm),
            run_dir=self.folder.path,
            external_stage1=self.run.stage1_checkpoint is not None,
        )
        try:
            model2.validate_data(n_train, dm.data_shape)
        except ValueError as err:
            raise UserError(f"invalid stage-2 settings for this data: {err}") from err
        return model2

    def _geometry_callbacks(self) -> list[Callback]:
        return geometry_callbacks(self.geodesic_stats, self.curvature_plots, self.folder.figures)

    def _record_wall_seconds(self) -> None:
        """After each checkpoint write: this invocation's time so far into ``run_state.json``,
        so that ``wall_seconds`` counts a killed attempt up to its last checkpoint."""
        self.state["invocations"][-1]["wall_seconds"] = time.perf_counter() - self.t_start
        if self.rank_zero:
            self.folder.write_state(self.state)

    # ------------------------------------------------------------------ one stage
    def _fit(
        self, stage: int, model: TwoStageVAE, dm: VAEDataModule, ckpt_path: str | None
    ) -> None:
        st: StageSettings = getattr(self.trainer_cfg, f"stage{stage}")
        callbacks, has_progress = stage_callbacks(
            stage,
            self.run,
            wandb_id=self.state["wandb_id"],
            figures_dir=self.folder.figures,
            checkpoint_dir=self.folder.stage_dir(stage),
            geometry=self._geometry_callbacks(),
            history=getattr(self.logger, "history", None),
            extra=self.callback_factory,
            on_checkpoint_write=self._record_wall_seconds,
        )
        trainer = make_trainer(
            self.trainer_cfg,
            st,
            callbacks=callbacks,
            logger=self.logger,
            default_root_dir=self.folder.path,
            progress_bar=has_progress,
            model_summary=has_progress and stage == 1,
        )
        dm.shuffle_stream = (self.run.seed, stage)
        if stage == 2 and hasattr(self.logger, "history"):  # the run's step axis continues
            stage1_ckpt = self.run.stage1_checkpoint or self.folder.last_ckpt(1)
            self.logger.history.step_offset = checkpoint_global_step(stage1_ckpt)
        entry = self.state.setdefault(f"stage{stage}", {})
        entry.update({"status": "running", "checkpoint": self.folder.last_ckpt(stage)})
        if self.rank_zero:
            self.folder.write_state(self.state)
        verb = "resuming" if ckpt_path else "starting"
        rank_zero_print(f"[stage {stage}] {verb} ({st.max_epochs} epochs) -> {self.folder.path}")
        t0 = time.perf_counter()
        try:
            fit_stage(trainer, model, dm, ckpt_path)
        except NonFiniteLossError as err:
            raise NonFiniteLossError(f"{err} {self.folder.resume_note(stage)}") from err
        if trainer.interrupted:
            raise UserError(f"stage {stage} was interrupted; run the same command to resume")
        entry.update(
            {
                "status": "done",
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "metrics": float_metrics(trainer.callback_metrics) or _loaded_metrics(callbacks),
                "fit_seconds": entry.get("fit_seconds", 0.0) + time.perf_counter() - t0,
                "callback_seconds": entry.get("callback_seconds", 0.0)
                + callback_seconds(callbacks),
            }
        )
        self.state["invocations"][-1]["wall_seconds"] = time.perf_counter() - self.t_start
        if self.rank_zero:
            self.folder.write_state(self.state)
        elbo = entry["metrics"].get("val/elbo", entry["metrics"].get("train/elbo"))
        rank_zero_print(
            f"[stage {stage}] done: {trainer.current_epoch} epochs, "
            f"val/elbo={elbo if elbo is None else round(elbo, 3)}"
        )

    def _write_summary(self, wandb_id: str, wandb_mode: str) -> dict[str, Any]:
        state = self.state
        state["invocations"][-1]["wall_seconds"] = time.perf_counter() - self.t_start
        summary = build_summary(state, self.folder, self.run, wandb_id, wandb_mode)
        if self.rank_zero:
            self.folder.write_state(state)
            self.folder.write_json(self.folder.summary_path, summary)
            print(f"summary: {self.folder.summary_path}", flush=True)
            if self.run.logger == "wandb" and wandb_mode == "offline":
                pattern = os.path.join(self.folder.path, "wandb", "offline-run-*")
                print(
                    f"W&B ran offline (no credentials found). Upload later with:\n"
                    f"  wandb sync {pattern}",
                    flush=True,
                )
        return summary
