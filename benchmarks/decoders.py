"""The geodesic benchmark's decoder family: trained VAEs (loaded, or trained through the CLI) and
synthetic decoders, each with its data-like latent points."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from benchmarks.common import REPO_ROOT, log
from geometry import toy_models

__all__ = [
    "DEFAULT_FAMILY",
    "SYNTHETIC_DECODERS",
    "VAE_DECODERS",
    "Decoder",
    "build_decoder",
    "encode_codes",
    "load_model",
    "parse_decoders",
    "train_model",
    "vae_checkpoint",
]

VAE_DECODERS = {  # name -> (architecture, latent dim)
    "mlp_d2": ("mlp", 2),
    "mlp_d8": ("mlp", 8),
    "mlp_d16": ("mlp", 16),
    "mlp_d32": ("mlp", 32),
    "mlp_d64": ("mlp", 64),
    "conv_d8": ("conv", 8),
    "conv_d16": ("conv", 16),
    "conv_d32": ("conv", 32),
    "conv_d2": ("conv", 2),
}
SYNTHETIC_DECODERS = ("wall_soft", "wall_medium", "wall_steep", "tanh_d8")
DEFAULT_FAMILY = (*[n for n in VAE_DECODERS if n != "conv_d2"], *SYNTHETIC_DECODERS)


@dataclass
class Decoder:
    """One decoder of the family and its data-like points.

    Attributes:
        name: family name (``mlp_d8``, ``wall_steep``...).
        kind: ``"vae"`` or ``"synthetic"``.
        embed: ``(n, d) -> (n, D')`` callable.
        points: ``(P, d)`` data-like latent points (pairs and graph are drawn from these).
        checkpoint: the stage-2 checkpoint of a VAE (``None`` for synthetic decoders).
        description: one line for the report.
        info: free-form extra facts about the decoder.
    """

    name: str
    kind: str
    embed: Callable[[Tensor], Tensor]
    points: Tensor
    checkpoint: str | None = None
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)


def train_model(
    run_dir: str, architecture: str, latent_dim: int, epochs: tuple[int, int] | None
) -> str:
    """Train both stages through the project's CLI (``scripts/train.py``, a subprocess).

    Args:
        run_dir: the run folder to train into.
        architecture: ``model.architecture`` (``"mlp"`` or ``"conv"``).
        latent_dim: ``model.latent_dim``.
        epochs: ``(stage 1, stage 2)`` epochs, or ``None`` for the CLI's defaults.

    Returns:
        The stage-2 checkpoint path.
    """
    cmd = [
        sys.executable, os.path.join(REPO_ROOT, "scripts", "train.py"),
        "--run.dir", run_dir, "--run.logger", "none", "--run.progress_bar", "none",
        "--run.reconstructions", "0", "--trainer.accelerator", "cpu",
        "--model.architecture", architecture, "--model.latent_dim", str(latent_dim),
        "--geodesic_stats.enabled", "false", "--curvature_plots.enabled", "false",
    ]  # fmt: skip
    if epochs is not None:
        cmd += ["--trainer.stage1.max_epochs", str(epochs[0])]
        cmd += ["--trainer.stage2.max_epochs", str(epochs[1])]
    log("training a missing model: " + " ".join(cmd[1:]))
    subprocess.run(cmd, check=True, cwd=REPO_ROOT)
    return os.path.join(run_dir, "checkpoints", "stage2", "last.ckpt")


def load_model(checkpoint: str) -> Any:
    """A frozen stage-2 ``TwoStageVAE`` on the CPU.

    Args:
        checkpoint: a stage-2 checkpoint path.

    Raises:
        SystemExit: the checkpoint is a stage-1 one.
    """
    from lightning_modules import TwoStageVAE

    model = TwoStageVAE.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    if model.stage != 2:
        raise SystemExit(f"{checkpoint} is a stage-{model.stage} checkpoint; pass a stage-2 one")
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def encode_codes(model: Any) -> Tensor:
    """Encoder means ``(n, d)`` of the training split of the default datamodule.

    Args:
        model: a ``TwoStageVAE`` trained on the default datamodule's data shape.

    Raises:
        SystemExit: the model's data shape is not the datamodule's.
    """
    from datamodules.vae_datamodule import VAEDataModule

    dm = VAEDataModule()
    dm.prepare_data()
    dm.setup("fit")
    if tuple(dm.data_shape) != tuple(model.data_shape):
        raise SystemExit(f"model data_shape {model.data_shape} != datamodule's {dm.data_shape}")
    with torch.no_grad():
        return model.encode_dataset(dm.full_train_dataloader()).float()


def vae_checkpoint(name: str, args: argparse.Namespace, scratch: str) -> str:
    """The checkpoint of VAE ``name``: from ``--models-dir`` or trained now.

    Args:
        name: a key of :data:`VAE_DECODERS`.
        args: the benchmark's options (``models_dir``, ``train_dir``, ``train_epochs``).
        scratch: the run's scratch folder (models go to ``<scratch>/models`` without
            ``--train-dir``).
    """
    if args.models_dir:
        path = os.path.join(args.models_dir, name, "checkpoints", "stage2", "last.ckpt")
        if os.path.isfile(path):
            return path
        log(f"{path} not found: training {name}")
    architecture, latent_dim = VAE_DECODERS[name]
    root = args.train_dir or os.path.join(scratch, "models")
    return train_model(os.path.join(root, name), architecture, latent_dim, args.train_epochs)


def build_decoder(name: str, args: argparse.Namespace, scratch: str) -> Decoder:
    """Construct (or load, or train) decoder ``name`` with its data-like points.

    Args:
        name: a checked decoder name (:func:`parse_decoders`).
        args: the benchmark's options (``seed`` and those of :func:`vae_checkpoint`).
        scratch: the run's scratch folder.
    """
    if name in VAE_DECODERS:
        checkpoint = vae_checkpoint(name, args, scratch)
        model = load_model(checkpoint)
        architecture, latent_dim = VAE_DECODERS[name]
        return Decoder(
            name, "vae", model.embed, encode_codes(model), checkpoint,
            f"trained VAE, {architecture}, d = {latent_dim}",
        )  # fmt: skip
    if name.startswith("wall_"):
        steepness = name.removeprefix("wall_")
        dec = toy_models.walled_decoder(steepness, seed=args.seed)
        return Decoder(
            name, "synthetic", dec.embed, dec.sample_data(4096, seed=args.seed + 1),
            description=f"2-D RBF walls, bandwidth {dec.bandwidth:g}, 20 centers, D' = 200",
        )  # fmt: skip
    if name == "tanh_d8":
        mlp = toy_models.ToyMLPDecoder(latent_dim=8, seed=args.seed)
        return Decoder(
            name, "synthetic", mlp.embed, mlp.sample_data(4096, seed=args.seed + 1),
            description="d = 8 tanh MLP mean, no variance wall, D' = 200",
        )  # fmt: skip
    raise AssertionError(name)  # names are checked in parse_decoders


def parse_decoders(text: str) -> list[str]:
    """Comma-separated names and groups -> decoder names (in family order, no repeats).

    Args:
        text: e.g. ``"synthetic,mlp_d8"``; the groups are ``all``, ``vae`` and ``synthetic``.

    Raises:
        SystemExit: an unknown name.
    """
    groups = {
        "all": list(DEFAULT_FAMILY),
        "vae": [n for n in DEFAULT_FAMILY if n in VAE_DECODERS],
        "synthetic": list(SYNTHETIC_DECODERS),
    }
    known = [*VAE_DECODERS, *SYNTHETIC_DECODERS]
    out: list[str] = []
    for item in (s.strip() for s in text.split(",")):
        names = groups.get(item, [item])
        for n in names:
            if n not in known:
                raise SystemExit(
                    f"--decoders: unknown decoder {n!r}; expected names from {known} or the "
                    f"groups {sorted(groups)}"
                )
            if n not in out:
                out.append(n)
    return out
