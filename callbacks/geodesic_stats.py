"""Geodesic versus straight-line distance statistics on validation latent codes, during training.

For a fixed, seeded set of P pairs of validation points (their encoder means ``z_a``, ``z_b``) the
callback computes, every ``every_n_epochs`` epochs and at the end of each stage:

* the geodesic length ``L_geo`` (``geometry.connecting_geodesics``, initialized on the straight
  line, in the model's expected metric: the Euclidean pull-back of ``pl_module.embed``);
* ``L_line``: the Riemannian length of the straight latent line between the same end points,
  measured on the same number of nodes (the solver's ``initial_lengths``: the line with its nodes
  at equal Riemannian arc length). The solver never returns a curve longer than its initial curve,
  so ``line_ratio = L_geo / L_line <= 1``; the further below 1, the more curved the geometry;
* ``euclid_ratio = L_geo / ||z_b - z_a||`` (how the metric scales latent distances) and
  ``data_ratio = L_geo / ||mu(z_b) - mu(z_a)||`` (geodesic length against the Euclidean distance
  of the decoded means of the end points, in data space).

Logged scalars (prefix ``geo/`` by default; every one identical on all DDP ranks):

``line_ratio_{mean,median,q10,q90}``, ``euclid_ratio_{...}``, ``data_ratio_{...}``,
``spearman_geodesic_euclid`` (rank correlation of ``L_geo`` and ``||z_b - z_a||``),
``converged_fraction``, ``mean_geodesic_length``, ``mean_line_length``, ``seconds`` (slowest
rank), ``num_pairs``; with labels also ``within_class_*`` / ``between_class_*`` (``pairs``,
``line_ratio_mean``, ``euclid_ratio_mean``, ``data_ratio_mean``) and ``class_stretch`` = mean
between-class ``euclid_ratio`` / mean within-class ``euclid_ratio`` (> 1 when the geometry
stretches the distances between classes: the paper's clustering result in miniature).
With a W&B logger also the table ``geo/pairs`` (end points, labels, lengths, ratios) and the
histogram ``geo/line_ratio_hist``. Ratios whose denominator is (numerically) zero are left out of
the statistics.

DDP: every rank encodes the same points; the pairs are split into equal shards, each rank solves
its shard and the per-pair results are gathered with ``pl_module.all_gather`` (a collective that
every rank reaches; never inside ``if trainer.is_global_zero``), so every rank logs identical
values. W&B media are written by rank 0.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

import geometry
from callbacks.emit import log_scalars, wandb_loggers, warn_once
from callbacks.geodesic_results import GeodesicResult, GeodesicResultStore
from callbacks.model_context import geometry_mode, model_stage
from callbacks.pair_statistics import (
    EPOCH_END_SOLVER,
    pair_statistics,
    solver_keywords,
    summarize_pairs,
)
from callbacks.scheduling import EpochScheduledCallback, check_ints
from callbacks.validation_data import (
    dataset_labels,
    draw_pairs,
    encode_means,
    fetch_items,
    validation_dataset,
)

__all__ = ["GeodesicDistanceStats"]


#: the solver settings that are arguments of their own (one route per setting)
_EXPLICIT = ("num_nodes", "max_iterations", "tolerance", "optimizer")


def _explicit_solver_names() -> list[str]:
    """geometry's names of the settings in :data:`_EXPLICIT`, in that order."""
    return [k for k in solver_keywords(0, 0, 0.0, "") if k not in EPOCH_END_SOLVER]


def _geodesic_option_names() -> set[str]:
    """Keyword options of ``geometry.connecting_geodesics`` that ``geodesic_options`` may set:
    not the end points, not what the callback sets itself, not what has an argument here."""
    import inspect

    params = inspect.signature(geometry.connecting_geodesics).parameters
    fixed = {"embed", "z0", "z1", "init", "init_curves", "graph_points", "graph_k"}
    explicit = set(_explicit_solver_names())
    return {name for name, p in params.items() if p.kind == p.KEYWORD_ONLY} - fixed - explicit


class GeodesicDistanceStats(EpochScheduledCallback):
    """Log geodesic-vs-straight-line distance statistics of validation latent codes.

    See the module docstring for what is computed and logged. Runs in eval mode under
    ``torch.enable_grad()`` on the unwrapped LightningModule (which must provide ``encode(x) ->
    (mu, logvar)``, ``decode(z) -> (mu_x, sigma_x)`` and ``embed(z)``); restores each submodule's
    mode, leaves no ``.grad`` on parameters, and forks every global RNG, so training proceeds
    exactly as without the callback. The pair indices (into ``trainer.datamodule.val_dataset``)
    are drawn once from ``seed`` and kept in the checkpoint state.

    Args:
        every_n_epochs: run every this many epochs (0 = only at the end of each stage).
        num_pairs: P, number of validation pairs.
        within_class_fraction: share of the pairs drawn within one class when labels exist (the
            rest is drawn between classes); uniform pairs without labels.
        seed: seed of the pair selection.
        num_nodes: nodes per geodesic (including end points).
        max_iterations: solver iteration cap per geodesic.
        tolerance: solver convergence tolerance (relative energy decrease).
        optimizer: ``"lm"`` (Levenberg-Marquardt, fast) or ``"adam"``.
        geodesic_options: further keyword arguments for ``geometry.connecting_geodesics`` (its
            own names), other than the four settings above.
        results: a :class:`~callbacks.GeodesicResultStore` that receives each epoch's
            :class:`~callbacks.GeodesicResult` (e.g. shared with a ``CurvaturePlots``).
        run_at_end: also run on the last epoch of each stage.
        log_table: log the W&B table of pairs.
        log_histogram: log the W&B histogram of ``line_ratio``.
        key_prefix: prefix of every logged key.
        encode_batch_size: batch size for encoding the validation points.
    """

    def __init__(
        self,
        every_n_epochs: int = 40,
        num_pairs: int = 64,
        within_class_fraction: float = 0.5,
        seed: int = 0,
        num_nodes: int = 12,
        max_iterations: int = 30,
        tolerance: float = 1e-3,
        optimizer: str = "lm",
        geodesic_options: dict[str, Any] | None = None,
        results: GeodesicResultStore | None = None,
        run_at_end: bool = True,
        log_table: bool = True,
        log_histogram: bool = True,
        key_prefix: str = "geo",
        encode_batch_size: int = 256,
    ) -> None:
        super().__init__(every_n_epochs=every_n_epochs, run_at_end=run_at_end)
        check_ints(
            num_pairs=(num_pairs, 1),
            num_nodes=(num_nodes, 2),
            max_iterations=(max_iterations, 1),
            encode_batch_size=(encode_batch_size, 1),
        )
        if not 0.0 <= within_class_fraction <= 1.0:
            raise ValueError(f"within_class_fraction={within_class_fraction!r} must be in [0, 1]")
        if not tolerance > 0:
            raise ValueError(f"tolerance={tolerance!r} must be > 0")
        self.num_pairs = num_pairs
        self.within_class_fraction = float(within_class_fraction)
        self.seed = int(seed)
        self.num_nodes = num_nodes
        self.max_iterations = max_iterations
        self.tolerance = float(tolerance)
        if optimizer not in ("lm", "adam"):
            raise ValueError(f"optimizer={optimizer!r} must be 'lm' or 'adam'")
        options = dict(geodesic_options or {})
        accepted = _geodesic_option_names()
        explicit = _explicit_solver_names()
        twice = sorted(set(options) & set(explicit))
        if twice:
            own = {v: k for k, v in zip(_EXPLICIT, explicit)}
            raise ValueError(
                f"geodesic_options sets {twice}: use the callback's own arguments "
                f"{[own[k] for k in twice]} instead (one setting, one route)"
            )
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise ValueError(
                f"geodesic_options has unknown keys {unknown}; accepted: {sorted(accepted)}"
            )
        self.optimizer = optimizer
        self.geodesic_options = options
        self.results = results
        self.log_table = bool(log_table)
        self.log_histogram = bool(log_histogram)
        self.key_prefix = key_prefix.rstrip("/")
        self.encode_batch_size = int(encode_batch_size)
        #: ``[[i, j], ...]`` indices into the validation dataset (checkpointed).
        self.pair_indices: list[list[int]] | None = None
        #: The latest result (every rank); also published to ``results`` when given.
        self.last_result: GeodesicResult | None = None

    @property
    def state_key(self) -> str:
        # the format of Lightning's own state keys (class name + settings), public API only
        settings = {"num_pairs": self.num_pairs, "seed": self.seed, "key_prefix": self.key_prefix}
        return f"{type(self).__qualname__}{settings!r}"

    def solver_options(self) -> dict[str, Any]:
        """Keyword arguments for ``geometry.connecting_geodesics``."""
        return solver_keywords(
            self.num_nodes,
            self.max_iterations,
            self.tolerance,
            self.optimizer,
            **self.geodesic_options,
        )

    # ------------------------------------------------------------------ lightning hooks
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            validation_dataset(trainer, type(self).__name__)  # fail early with a clear message

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["pair_indices"] = (
            None if self.pair_indices is None else [list(p) for p in self.pair_indices]
        )
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        pairs = state_dict.get("pair_indices")
        self.pair_indices = None if pairs is None else [[int(i), int(j)] for i, j in pairs]

    # ------------------------------------------------------------------ work
    def _pairs(self, dataset: Any) -> list[list[int]]:
        n = len(dataset)
        if self.pair_indices is not None:
            if all(0 <= i < n and 0 <= j < n for i, j in self.pair_indices):
                return self.pair_indices
            warn_once(
                f"{type(self).__name__}: the checkpointed pair indices do not fit the "
                f"validation set of size {n}; drawing new pairs"
            )
        labels = dataset_labels(dataset)
        self.pair_indices = draw_pairs(
            n, self.num_pairs, labels, self.within_class_fraction, self.seed
        )
        return self.pair_indices

    def run_epoch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int, can_log: bool
    ) -> None:
        dataset = validation_dataset(trainer, type(self).__name__)
        pairs = self._pairs(dataset)
        flat = [i for p in pairs for i in p]
        x, labels = fetch_items(dataset, flat)
        world, rank = max(1, trainer.world_size), trainer.global_rank
        P = len(pairs)
        chunk = math.ceil(P / world)
        lo, hi = min(rank * chunk, P), min((rank + 1) * chunk, P)
        mine = list(range(lo, hi)) + [0] * (chunk - (hi - lo))  # pad: equal shapes for all_gather
        start = time.perf_counter()
        with geometry_mode(pl_module):
            codes = encode_means(pl_module, x, self.encode_batch_size)  # (2P, d)
            z0, z1 = codes[0::2], codes[1::2]
            idx = torch.tensor(mine, device=codes.device)
            part = pair_statistics(
                pl_module.embed,
                lambda z: pl_module.decode(z)[0],
                z0[idx],
                z1[idx],
                **self.solver_options(),
            )
        seconds = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
        if world > 1:  # every rank reaches these collectives (same schedule everywhere)
            part = part.map(lambda t: _gather(pl_module, t, world * chunk, codes.device))
            seconds = _gather(pl_module, seconds, world, codes.device)
        stats = part.map(lambda t: t[:P])
        lab0 = lab1 = None
        if labels is not None:
            lab0, lab1 = labels[0::2], labels[1::2]
        metrics = summarize_pairs(stats, lab0, lab1)
        metrics["seconds"] = float(seconds.max())  # the slowest rank
        metrics = {f"{self.key_prefix}/{k}": v for k, v in metrics.items()}
        log_scalars(trainer, pl_module, metrics, can_log)
        self.last_result = GeodesicResult(
            stage=model_stage(pl_module),
            epoch=epoch,
            pairs=[(int(i), int(j)) for i, j in pairs],
            stats=stats,
            z0=z0.detach().cpu(),
            z1=z1.detach().cpu(),
            labels0=lab0,
            labels1=lab1,
            metrics=metrics,
        )
        if self.results is not None:
            self.results.publish(self.last_result)
        if trainer.is_global_zero:  # media: rank 0 only, no collectives in here
            self._log_media(trainer, self.last_result)

    def _log_media(self, trainer: pl.Trainer, res: GeodesicResult) -> None:
        loggers = wandb_loggers(trainer)
        if not loggers or not (self.log_table or self.log_histogram):
            return
        import wandb

        stats = res.stats
        ratios = stats.ratios()
        media: dict[str, Any] = {}
        if self.log_table:
            columns = [
                "pair",
                "index_a",
                "index_b",
                "label_a",
                "label_b",
                "same_class",
                "z_a",
                "z_b",
                "geodesic_length",
                "line_length",
                "euclidean_distance",
                "data_distance",
                "line_ratio",
                "euclid_ratio",
                "data_ratio",
                "converged",
                "iterations",
            ]
            rows = []
            for k, (i, j) in enumerate(res.pairs):
                la = None if res.labels0 is None else int(res.labels0[k])
                lb = None if res.labels1 is None else int(res.labels1[k])
                rows.append(
                    [
                        k,
                        i,
                        j,
                        la,
                        lb,
                        None if la is None else la == lb,
                        _fmt(res.z0[k]),
                        _fmt(res.z1[k]),
                        float(stats.geodesic[k]),
                        float(stats.line[k]),
                        float(stats.euclidean[k]),
                        float(stats.data[k]),
                        _num(ratios["line_ratio"][k]),
                        _num(ratios["euclid_ratio"][k]),
                        _num(ratios["data_ratio"][k]),
                        bool(stats.converged[k]),
                        int(stats.iterations[k]),
                    ]
                )
            media[f"{self.key_prefix}/pairs"] = wandb.Table(columns=columns, data=rows)
        if self.log_histogram:
            finite = ratios["line_ratio"][np.isfinite(ratios["line_ratio"])]
            if finite.size:
                media[f"{self.key_prefix}/line_ratio_hist"] = wandb.Histogram(finite)
        if media:
            for logger in loggers:
                logger.log_metrics(media, step=trainer.global_step)


def _fmt(z: Tensor) -> str:
    return "[" + ", ".join(f"{float(v):.4g}" for v in z) + "]"


def _num(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _gather(pl_module: pl.LightningModule, t: Tensor, rows: int, device: torch.device) -> Tensor:
    """``t (chunk, ...)`` of every rank, concatenated in rank order ``(rows, ...)``, on the CPU.

    Booleans travel as uint8 (not every backend gathers bool tensors)."""
    is_bool = t.dtype == torch.bool
    sent = t.to(device=device, dtype=torch.uint8 if is_bool else t.dtype)
    out = pl_module.all_gather(sent).reshape(rows, *t.shape[1:]).cpu()
    return out.bool() if is_bool else out
