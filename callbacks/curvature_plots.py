"""Curvature pictures of the latent space during training: PNG files and W&B images.

Every ``every_n_epochs`` epochs and at the end of each stage, on rank 0, with the validation codes
(encoder means of a seeded subset of ``trainer.datamodule.val_dataset``):

``<prefix>/log_magnification``
    heat map of ``log MF(z) = log sqrt(det M(z))`` over a ``grid_resolution``^2 grid covering the
    codes (plus ``margin``), the codes overlaid and coloured by label;
``<prefix>/geodesics``
    the same map with geodesics (solid) against the straight lines between the same end points
    (dashed): the latest geodesics of a :class:`~callbacks.GeodesicDistanceStats` in the same
    Trainer if it ran this epoch, else ``num_geodesics`` new ones between-class pairs of codes;
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

Files: ``<output_dir>/<name>_stage<s>_epoch<eeee>.png`` with ``output_dir`` defaulting to
``<trainer.default_root_dir>/figures``. Nothing here is a collective: non-zero ranks return at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor

from callbacks._common import (
    EpochScheduledCallback,
    check_ints,
    choose_indices,
    draw_pairs,
    encode_means,
    fetch_items,
    figure_dir,
    geometry_api,
    geometry_mode,
    log_images,
    model_stage,
    new_figure,
    save_figure,
    validation_dataset,
    warn_once,
)
from callbacks._drawing import class_colours, heat_map, mosaic, scatter_codes

__all__ = ["CurvaturePlots", "latent_plane"]


def latent_plane(codes: Tensor) -> tuple[Tensor, Tensor, str]:
    """Origin ``(d,)`` and orthonormal basis ``(2, d)`` of the plane the maps are drawn on.

    ``d == 2``: the latent plane itself (origin 0, identity basis). ``d > 2``: the plane through the
    codes' mean spanned by their two principal directions (SVD of the centred codes).

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
        num_geodesics: geodesics to compute when no ``GeodesicDistanceStats`` ran this epoch.
        max_drawn_geodesics: at most this many geodesics are drawn.
        num_images: decoded images per interpolation row.
        n_nodes: nodes per geodesic computed here.
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
        n_nodes: int = 12,
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
    ) -> None:
        super().__init__(every_n_epochs=every_n_epochs, run_at_end=run_at_end)
        check_ints(
            grid_resolution=(grid_resolution, 2),
            max_codes=(max_codes, 2),
            num_geodesics=(num_geodesics, 1),
            max_drawn_geodesics=(max_drawn_geodesics, 1),
            num_images=(num_images, 2),
            n_nodes=(n_nodes, 2),
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
        self.n_nodes = n_nodes
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
        #: W&B key -> PNG path of the latest figures (rank 0).
        self.last_paths: dict[str, str] = {}

    @property
    def state_key(self) -> str:
        return self._generate_state_key(key_prefix=self.key_prefix, seed=self.seed)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        validation_dataset(trainer, type(self).__name__)  # fail early with a clear message
        # Draw after a GeodesicDistanceStats of the same Trainer so its geodesics can be reused.
        from callbacks.geodesic_stats import GeodesicDistanceStats

        cbs = list(trainer.callbacks)
        stats_pos = [i for i, cb in enumerate(cbs) if isinstance(cb, GeodesicDistanceStats)]
        if stats_pos and self in cbs and cbs.index(self) < stats_pos[0]:
            cbs.remove(self)
            cbs.insert(stats_pos[0], self)  # right after the stats callback (it moved up by one)
            # a new list: Lightning is iterating over the old one while it calls setup()
            trainer.callbacks = cbs

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
        tag = f"stage {stage}, epoch {epoch}"
        out_dir = figure_dir(trainer, self.output_dir) if self.save_png else _scratch_dir(trainer)
        paths: dict[str, str] = {}

        def emit(name: str, fig: Any) -> None:
            path = os.path.join(out_dir, f"{name}_stage{stage}_epoch{epoch:04d}.png")
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
        from callbacks.geodesic_stats import GeodesicDistanceStats

        for cb in trainer.callbacks:
            res = (
                getattr(cb, "last_result", None) if isinstance(cb, GeodesicDistanceStats) else None
            )
            if res is not None and res["epoch"] == epoch and res["stage"] == model_stage(pl_module):
                stats = res["stats"]
                ratio = torch.as_tensor(stats.ratios()["line_ratio"])
                return stats.curves.to(codes), ratio, "GeodesicDistanceStats pairs"
        pairs = draw_pairs(codes.shape[0], self.num_geodesics, labels, 0.0, self.seed + 1)
        p = torch.tensor(pairs, device=codes.device)
        res = geometry_api().connecting_geodesics(
            pl_module.embed,
            codes[p[:, 0]],
            codes[p[:, 1]],
            n_nodes=self.n_nodes,
            max_iterations=self.max_iterations,
            tolerance=self.tolerance,
            init="line",
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
        geo = geometry_api()
        d = codes.shape[1]
        origin, basis, plane = latent_plane(codes)
        coords = (codes - origin) @ basis.T  # (n, 2)
        a, b, grid = self._grid(coords)
        G = self.grid_resolution

        def lift(u: Tensor) -> Tensor:
            return origin + u @ basis

        def embed_plane(u: Tensor) -> Tensor:
            return pl_module.embed(lift(u))

        log_mf = geo.log_magnification_factor(embed_plane, grid).detach().reshape(G, G)
        with torch.no_grad():
            sigma = torch.cat(
                [pl_module.generator_std(lift(g)).flatten(1).sum(1) for g in grid.split(4096)]
            )
        log_var = sigma.clamp(min=1e-30).log().reshape(G, G)
        extent = (float(a[0]), float(a[-1]), float(b[0]), float(b[-1]))
        xlabel, ylabel = ("z1", "z2") if d == 2 else ("PC1", "PC2")
        suffix = "" if d == 2 else f"\n{plane}"
        mf_label = "log magnification factor  log sqrt(det M(z))"
        if d > 2:
            mf_label = "log sqrt(det(B^T M B)) on the plane"
        c_np, lab_np = coords.cpu().numpy(), None if labels is None else labels.cpu().numpy()

        # 1. log magnification factor with the codes
        fig = new_figure(7.5, 6)
        ax = fig.add_subplot()
        heat_map(fig, ax, log_mf, extent, mf_label, "viridis")
        scatter_codes(ax, c_np, lab_np, class_names)
        ax.set(title=f"log magnification factor - {tag}{suffix}", xlabel=xlabel, ylabel=ylabel)
        emit("log_magnification", fig)

        # 2. geodesics against straight lines
        curves, ratios, source = self._geodesics(trainer, pl_module, codes, labels, epoch)
        k = min(curves.shape[0], self.max_drawn_geodesics)
        fig = new_figure(7.5, 6)
        ax = fig.add_subplot()
        heat_map(fig, ax, log_mf, extent, mf_label, "viridis")
        ax.scatter(c_np[:, 0], c_np[:, 1], s=4, c="white", alpha=0.35, linewidths=0)
        proj = ((curves[:k] - origin) @ basis.T).cpu().numpy()  # (k, N, 2)
        colours = class_colours(k)
        for i in range(k):
            ax.plot(proj[i, :, 0], proj[i, :, 1], "-", color=colours[i], lw=2)
            ax.plot(proj[i, [0, -1], 0], proj[i, [0, -1], 1], "--", color=colours[i], lw=1.2)
            ax.plot(proj[i, [0, -1], 0], proj[i, [0, -1], 1], "o", color=colours[i], ms=4)
        ax.plot([], [], "k-", lw=2, label="geodesic")
        ax.plot([], [], "k--", lw=1.2, label="straight line")
        ax.legend(loc="upper right", fontsize=9, framealpha=0.8)
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set(
            title=f"geodesics vs straight lines ({k} {source}) - {tag}{suffix}",
            xlabel=xlabel,
            ylabel=ylabel,
        )
        emit("geodesics", fig)

        # 3. generator variance
        fig = new_figure(7.5, 6)
        ax = fig.add_subplot()
        heat_map(fig, ax, log_var, extent, "log sum_j sigma_j(z)  (generator std)", "magma")
        ax.scatter(c_np[:, 0], c_np[:, 1], s=4, c="cyan", alpha=0.4, linewidths=0)
        ax.set(title=f"generator variance map - {tag}{suffix}", xlabel=xlabel, ylabel=ylabel)
        emit("generator_variance", fig)

        # 4. decoded images along the most bent geodesic and its straight line
        finite = torch.where(torch.isfinite(ratios), ratios, torch.full_like(ratios, float("inf")))
        best = int(finite.argmin())
        curve = curves[best]
        line = torch.stack([curve[0], curve[-1]])
        rows = [
            ("geodesic", _along(curve, self.num_images)),
            ("straight line", _along(line, self.num_images)),
        ]
        r = float(ratios[best])
        self._draw_images(
            pl_module, rows, f"interpolation (geodesic/line length {r:.3f}) - {tag}", emit
        )

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
        geo = geometry_api()
        lo, hi = codes.min(), codes.max()
        span = (hi - lo).clamp(min=1e-3)
        z = torch.linspace(
            float(lo - self.margin * span),
            float(hi + self.margin * span),
            max(256, 4 * self.grid_resolution),
            dtype=codes.dtype,
            device=codes.device,
        )[:, None]
        log_mf = geo.log_magnification_factor(pl_module.embed, z).detach().cpu().numpy()
        with torch.no_grad():
            log_var = (
                pl_module.generator_std(z).flatten(1).sum(1).clamp(min=1e-30).log().cpu().numpy()
            )
        zn, c_np = z[:, 0].cpu().numpy(), codes[:, 0].cpu().numpy()
        lab_np = None if labels is None else labels.cpu().numpy()
        for name, values, ylabel, title in (
            (
                "log_magnification",
                log_mf,
                "log magnification factor  log sqrt(M(z))",
                "log magnification factor (d = 1)",
            ),
            ("generator_variance", log_var, "log sum_j sigma_j(z)", "generator variance (d = 1)"),
        ):
            fig = new_figure(7.5, 4.5)
            ax = fig.add_subplot()
            ax.plot(zn, values, "k-", lw=1.5)
            ymin = float(np.min(values))
            scatter_codes(
                ax,
                np.stack([c_np, np.full_like(c_np, ymin)], 1),
                lab_np,
                class_names,
                marker="|",
                size=60,
            )
            ax.set(title=f"{title} - {tag}", xlabel="z", ylabel=ylabel)
            emit(name, fig)
        warn_once(
            "CurvaturePlots: latent_dim = 1, geodesics are the straight segments; "
            "the geodesics figure is skipped"
        )
        line = torch.stack([codes.min(0).values, codes.max(0).values])
        self._draw_images(
            pl_module,
            [("straight line = geodesic (d = 1)", _along(line, self.num_images))],
            f"interpolation between the extreme codes - {tag}",
            emit,
        )

    # ------------------------------------------------------------------ images
    def _draw_images(
        self, pl_module: Any, rows: list[tuple[str, Tensor]], title: str, emit: Any
    ) -> None:
        with torch.no_grad():
            decoded = [pl_module.decode(z)[0].detach().cpu().float() for _, z in rows]
        shape = tuple(decoded[0].shape[1:])
        n = decoded[0].shape[0]
        image_like = (len(shape) == 3 and shape[0] in (1, 3)) or len(shape) == 2
        if image_like:
            vmin = min(float(t.min()) for t in decoded)
            vmax = max(float(t.max()) for t in decoded)
            H, W = shape[-2:]
            fig = new_figure(1.1 * n + 1.4, 1.25 * len(rows) + 0.7)
            axes = fig.subplots(len(rows), 1, squeeze=False)
            for r, ((label, _), imgs) in enumerate(zip(rows, decoded)):
                ax = axes[r][0]
                strip = mosaic(imgs.reshape(n, -1, H, W), vmin, vmax)  # (H, n*(W+1)-1, C)
                if strip.shape[-1] == 1:
                    ax.imshow(strip[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
                else:
                    ax.imshow(strip, interpolation="nearest")
                ax.set_xticks([(W + 1) * c + (W - 1) / 2 for c in range(n)])
                ax.set_xticklabels([f"{t:.2g}" for t in np.linspace(0, 1, n)], fontsize=8)
                ax.set_yticks([])
                ax.set_ylabel(label, fontsize=10)
            axes[-1][0].set_xlabel("position along the path (curve parameter t)")
            fig.suptitle(title, fontsize=11)
        else:  # vector data: one line per position along the path
            fig = new_figure(7.5, 2.6 * len(rows) + 0.6)
            axes = fig.subplots(len(rows), 1, squeeze=False)
            import matplotlib

            cmap = matplotlib.colormaps["viridis"]
            for r, ((label, _), vecs) in enumerate(zip(rows, decoded)):
                ax = axes[r][0]
                for c in range(n):
                    ax.plot(vecs[c].flatten().numpy(), "-o", ms=2, color=cmap(c / max(1, n - 1)))
                ax.set(ylabel="decoded mean", title=label)
            axes[-1][0].set_xlabel(
                "data dimension (colour: position along the path, start = purple)"
            )
            fig.suptitle(title, fontsize=11)
        emit("interpolations", fig)


# ---------------------------------------------------------------------------- drawing helpers
def _scratch_dir(trainer: pl.Trainer) -> str:
    return tempfile.mkdtemp(prefix="curvature_plots_")


def _along(curve: Tensor, n: int) -> Tensor:
    """``n`` points at equal node spacing along the polyline ``curve (N, d)``: for a solver
    geodesic, whose nodes move at constant Riemannian speed, equal Riemannian steps."""
    steps = curve.new_ones(1, curve.shape[0] - 1)  # arc length = node index
    return geometry_api().resample_curves(curve[None], n, weights=steps)[0]
