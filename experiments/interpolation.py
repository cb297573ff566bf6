"""Interpolation: geodesic versus straight-line interpolants between random pairs of codes.

The geodesic interpolant of a pair starts as its shortest path on a kNN graph of the training
codes (edges weighted by their Riemannian length, :func:`geometry.build_graph`), which
:func:`geometry.connecting_geodesics` refines into a geodesic (never longer than the graph path;
its ``converged`` flag is reported). The interpolant is that geodesic or the straight line,
whichever is shorter under the metric (both measured to the same tolerance), so it is never
longer than the straight line it is compared with. The report gives the converged fraction and
the quantiles of the length ratio geodesic/straight (and the graph path's, before refinement).

Smoothness (:func:`path_smoothness`): each interpolant is sampled at ``T`` points equally spaced
along it, the decoded means ``x_1..x_T`` are taken, and ``c_t = ||x_{t+1} - x_t||^2`` (sum over
pixels) is the squared change between consecutive images. The measures are the largest change
``max_t c_t`` (a jump, e.g. a sudden change of class) and the total ``sum_t c_t`` (the discrete
energy of the image sequence); smaller is smoother. Two spacings are reported: equal Euclidean
latent arc length (``latent``, what ``linspace`` gives on a straight line) and equal Riemannian
arc length (``riemannian``). The comparison is paired: per pair the geodesic's measure minus the
straight line's, the fraction of pairs where the geodesic is smoother and a Wilcoxon signed-rank
test.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from scipy.stats import wilcoxon
from torch import Tensor
from tqdm.auto import tqdm

from experiments.common import ReproduceSettings, check_digits_available, encode_codes, train_model
from experiments.report import ExperimentReport
from geometry import (
    build_graph,
    connecting_geodesics,
    constant_speed_curves,
    curve_length,
    resample_curves,
    shortest_path_curves,
    straight_lines,
)
from pipeline import UserError

__all__ = ["check_interpolation", "path_smoothness", "paired_comparison", "run_interpolation"]


def path_smoothness(images: Tensor) -> dict[str, Tensor]:
    """Squared changes between consecutive images of sequences.

    Args:
        images: ``(B, T, ...)`` sequences of ``T >= 2`` images.

    Returns:
        ``max_sq_change (B,)`` = ``max_t ||x_{t+1} - x_t||^2`` and ``total_sq_change (B,)`` =
        ``sum_t ||x_{t+1} - x_t||^2``.
    """
    if images.ndim < 2 or images.shape[1] < 2:
        raise ValueError(f"images must be (B, T >= 2, ...), got {tuple(images.shape)}")
    flat = images.flatten(2)  # (B, T, D)
    c = (flat[:, 1:] - flat[:, :-1]).pow(2).sum(-1)  # (B, T-1)
    return {"max_sq_change": c.max(dim=1).values, "total_sq_change": c.sum(dim=1)}


def paired_comparison(geodesic: np.ndarray, straight: np.ndarray) -> dict[str, float]:
    """Paired comparison of a measure (smaller is better) over pairs.

    Returns:
        medians of both, the median of the ratio geodesic/straight, the fraction of pairs
        where the geodesic is smaller, and the Wilcoxon signed-rank p-value.
    """
    g, s = np.asarray(geodesic, float), np.asarray(straight, float)
    diff = g - s
    p = float(wilcoxon(g, s).pvalue) if np.any(diff != 0) and g.size > 1 else 1.0
    return {
        "geodesic_median": float(np.median(g)),
        "straight_median": float(np.median(s)),
        "median_ratio": float(np.median(g / np.maximum(s, 1e-30))),
        "fraction_geodesic_smaller": float(np.mean(diff < 0)),
        "wilcoxon_p": p,
        "num_pairs": int(g.size),
    }


def check_interpolation(
    settings: ReproduceSettings,
    digits: tuple[int, ...] | list[int] = (0, 1),
    num_pairs: int = 200,
    num_nodes: int = 24,
) -> None:
    """Up-front checks (no training). Raises :class:`~pipeline.UserError`."""
    if num_pairs < 2:
        raise UserError(f"interpolation: num_pairs={num_pairs} must be >= 2")
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 2:
        raise UserError(f"interpolation: num_nodes={num_nodes!r} must be an integer >= 2")
    check_digits_available(settings, digits, 10, "interpolation")


@torch.no_grad()
def geodesic_and_straight(
    embed: Any,
    codes: Tensor,
    src: np.ndarray,
    tgt: np.ndarray,
    graph_k: int,
    rtol: float = 1e-3,
    num_nodes: int = 24,
    progress: bool = False,
) -> dict[str, Tensor]:
    """Geodesic interpolants (refined graph paths, or the straight line where shorter) and lines.

    The shortest path on a ``graph_k``-NN graph of ``codes`` starts
    :func:`geometry.connecting_geodesics` (``init_curves``; a pair without a graph path starts
    from its straight segment); the refined curve is kept unless the straight line is shorter.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        codes: ``(n, d)`` training codes (graph nodes; the pairs' end points).
        src: ``(P,)`` indices of the start codes.
        tgt: ``(P,)`` indices of the end codes.
        graph_k: neighbours of the kNN graph.
        rtol: relative tolerance of every length measurement (the solver's ``rtol``).
        num_nodes: nodes of the refined polylines.
        progress: show the solver's progress bar.

    Returns:
        ``geodesic`` ``(P, num_nodes, d)`` and ``straight`` ``(P, num_nodes, d)`` polylines (the
        straight one where it is the interpolant), their measured Riemannian lengths ``(P,)``
        (``geodesic_length <= straight_length``), ``graph_length (P,)`` (measured length of the
        graph path), ``converged (P,)`` (the solver's flag of the refined curve),
        ``line_kept (P,)`` (bool: the straight line was shorter than the refined curve).
    """
    graph = build_graph(embed, codes, k=graph_k)
    # unreachable pairs get the straight segment (then the refinement starts from the line)
    paths, _ = shortest_path_curves(graph, src, tgt, on_disconnected="inf")  # (P, M, d)
    z0, z1 = codes[src], codes[tgt]  # (P, d)
    res = connecting_geodesics(
        embed, z0, z1, init_curves=paths, num_nodes=num_nodes, max_num_nodes=num_nodes,
        rtol=rtol, progress=progress,
    )  # fmt: skip
    lines = straight_lines(z0, z1, num_nodes)  # (P, num_nodes, d)
    line_len = curve_length(embed, lines, rtol=rtol)
    path_len = curve_length(embed, paths, rtol=rtol)
    line_kept = line_len <= res.lengths
    geo = torch.where(line_kept[:, None, None], lines, res.curves)
    return {
        "geodesic": geo,
        "straight": lines,
        "geodesic_length": torch.where(line_kept, line_len, res.lengths),
        "straight_length": line_len,
        "graph_length": path_len,
        "converged": res.converged,
        "line_kept": line_kept,
    }


def _strip_figure(path: str, strips: list[tuple[np.ndarray, np.ndarray]], shape: tuple) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    T = strips[0][0].shape[0]
    fig, axes = plt.subplots(2 * len(strips), T, figsize=(T * 0.8, 1.7 * len(strips)))
    for i, (geo, line) in enumerate(strips):
        for row, (seq, name) in enumerate(((line, "straight"), (geo, "geodesic"))):
            for t in range(T):
                ax = axes[2 * i + row, t]
                ax.imshow(seq[t].reshape(shape[-2:]), cmap="gray")
                ax.set_xticks([])
                ax.set_yticks([])
                if t == 0:
                    ax.set_ylabel(f"{i}: {name}", fontsize=6)
    fig.tight_layout(pad=0.1)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _curves_figure(path: str, codes: np.ndarray, labels: np.ndarray, geo: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(codes[:, 0], codes[:, 1], c=labels, s=4, cmap="tab10", vmin=0, vmax=9, alpha=0.5)
    for i, c in enumerate(geo):
        ax.plot(c[:, 0], c[:, 1], "-", lw=1, color=f"C{i % 10}")
        ax.plot([c[0, 0], c[-1, 0]], [c[0, 1], c[-1, 1]], "--", lw=0.8, color=f"C{i % 10}")
    ax.set_title("geodesic (solid) and straight (dashed) interpolants")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_interpolation(
    settings: ReproduceSettings,
    digits: tuple[int, ...] | list[int] = (0, 1),
    num_pairs: int = 200,
    num_points: int = 16,
    graph_k: int = 10,
    num_strips: int = 6,
    max_per_class: int | None = None,
    num_nodes: int = 24,
) -> dict[str, Any]:
    """Run the interpolation experiment and write its report (``<out_dir>/interpolation``).

    Args:
        settings: shared settings (the first seed trains the model).
        digits: digit set of the model (paper: 0 and 1).
        num_pairs: random pairs of training codes (distinct points).
        num_points: images per interpolant ``T``.
        graph_k: neighbours of the kNN graph on the training codes.
        num_strips: pairs drawn as image strips.
        max_per_class: images per digit (None: all).
        num_nodes: nodes of the refined geodesics.
    """
    digits = tuple(int(d) for d in digits)
    check_interpolation(settings, digits, num_pairs, num_nodes)
    report = ExperimentReport("interpolation", settings)
    seed = settings.seeds[0]
    t0 = time.perf_counter()
    tm = train_model(settings, "vae", digits, seed, data={"max_per_class": max_per_class})
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = tm.model
    codes, labels, _ = encode_codes(model, [tm.datamodule.train_dataset])
    rng = np.random.default_rng(seed)
    src = rng.integers(len(codes), size=num_pairs)
    tgt = (src + 1 + rng.integers(len(codes) - 1, size=num_pairs)) % len(codes)
    t_geo = time.perf_counter()
    curves = geodesic_and_straight(
        model.embed, codes, src, tgt, graph_k, num_nodes=num_nodes, progress=settings.progress
    )
    t_geo = time.perf_counter() - t_geo
    measures: dict[str, dict[str, dict[str, Any]]] = {}
    seqs: dict[str, dict[str, Tensor]] = {}
    for spacing in tqdm(
        ("latent", "riemannian"), desc="interpolation", disable=not settings.progress
    ):
        seqs[spacing] = {}
        for kind in ("geodesic", "straight"):
            c = curves[kind]
            with torch.no_grad():
                if spacing == "latent":
                    pts = resample_curves(c, num_points)
                else:
                    pts = constant_speed_curves(model.embed, resample_curves(c, 64), num_points)
                imgs = model.decode(pts.flatten(0, 1))[0].reshape(len(c), num_points, -1)
            seqs[spacing][kind] = imgs
        sg = path_smoothness(seqs[spacing]["geodesic"])
        ss = path_smoothness(seqs[spacing]["straight"])
        measures[spacing] = {m: paired_comparison(sg[m].numpy(), ss[m].numpy()) for m in sg}
    cross = (labels[src] != labels[tgt]).numpy()
    for spacing in ("latent",):
        sg = path_smoothness(seqs[spacing]["geodesic"][cross])
        ss = path_smoothness(seqs[spacing]["straight"][cross])
        measures["latent_cross_class"] = {
            m: paired_comparison(sg[m].numpy(), ss[m].numpy()) for m in sg
        }
    t_eval = time.perf_counter() - t0
    lengths = paired_comparison(
        curves["geodesic_length"].numpy(), curves["straight_length"].numpy()
    )
    ratio = (curves["geodesic_length"] / curves["straight_length"].clamp_min(1e-30)).numpy()
    graph_ratio = (curves["graph_length"] / curves["straight_length"].clamp_min(1e-30)).numpy()
    refinement = {
        "converged_fraction": float(curves["converged"].float().mean()),
        "line_kept_fraction": float(curves["line_kept"].float().mean()),
        "length_ratio_quantiles": {
            q: float(np.quantile(ratio, float(q))) for q in ("0.1", "0.5", "0.9", "1.0")
        },
        "graph_length_ratio_quantiles": {
            q: float(np.quantile(graph_ratio, float(q))) for q in ("0.1", "0.5", "0.9", "1.0")
        },
        "seconds": t_geo,
    }
    rows = []
    for spacing, per in measures.items():
        for m, r in per.items():
            rows.append(
                [
                    spacing,
                    m,
                    r["num_pairs"],
                    f"{r['geodesic_median']:.3f}",
                    f"{r['straight_median']:.3f}",
                    f"{r['median_ratio']:.3f}",
                    f"{100 * r['fraction_geodesic_smaller']:.0f} %",
                    f"{r['wilcoxon_p']:.2g}",
                ]
            )
    report.add_text(
        f"Model: digits {list(digits)}, seed {seed}, {settings.stage1_epochs}+"
        f"{settings.stage2_epochs} epochs. {num_pairs} random pairs of training codes, "
        f"{num_points} decoded means per interpolant. Geodesic = the shortest path on a "
        f"k={graph_k} graph of the training codes refined by the geodesic solver "
        f"({num_nodes} nodes; converged for {100 * refinement['converged_fraction']:.1f} % of "
        f"pairs, {t_geo:.0f} s), or the straight line where that is shorter "
        f"({100 * refinement['line_kept_fraction']:.1f} % of pairs). Length ratio to the "
        "straight line (measured), 10/50/90 % quantiles and largest: geodesic "
        + "/".join(f"{v:.3f}" for v in refinement["length_ratio_quantiles"].values())
        + ", graph path before refinement "
        + "/".join(f"{v:.3f}" for v in refinement["graph_length_ratio_quantiles"].values())
        + ". Measures: "
        "largest and total squared change between consecutive images (smaller = smoother). "
        "Paper: qualitative only (geodesic interpolants change smoothly, straight lines jump)."
    )
    report.add_table(
        "smoothness",
        [
            "spacing",
            "measure",
            "pairs",
            "geodesic median",
            "straight median",
            "median ratio",
            "geodesic smoother",
            "Wilcoxon p",
        ],
        rows,
    )
    order = np.argsort(-(curves["straight_length"] - curves["geodesic_length"]).numpy())
    pick = [int(i) for i in order[:num_strips]]
    strips = [
        (seqs["latent"]["geodesic"][i].numpy(), seqs["latent"]["straight"][i].numpy()) for i in pick
    ]
    _strip_figure(report.figure_path("strips"), strips, tuple(model.data_shape))
    _curves_figure(
        report.figure_path("latent_curves"),
        codes.numpy(),
        labels.numpy(),
        curves["geodesic"][pick].numpy(),
    )
    report.add_text(
        f"Strips: the {num_strips} pairs with the largest length gain (straight on top, "
        f"geodesic below; latent spacing). Time: training {t_train:.0f} s, evaluation "
        f"{t_eval:.0f} s."
    )
    summary = {
        f"interpolation/{sp}/{m}/fraction_geodesic_smoother": r["fraction_geodesic_smaller"]
        for sp, per in measures.items()
        for m, r in per.items()
    }
    summary["interpolation/length_ratio_median"] = lengths["median_ratio"]
    summary["interpolation/converged_fraction"] = refinement["converged_fraction"]
    return report.write(
        {
            "measures": measures,
            "lengths": lengths,
            "refinement": refinement,
            "run_dir": tm.run_dir,
            "timing": {"train_seconds": t_train, "eval_seconds": t_eval},
        },
        summary,
    )
