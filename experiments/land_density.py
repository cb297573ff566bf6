"""Density maps over the latent plane: the log density of fitted mixtures on a regular grid.

:func:`latent_density_maps` evaluates ``log_prob`` of each mixture (a
:class:`geometry.LANDMixture`, a :class:`geometry.EuclideanGMM` or anything with ``log_prob(z)
-> (n,)``) on a ``grid_size x grid_size`` grid over the codes' bounding box widened by a margin;
:func:`density_map_figure` draws the maps side by side with the codes coloured by label. Both
densities are with respect to the Lebesgue measure of the latent coordinates. For a LAND each
grid point needs its log map to every mean (``grid_size^2 * K`` geodesics), so the grid is
evaluated in row chunks under a progress bar and its time is returned; the log maps'
``converged`` flags of the grid are returned too (from ``last_converged``) and drawn.
Latent dimension 2 only.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

__all__ = ["density_grid", "density_map_figure", "latent_density_maps"]


def density_grid(codes: Tensor, grid_size: int, margin: float) -> tuple[Tensor, Tensor, Tensor]:
    """A regular grid over the bounding box of ``codes (n, 2)`` widened by ``margin``.

    Args:
        codes: ``(n, 2)`` latent codes.
        grid_size: points per axis ``G >= 2``.
        margin: each side of the box is moved out by this fraction of the box's extent.

    Returns:
        ``xs (G,)``, ``ys (G,)`` and ``points (G * G, 2)`` (row ``i * G + j`` is
        ``(xs[j], ys[i])``), in the dtype of ``codes``.
    """
    if codes.ndim != 2 or codes.shape[1] != 2:
        raise ValueError(f"density maps need (n, 2) codes, got shape {tuple(codes.shape)}")
    if isinstance(grid_size, bool) or not isinstance(grid_size, int) or grid_size < 2:
        raise ValueError(f"grid_size must be an integer >= 2, got {grid_size!r}")
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    lo, hi = codes.min(dim=0).values, codes.max(dim=0).values  # (2,)
    pad = margin * (hi - lo)
    lo, hi = lo - pad, hi + pad
    xs = torch.linspace(float(lo[0]), float(hi[0]), grid_size, dtype=codes.dtype)
    ys = torch.linspace(float(lo[1]), float(hi[1]), grid_size, dtype=codes.dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (G, G) each
    return xs, ys, torch.stack([gx.flatten(), gy.flatten()], dim=1)  # (G * G, 2)


@torch.no_grad()
def latent_density_maps(
    mixtures: dict[str, Any],
    codes: Tensor,
    grid_size: int = 24,
    margin: float = 0.1,
    progress: bool = False,
) -> dict[str, Any]:
    """Log densities of fitted mixtures on a grid over the latent plane.

    Args:
        mixtures: name -> fitted mixture with ``log_prob(z (n, 2)) -> (n,)``.
        codes: ``(n, 2)`` codes that set the grid's box (see :func:`density_grid`).
        grid_size: points per axis.
        margin: widening of the box, as a fraction of its extent per side.
        progress: a progress bar over grid rows.

    Returns:
        ``xs (G,)``, ``ys (G,)`` (numpy), ``log_density``: name -> ``(G, G)`` numpy array (row
        ``i`` is ``ys[i]``), ``converged``: name -> ``(G, G)`` bool array (all log maps of the
        grid point converged; ``None`` for a mixture without ``last_converged``), ``seconds``:
        name -> evaluation time.
    """
    xs, ys, points = density_grid(codes, grid_size, margin)
    out: dict[str, Any] = {"xs": xs.numpy(), "ys": ys.numpy()}
    out.update(log_density={}, converged={}, seconds={})
    for name, mix in mixtures.items():
        start = time.perf_counter()
        values, flags = [], []
        for row in tqdm(
            points.split(grid_size), desc=f"{name} density map", disable=not progress
        ):  # (G, 2) per grid row
            values.append(mix.log_prob(row).detach().cpu().double())
            conv = getattr(mix, "last_converged", None)
            flags.append(None if conv is None else conv.detach().cpu().all(dim=1))
        out["log_density"][name] = torch.cat(values).reshape(grid_size, grid_size).numpy()
        out["converged"][name] = (
            None
            if any(f is None for f in flags)
            else torch.cat(flags).reshape(grid_size, grid_size).numpy()  # type: ignore[arg-type]
        )
        out["seconds"][name] = time.perf_counter() - start
    return out


def density_map_figure(
    path: str, maps: dict[str, Any], codes: np.ndarray, labels: np.ndarray, title: str = ""
) -> None:
    """Draw the maps of :func:`latent_density_maps` side by side with the codes by label.

    The colour scale is shared: from the 5 % quantile of all finite grid values to their
    largest. Grid points with an unconverged log map are marked with a small ``x``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(maps["log_density"])
    pooled = np.concatenate([maps["log_density"][n].ravel() for n in names])
    pooled = pooled[np.isfinite(pooled)]
    vmin, vmax = (
        (float(np.quantile(pooled, 0.05)), float(pooled.max())) if pooled.size else (0.0, 1.0)
    )
    xs, ys = maps["xs"], maps["ys"]
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.6), squeeze=False)
    mesh = None
    for ax, name in zip(axes[0], names, strict=True):
        mesh = ax.pcolormesh(
            xs, ys, maps["log_density"][name], shading="nearest", vmin=vmin, vmax=vmax
        )
        conv = maps["converged"].get(name)
        if conv is not None and not conv.all():
            gy, gx = np.meshgrid(ys, xs, indexing="ij")
            ax.plot(gx[~conv], gy[~conv], "x", color="w", ms=3, mew=0.6)
        for cls in np.unique(labels):
            sel = labels == cls
            ax.scatter(codes[sel, 0], codes[sel, 1], s=5, label=str(cls), edgecolors="none")
        ax.set_xlim(xs[0], xs[-1])
        ax.set_ylim(ys[0], ys[-1])
        secs = maps["seconds"][name]
        ax.set_title(f"{name}: log density ({len(xs)}x{len(ys)} grid, {secs:.0f} s)", fontsize=9)
        ax.legend(fontsize=6, markerscale=2, loc="upper right")
    if mesh is not None:
        fig.colorbar(mesh, ax=list(axes[0]), shrink=0.9, label="log p(z) (latent Lebesgue)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
