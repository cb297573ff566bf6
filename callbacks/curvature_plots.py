"""Curvature pictures of the latent space during training: PNG files and W&B images.

Every ``every_n_epochs`` epochs and at the end of each stage, on rank 0, with the validation codes
(encoder means of a seeded subset of ``trainer.datamodule.val_dataset``):

``<prefix>/log_magnification``
    heat map of ``log MF(z) = log sqrt(det M(z))`` over a ``grid_resolution``^2 grid covering the
    codes (plus ``margin``), the codes overlaid and colored by label;
``<prefix>/geodesics``
    the same map with geodesics (solid) against the straight lines between the same end points
    (dashed): the geodesics of the :class:`~callbacks.GeodesicResultStore` handed in as
    ``geodesics`` when it holds this epoch's result (a ``GeodesicDistanceStats`` that ran before
    this callback in the same epoch), else ``num_geodesics`` new ones between pairs of codes;
``<prefix>/generator_variance``
    heat map of ``log sum_j sigma_j(z)``, the generator's total standard deviation: the RBF
    precision network grows it away from the data, a plain MLP variance head need not;
``<prefix>/interpolations``
    decoded means along the most bent geodesic (smallest geodesic / straight-line length ratio)
    and along the straight line between the same end points.

Latent dimension ``d > 2``: every map lives on the plane through the codes' mean spanned by their
two principal directions (PC1, PC2); the magnification factor there is that of the metric restricted
to the plane, ``sqrt(det(B^T M B))`` with ``B`` the ``(d, 2)`` orthonormal basis; codes and
curves are projected orthogonally onto it. Figure titles say so. ``d = 1``: 1-D plots of the log
magnification factor and of the variance along the latent axis (codes as a rug); geodesics are the
straight segments in 1-D, so that figure is skipped and the interpolation shows one row.

Files: ``<output_dir>/<name>_stage<s>_epoch<eeee>.png`` (epochs 1-based, as on the console)
with ``output_dir`` defaulting to
``<trainer.default_root_dir>/figures``. Nothing here is a collective: non-zero ranks return at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

import geometry
from callbacks.emit import figure_dir, log_images, save_figure, warn_once
from callbacks.figures import (
    geodesics_figure,
    interpolation_figure,
    latent_map_figure,
    profile_1d_figure,
)
from callbacks.geodesic_results import GeodesicResultStore
from callbacks.model_context import geometry_mode, model_stage
from callbacks.pair_statistics import solver_keywords
from callbacks.scheduling import EpochScheduledCallback, check_ints
from callbacks.validation_data import (
    choose_indices,
    draw_pairs,
    encode_means,
    fetch_items,
    validation_dataset,
)

__all__ = ["CurvaturePlots", "latent_plane"]


def latent_plane(codes: Tensor) -> tuple[Tensor, Tensor, str]:
    """Origin ``(d,)`` and orthonormal basis ``(2, d)`` of the plane the maps are drawn on.

    ``d == 2``: the latent plane itself (origin 0, identity basis). ``d > 2``: the plane through the
    codes' mean spanned by their two principal directions (SVD of the centerd codes).

    Returns:
        origin, basis and a short description for figure titles.
    """
    d = codes.shape[1]
    if d == 2:
        return (
            codes.new_zeros(2),
            torch.eye(2, dtype=codes.dtype, device=codes.device),
            "latent plane",
        )
    origin = codes.mean(0)
    _, _, vh = torch.linalg.svd(codes - origin, full_matrices=False)
    basis = vh[:2]
    if basis.shape[0] < 2:  # fewer than 2 codes: any orthonormal pair
        basis = torch.eye(d, dtype=codes.dtype, device=codes.device)[:2]
    return origin, basis, f"plane through the code mean spanned by PC1, PC2 (d = {d})"


class CurvaturePlots(EpochScheduledCallback):
    """Heat maps of the latent geometry and geodesic interpolations (see the module docstring).

    Runs on rank 0 in eval mode under ``torch.enable_grad()`` on the unwrapped LightningModule
    (needs ``encode``, ``decode``, ``embed``, ``generator_std``, ``data_shape``); restores each
    submodule's mode, leaves no ``.grad`` on parameters and forks every global RNG.

    Args:
        every_n_epochs: draw every this many epochs (0 = only at the end of each stage).
        grid_resolution: points per axis of the latent grid (maps cost ``grid_resolution**2``
            metric evaluations).
        max_codes: validation codes overlaid on the maps (a seeded subset).
        margin: the grid extends the codes' bounding box by this fraction on every side.
        num_geodesics: geodesics to compute when ``geodesics`` holds no result of this epoch.
        max_drawn_geodesics: at most this many geodesics are drawn.
        num_images: decoded images per interpolation row.
        num_nodes: nodes per geodesic computed here.
        max_iterations: solver iteration cap for geodesics computed here.
        tolerance: solver convergence tolerance for geodesics computed here.
        seed: seed of the code subset and of the pairs.
        output_dir: folder of the PNG files (default ``<trainer.default_root_dir>/figures``).
        save_png: write PNG files.
        log_wandb: log the figures as W&B images when the trainer has a ``WandbLogger``.
        dpi: PNG resolution.
        run_at_end: also draw on the last epoch of each stage.
        key_prefix: prefix of the W&B image keys.
        encode_batch_size: batch size for encoding the validation points.
        geodesics: the store a ``GeodesicDistanceStats`` publishes into (``results=``): its
            geodesics of the same epoch are drawn instead of new ones. Put that callback before
            this one in the Trainer's list, so it runs first in each epoch.
    """

    def __init__(
        self,
        every_n_epochs: int = 30,
        grid_resolution: int = 48,
        max_codes: int = 1000,
        margin: float = 0.1,
        num_geodesics: int = 8,
        max_drawn_geodesics: int = 16,
        num_images: int = 10,
        num_nodes: int = 12,
        max_iterations: int = 30,
        tolerance: float = 1e-3,
        seed: int = 0,
        output_dir: str | None = None,
        save_png: bool = True,
        log_wandb: bool = True,
        dpi: int = 100,
        run_at_end: bool = True,
        key_prefix: str = "curvature",
        encode_batch_size: int = 256,
        geodesics: GeodesicResultStore | None = None,
    ) -> None:
        super().__init__(every_n_epochs=every_n_epochs, run_at_end=run_at_end)
        check_ints(
            grid_resolution=(grid_resolution, 2),
            max_codes=(max_codes, 2),
            num_geodesics=(num_geodesics, 1),
            max_drawn_geodesics=(max_drawn_geodesics, 1),
            num_images=(num_images, 2),
            num_nodes=(num_nodes, 2),
            max_iterations=(max_iterations, 1),
            dpi=(dpi, 10),
            encode_batch_size=(encode_batch_size, 1),
        )
        if not margin >= 0:
            raise ValueError(f"margin={margin!r} must be >= 0")
        if not (save_png or log_wandb):
            raise ValueError("save_png=False and log_wandb=False: the figures would go nowhere")
        self.grid_resolution = grid_resolution
        self.max_codes = max_codes
        self.margin = float(margin)
        self.num_geodesics = num_geodesics
        self.max_drawn_geodesics = max_drawn_geodesics
        self.num_images = num_images
        self.num_nodes = num_nodes
        self.max_iterations = max_iterations
        if not tolerance > 0:
            raise ValueError(f"tolerance={tolerance!r} must be > 0")
        self.tolerance = float(tolerance)
        self.seed = int(seed)
        self.output_dir = output_dir
        self.save_png = bool(save_png)
        self.log_wandb = bool(log_wandb)
        self.dpi = dpi
        self.key_prefix = key_prefix.rstrip("/")
        self.encode_batch_size = int(encode_batch_size)
        self.geodesics = geodesics
        #: where the latest geodesics figure's curves came from (rank 0)
        self.last_geodesic_source: str | None = None
        #: W&B key -> PNG path of the latest figures (rank 0).
        self.last_paths: dict[str, str] = {}

    @property
    def state_key(self) -> str:
        # the format of Lightning's own state keys (class name + settings), public API only
        return f"{type(self).__qualname__}{ {'key_prefix': self.key_prefix, 'seed': self.seed}!r}"

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            validation_dataset(trainer, type(self).__name__)  # fail early with a clear message

    # ------------------------------------------------------------------ work
    def run_epoch(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: int, can_log: bool
    ) -> None:
        if not trainer.is_global_zero:
            return
        dataset = validation_dataset(trainer, type(self).__name__)
        idx = choose_indices(len(dataset), self.max_codes, self.seed)
        x, labels = fetch_items(dataset, idx)
        class_names = getattr(getattr(trainer, "datamodule", None), "class_names", None)
        stage = model_stage(pl_module)
        tag = f"stage {stage}, epoch {epoch + 1}"  # 1-based, as on the console
        out_dir = figure_dir(trainer, self.output_dir) if self.save_png else _scratch_dir(trainer)
        paths: dict[str, str] = {}

        def emit(name: str, fig: Any) -> None:
            path = os.path.join(out_dir, f"{name}_stage{stage}_epoch{epoch + 1:04d}.png")
            paths[f"{self.key_prefix}/{name}"] = save_figure(fig, path, self.dpi)

        with geometry_mode(pl_module):
            codes = encode_means(pl_module, x, self.encode_batch_size)
            d = codes.shape[1]
            if d == 1:
                self._draw_1d(pl_module, codes, labels, class_names, tag, emit)
            else:
                self._draw_2d(trainer, pl_module, codes, labels, class_names, tag, epoch, emit)
        self.last_paths = paths
        if self.log_wandb:
            log_images(trainer, paths)
        if not self.save_png:
            shutil.rmtree(out_dir, ignore_errors=True)

    # ------------------------------------------------------------------ d >= 2
    def _grid(self, coords: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        lo, hi = coords.min(0).values, coords.max(0).values
        span = (hi - lo).clamp(min=1e-3)
        lo, hi = lo - self.margin * span, hi + self.margin * span
        G = self.grid_resolution
        a = torch.linspace(float(lo[0]), float(hi[0]), G, dtype=coords.dtype, device=coords.device)
        b = torch.linspace(float(lo[1]), float(hi[1]), G, dtype=coords.dtype, device=coords.device)
        A, B = torch.meshgrid(a, b, indexing="xy")  # (G, G): rows follow b, columns follow a
        return a, b, torch.stack([A.flatten(), B.flatten()], dim=1)

    def _geodesics(
        self, trainer: pl.Trainer, pl_module: Any, codes: Tensor, labels: Tensor | None, epoch: int
    ) -> tuple[Tensor, Tensor, str]:
        """Geodesic curves ``(k, N, d)``, their geodesic/line length ratios ``(k,)``, a source."""
        store, stage = self.geodesics, model_stage(pl_module)
        shared = None if store is None else store.get(stage, epoch)
        if shared is not None:
            ratio = torch.as_tensor(shared.stats.ratios()["line_ratio"])
            return shared.stats.curves.to(codes), ratio, "GeodesicDistanceStats pairs"
        pairs = draw_pairs(codes.shape[0], self.num_geodesics, labels, 0.0, self.seed + 1)
        p = torch.tensor(pairs, device=codes.device)
        res = geometry.connecting_geodesics(
            pl_module.embed,
            codes[p[:, 0]],
            codes[p[:, 1]],
            init="line",
            **solver_keywords(self.num_nodes, self.max_iterations, self.tolerance, "lm"),
        )
        ratio = (res.lengths / res.initial_lengths.clamp(min=1e-12)).detach().cpu()
        return res.curves.detach(), ratio, "pairs of validation codes"

    def _draw_2d(
        self,
        trainer: pl.Trainer,
        pl_module: Any,
        codes: Tensor,
        labels: Tensor | None,
        class_names: Any,
        tag: str,
        epoch: int,
        emit: Any,
    ) -> None:
        d = codes.shape[1]
        origin, basis, plane = latent_plane(codes)
        coords = (codes - origin) @ basis.T  # (n, 2)
        a, b, grid = self._grid(coords)
        G = self.grid_resolution

        def lift(u: Tensor) -> Tensor:
            return origin + u @ basis

        def embed_plane(u: Tensor) -> Tensor:
            return pl_module.embed(lift(u))

        log_mf = geometry.log_magnification_factor(embed_plane, grid).detach().reshape(G, G)
        with torch.no_grad():
            sigma = torch.cat(
                [pl_module.generator_std(lift(g)).flatten(1).sum(1) for g in grid.split(4096)]
            )
        log_var = sigma.clamp(min=1e-30).log().reshape(G, G)
        extent = (float(a[0]), float(a[-1]), float(b[0]), float(b[-1]))
        axes = ("z1", "z2") if d == 2 else ("PC1", "PC2")
        suffix = "" if d == 2 else f"\n{plane}"
        mf_label = "log magnification factor  log sqrt(det M(z))"
        if d > 2:
            mf_label = "log sqrt(det(B^T M B)) on the plane"

        # 1. log magnification factor with the codes
        emit(
            "log_magnification",
            latent_map_figure(
                log_mf,
                extent,
                coords,
                title=f"log magnification factor - {tag}{suffix}",
                colorbar_label=mf_label,
                labels=labels,
                class_names=class_names,
                axis_labels=axes,
            ),
        )
        # 2. geodesics against straight lines
        curves, ratios, source = self._geodesics(trainer, pl_module, codes, labels, epoch)
        self.last_geodesic_source = source
        k = min(curves.shape[0], self.max_drawn_geodesics)
        emit(
            "geodesics",
            geodesics_figure(
                log_mf,
                extent,
                coords,
                (curves[:k] - origin) @ basis.T,  # (k, N, 2)
                title=f"geodesics vs straight lines ({k} {source}) - {tag}{suffix}",
                colorbar_label=mf_label,
                axis_labels=axes,
            ),
        )
        # 3. generator variance
        emit(
            "generator_variance",
            latent_map_figure(
                log_var,
                extent,
                coords,
                title=f"generator variance map - {tag}{suffix}",
                colorbar_label="log sum_j sigma_j(z)  (generator std)",
                axis_labels=axes,
                cmap="magma",
                codes_as_dots="cyan",
            ),
        )
        # 4. decoded images along the most bent geodesic and its straight line
        finite = torch.where(torch.isfinite(ratios), ratios, torch.full_like(ratios, float("inf")))
        best = int(finite.argmin())
        curve = curves[best]
        line = torch.stack([curve[0], curve[-1]])
        paths = [
            ("geodesic", _along(curve, self.num_images)),
            ("straight line", _along(line, self.num_images)),
        ]
        r = float(ratios[best])
        title = f"interpolation (geodesic/line length {r:.3f}) - {tag}"
        emit("interpolations", interpolation_figure(_decoded(pl_module, paths), title))

    # ------------------------------------------------------------------ d == 1
    def _draw_1d(
        self,
        pl_module: Any,
        codes: Tensor,
        labels: Tensor | None,
        class_names: Any,
        tag: str,
        emit: Any,
    ) -> None:
        lo, hi = codes.min(), codes.max()
        span = (hi - lo).clamp(min=1e-3)
        z = torch.linspace(
            float(lo - self.margin * span),
            float(hi + self.margin * span),
            max(256, 4 * self.grid_resolution),
            dtype=codes.dtype,
            device=codes.device,
        )[:, None]
        log_mf = geometry.log_magnification_factor(pl_module.embed, z).detach()
        with torch.no_grad():
            log_var = pl_module.generator_std(z).flatten(1).sum(1).clamp(min=1e-30).log()
        for name, values, ylabel, title in (
            (
                "log_magnification",
                log_mf,
                "log magnification factor  log sqrt(M(z))",
                "log magnification factor (d = 1)",
            ),
            ("generator_variance", log_var, "log sum_j sigma_j(z)", "generator variance (d = 1)"),
        ):
            fig = profile_1d_figure(
                z[:, 0],
                values,
                codes[:, 0],
                title=f"{title} - {tag}",
                ylabel=ylabel,
                labels=labels,
                class_names=class_names,
            )
            emit(name, fig)
        warn_once(
            "CurvaturePlots: latent_dim = 1, geodesics are the straight segments; "
            "the geodesics figure is skipped"
        )
        line = torch.stack([codes.min(0).values, codes.max(0).values])
        paths = [("straight line = geodesic (d = 1)", _along(line, self.num_images))]
        title = f"interpolation between the extreme codes - {tag}"
        emit("interpolations", interpolation_figure(_decoded(pl_module, paths), title))


# ---------------------------------------------------------------------------- helpers
def _decoded(pl_module: Any, paths: list[tuple[str, Tensor]]) -> list[tuple[str, Tensor]]:
    """The decoded means along each path ``(n, d)``: ``(label, (n, *data_shape))`` on the CPU."""
    with torch.no_grad():
        return [(label, pl_module.decode(z)[0].detach().cpu().float()) for label, z in paths]


def _scratch_dir(trainer: pl.Trainer) -> str:
    return tempfile.mkdtemp(prefix="curvature_plots_")


def _along(curve: Tensor, n: int) -> Tensor:
    """``n`` points at equal node spacing along the polyline ``curve (N, d)``: for a solver
    geodesic, whose nodes move at constant Riemannian speed, equal Riemannian steps."""
    steps = curve.new_ones(1, curve.shape[0] - 1)  # arc length = node index
    return geometry.resample_curves(curve[None], n, weights=steps)[0]
