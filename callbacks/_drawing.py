"""Matplotlib drawing helpers of the geometry callbacks (internal): image rows, heat maps and
class-coloured scatter plots of latent codes.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


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
    colour bar labelled ``label``."""
    v = values.detach().cpu().float().numpy()
    v = np.where(np.isfinite(v), v, np.nan)
    im = ax.imshow(
        v, origin="lower", extent=extent, aspect="auto", cmap=cmap, interpolation="nearest"
    )
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label(label, fontsize=10)


def class_colours(k: int) -> list[Any]:
    """``k`` distinct colours (tab10, or tab20 beyond 10 classes)."""
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
    """Latent codes ``xy (n, 2)`` on ``ax``: one colour per class of ``labels (n,)`` with a legend
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
    colours = class_colours(len(classes))
    for colour, c in zip(colours, classes):
        m = labels == c
        name = str(c)
        if class_names is not None and 0 <= int(c) < len(class_names):
            name = str(class_names[int(c)])
        ax.scatter(
            xy[m, 0],
            xy[m, 1],
            s=size,
            color=colour,
            marker=marker,
            label=name,
            edgecolors="black" if marker == "o" else None,
            linewidths=0.2 if marker == "o" else 1,
        )
    if len(classes) <= 20:
        ax.legend(
            title="class", fontsize=8, title_fontsize=9, loc="best", markerscale=1.5, framealpha=0.8
        )
