"""The figures of the epoch-end callbacks as pure functions: tensors in, a matplotlib ``Figure``
out (Agg, independent of pyplot and its global backend). Nothing here needs a Trainer or a model;
:class:`~callbacks.CurvaturePlots` computes the inputs and saves / logs what these return.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "Extent",
    "geodesics_figure",
    "interpolation_figure",
    "latent_map_figure",
    "new_figure",
    "profile_1d_figure",
]

#: ``(x_min, x_max, y_min, y_max)`` of a latent grid
Extent = tuple[float, float, float, float]


def new_figure(width: float, height: float) -> Figure:
    """A matplotlib ``Figure`` rendered by Agg, independent of pyplot and its global backend."""
    return Figure(figsize=(width, height), layout="constrained")


def mosaic(imgs: Tensor, vmin: float, vmax: float) -> np.ndarray:
    """Images ``(n, C, H, W)`` in a row, 1-pixel white gaps, scaled to [0, 1]: ``(H, *, C)``."""
    n, C, H, W = imgs.shape
    scaled = ((imgs - vmin) / max(vmax - vmin, 1e-12)).clamp(0, 1)
    out = torch.ones(C, H, n * (W + 1) - 1)
    for c in range(n):
        out[:, :, c * (W + 1) : c * (W + 1) + W] = scaled[c]
    return out.permute(1, 2, 0).numpy()


def heat_map(
    fig: Any,
    ax: Any,
    values: Tensor,
    extent: tuple[float, float, float, float],
    label: str,
    cmap: str,
) -> None:
    """``values (H, W)`` as an image over ``extent`` on ``ax``, non-finite cells blank, with a
    color bar labeled ``label``."""
    v = values.detach().cpu().float().numpy()
    v = np.where(np.isfinite(v), v, np.nan)
    im = ax.imshow(
        v, origin="lower", extent=extent, aspect="auto", cmap=cmap, interpolation="nearest"
    )
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label(label, fontsize=10)


def class_colors(k: int) -> list[Any]:
    """``k`` distinct colors (tab10, or tab20 beyond 10 classes)."""
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(k)]


def scatter_codes(
    ax: Any,
    xy: np.ndarray,
    labels: np.ndarray | None,
    class_names: Any,
    marker: str = "o",
    size: float = 8,
) -> None:
    """Latent codes ``xy (n, 2)`` on ``ax``: one color per class of ``labels (n,)`` with a legend
    (named by ``class_names`` where given), or plain markers without labels."""
    if labels is None:
        filled = marker not in ("|", "_", "+", "x", ".", ",")  # line markers have no face
        ax.scatter(
            xy[:, 0],
            xy[:, 1],
            s=size,
            c="white" if filled else "black",
            edgecolors="black" if filled else None,
            linewidths=0.3 if filled else 0.8,
            marker=marker,
            label="validation codes",
        )
        return
    classes = np.unique(labels)
    colors = class_colors(len(classes))
    for color, c in zip(colors, classes):
        m = labels == c
        name = str(c)
        if class_names is not None and 0 <= int(c) < len(class_names):
            name = str(class_names[int(c)])
        ax.scatter(
            xy[m, 0],
            xy[m, 1],
            s=size,
            color=color,
            marker=marker,
            label=name,
            edgecolors="black" if marker == "o" else None,
            linewidths=0.2 if marker == "o" else 1,
        )
    if len(classes) <= 20:
        ax.legend(
            title="class", fontsize=8, title_fontsize=9, loc="best", markerscale=1.5, framealpha=0.8
        )


def _numpy(t: Tensor | np.ndarray | None) -> np.ndarray | None:
    if t is None:
        return None
    return t.detach().cpu().numpy() if isinstance(t, Tensor) else np.asarray(t)


def latent_map_figure(
    values: Tensor,
    extent: Extent,
    codes: Tensor,
    *,
    title: str,
    colorbar_label: str,
    labels: Tensor | None = None,
    class_names: Sequence[str] | None = None,
    axis_labels: tuple[str, str] = ("z1", "z2"),
    cmap: str = "viridis",
    codes_as_dots: str | None = None,
) -> Figure:
    """A heat map of ``values (G, G)`` over ``extent`` with the codes ``(n, 2)`` on top.

    Args:
        values: grid values, rows along the second axis (``meshgrid(..., indexing="xy")``).
        extent: the grid's ``(x_min, x_max, y_min, y_max)``.
        codes: latent codes in the plane of the map ``(n, 2)``.
        title: figure title.
        colorbar_label: label of the color bar.
        labels: class labels ``(n,)`` (one color per class, with a legend), or None.
        class_names: legend names of the classes.
        axis_labels: x and y axis labels.
        cmap: matplotlib color map.
        codes_as_dots: draw the codes as small dots of this color instead of class markers.
    """
    fig = new_figure(7.5, 6)
    ax = fig.add_subplot()
    heat_map(fig, ax, values, extent, colorbar_label, cmap)
    xy = _numpy(codes)
    assert xy is not None
    if codes_as_dots is not None:
        ax.scatter(xy[:, 0], xy[:, 1], s=4, c=codes_as_dots, alpha=0.4, linewidths=0)
    else:
        scatter_codes(ax, xy, _numpy(labels), class_names)
    ax.set(title=title, xlabel=axis_labels[0], ylabel=axis_labels[1])
    return fig


def geodesics_figure(
    values: Tensor,
    extent: Extent,
    codes: Tensor,
    curves: Tensor,
    *,
    title: str,
    colorbar_label: str,
    axis_labels: tuple[str, str] = ("z1", "z2"),
) -> Figure:
    """Geodesics ``curves (k, N, 2)`` (solid) against the straight lines between their end points
    (dashed) over the heat map ``values (G, G)``, with the codes ``(n, 2)`` as faint dots."""
    fig = new_figure(7.5, 6)
    ax = fig.add_subplot()
    heat_map(fig, ax, values, extent, colorbar_label, "viridis")
    xy = _numpy(codes)
    proj = _numpy(curves)  # (k, N, 2)
    assert xy is not None and proj is not None
    ax.scatter(xy[:, 0], xy[:, 1], s=4, c="white", alpha=0.35, linewidths=0)
    colors = class_colors(proj.shape[0])
    for i in range(proj.shape[0]):
        ax.plot(proj[i, :, 0], proj[i, :, 1], "-", color=colors[i], lw=2)
        ax.plot(proj[i, [0, -1], 0], proj[i, [0, -1], 1], "--", color=colors[i], lw=1.2)
        ax.plot(proj[i, [0, -1], 0], proj[i, [0, -1], 1], "o", color=colors[i], ms=4)
    ax.plot([], [], "k-", lw=2, label="geodesic")
    ax.plot([], [], "k--", lw=1.2, label="straight line")
    ax.legend(loc="upper right", fontsize=9, framealpha=0.8)
    ax.set_xlim(extent[0], extent[1])
    ax.set_ylim(extent[2], extent[3])
    ax.set(title=title, xlabel=axis_labels[0], ylabel=axis_labels[1])
    return fig


def profile_1d_figure(
    z: Tensor,
    values: Tensor,
    codes: Tensor,
    *,
    title: str,
    ylabel: str,
    labels: Tensor | None = None,
    class_names: Sequence[str] | None = None,
) -> Figure:
    """A 1-D latent profile ``values (m,)`` over ``z (m,)``, the codes ``(n,)`` as a rug."""
    fig = new_figure(7.5, 4.5)
    ax = fig.add_subplot()
    zn, v, c = _numpy(z), _numpy(values), _numpy(codes)
    assert zn is not None and v is not None and c is not None
    ax.plot(zn, v, "k-", lw=1.5)
    rug = np.stack([c, np.full_like(c, float(np.min(v)))], 1)
    scatter_codes(ax, rug, _numpy(labels), class_names, marker="|", size=60)
    ax.set(title=title, xlabel="z", ylabel=ylabel)
    return fig


def interpolation_figure(rows: Sequence[tuple[str, Tensor]], title: str) -> Figure:
    """Decoded means along paths: one row per ``(label, decoded (n, *data_shape))``.

    Image data (``(n, C, H, W)`` with ``C`` 1 or 3, or ``(n, H, W)``) become image strips on a
    common intensity scale; other data one line per position along the path.
    """
    decoded = [t.detach().cpu().float() for _, t in rows]
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
    else:  # vector data: one line per position along the path
        import matplotlib

        fig = new_figure(7.5, 2.6 * len(rows) + 0.6)
        axes = fig.subplots(len(rows), 1, squeeze=False)
        cmap = matplotlib.colormaps["viridis"]
        for r, ((label, _), vecs) in enumerate(zip(rows, decoded)):
            ax = axes[r][0]
            for c in range(n):
                ax.plot(vecs[c].flatten().numpy(), "-o", ms=2, color=cmap(c / max(1, n - 1)))
            ax.set(ylabel="decoded mean", title=label)
        axes[-1][0].set_xlabel("data dimension (color: position along the path, start = purple)")
    fig.suptitle(title, fontsize=11)
    return fig
