"""Sampling: Riemannian versus Euclidean random walks started at data codes.

Three walks of :func:`geometry.random_walk`, from the same start codes with the same noise:

* ``first_order``: the paper's Riemannian walk ``z <- z + s U Lambda^(-1/2) eps`` (step
  covariance ``s^2 M^(-1)``, no drift);
* ``brownian``: the Euler-Maruyama discretisation of Riemannian Brownian motion (generator
  ``Delta_LB / 2``, time step ``s^2``): the same diffusion plus the drift
  ``s^2 b(z)``, ``b^i = (1/2) (1/sqrt(det M)) d_j(sqrt(det M) M^{ij})``, which pushes towards
  larger volume ``sqrt(det M)``, i.e. for an RBF-precision decoder away from the data, where the
  variance and so the metric grow;
* ``euclidean``: ``z <- z + s eps``.

To compare them at the same scale, the Riemannian step size (shared by both Riemannian walks) is
set so that its median step length at the start codes equals the Euclidean one: ``s_R = s_E /
median_z sqrt(tr M(z)^(-1) / d)`` over the start codes. How far a walk strays from the data is
the Euclidean distance from each visited point to its nearest training code, in units of the
median distance from a training code to its nearest distinct training code; reported over all
walks for the end points and for the whole paths. One-sided Mann-Whitney tests compare the end
distances of each Riemannian walk with the Euclidean walk's (Riemannian smaller), and a
two-sided one the Brownian walk's with the first-order walk's.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from scipy.stats import mannwhitneyu
from torch import Tensor
from tqdm.auto import tqdm

from experiments.common import ReproduceSettings, check_digits_available, encode_codes, train_model
from experiments.report import ExperimentReport
from geometry import metric_tensor, random_walk
from pipeline import UserError

__all__ = ["check_sampling", "matched_step_size", "nearest_code_distance", "run_sampling"]


def nearest_code_distance(points: Tensor, codes: Tensor, chunk: int = 4096) -> Tensor:
    """Euclidean distance from each of ``points (n, d)`` to its nearest row of ``codes (m, d)``."""
    return torch.cat([torch.cdist(p, codes).min(dim=1).values for p in points.split(chunk)])


@torch.no_grad()
def matched_step_size(embed: Any, z0: Tensor, euclidean_step: float) -> float:
    """Riemannian step size whose median step length at ``z0 (B, d)`` equals ``euclidean_step``."""
    with torch.enable_grad():
        M = metric_tensor(embed, z0).detach()  # (B, d, d)
    tr_inv = torch.linalg.inv(M).diagonal(dim1=1, dim2=2).sum(-1)  # (B,)
    scale = (tr_inv / z0.shape[1]).clamp_min(0).sqrt().median()
    return float(euclidean_step / scale)


def check_sampling(
    settings: ReproduceSettings,
    digits: tuple[int, ...] | list[int] = (0, 1),
    num_walks: int = 200,
    num_steps: int = 100,
) -> None:
    """Up-front checks (no training). Raises :class:`~pipeline.UserError`."""
    if num_walks < 1 or num_steps < 1:
        raise UserError(f"sampling: num_walks={num_walks} and num_steps={num_steps} must be >= 1")
    check_digits_available(settings, digits, 2, "sampling")


def _figure(path: str, codes: np.ndarray, walks: dict[str, np.ndarray], images: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(walks)
    fig = plt.figure(figsize=(6 * n, 6))
    for i, (kind, w) in enumerate(walks.items()):
        ax = fig.add_subplot(2, n, 1 + i)
        ax.scatter(codes[:, 0], codes[:, 1], s=3, c="0.7")
        for j in range(min(8, len(w))):
            ax.plot(w[j, :, 0], w[j, :, 1], lw=0.8)
        lo, hi = codes.min(axis=0), codes.max(axis=0)
        pad = 0.25 * (hi - lo)
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])  # escaped walks leave the frame
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
        ax.set_title(f"{kind} walks")
        ax2 = fig.add_subplot(2, n, 1 + n + i)
        imgs = images[kind]
        grid = np.concatenate(
            [np.concatenate(list(imgs[r * 8 : r * 8 + 8]), axis=1) for r in range(2)]
        )
        ax2.imshow(grid, cmap="gray")
        ax2.set_title(f"{kind}: decoded end points")
        ax2.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_sampling(
    settings: ReproduceSettings,
    digits: tuple[int, ...] | list[int] = (0, 1),
    num_walks: int = 200,
    num_steps: int = 100,
    euclidean_step: float = 0.05,
    max_per_class: int | None = None,
) -> dict[str, Any]:
    """Run the sampling experiment and write its report (``<out_dir>/sampling``).

    Args:
        settings: shared settings (the first seed trains the model).
        digits: digit set of the model (paper: 0 and 1).
        num_walks: walks of each kind, from random training codes.
        num_steps: steps per walk.
        euclidean_step: Euclidean step size, in units of the codes' median coordinate std.
        max_per_class: images per digit (None: all).
    """
    digits = tuple(int(d) for d in digits)
    check_sampling(settings, digits, num_walks, num_steps)
    report = ExperimentReport("sampling", settings)
    seed = settings.seeds[0]
    t0 = time.perf_counter()
    tm = train_model(settings, "vae", digits, seed, data={"max_per_class": max_per_class})
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = tm.model
    codes, _, _ = encode_codes(model, [tm.datamodule.train_dataset])
    dist = torch.cdist(codes, codes)
    dist[dist <= 0] = float("inf")  # the point itself and duplicate codes
    nn_scale = float(dist.min(1).values.median())
    s_e = euclidean_step * float(codes.std(dim=0).median())
    rng = np.random.default_rng(seed)
    z0 = codes[rng.integers(len(codes), size=num_walks)]
    s_r = matched_step_size(model.embed, z0, s_e)
    walks, stats, images = {}, {}, {}
    for name, metric, kind, step in tqdm(
        (
            ("first_order", True, "first_order", s_r),
            ("brownian", True, "brownian", s_r),
            ("euclidean", False, "first_order", s_e),
        ),
        desc="walks",
        disable=not settings.progress,
    ):
        gen = torch.Generator().manual_seed(seed)
        t_walk = time.perf_counter()
        w = random_walk(
            model.embed, z0, num_steps, step, metric=metric, generator=gen, kind=kind
        ).detach()
        t_walk = time.perf_counter() - t_walk
        finite = bool(torch.isfinite(w).all())
        d_end = nearest_code_distance(w[:, -1], codes) / nn_scale
        d_all = nearest_code_distance(w.flatten(0, 1), codes) / nn_scale
        walks[name] = w.numpy()
        with torch.no_grad():
            images[name] = model.decode(w[:16, -1])[0].reshape(16, *model.data_shape[-2:]).numpy()
        stats[name] = {
            "step_size": step,
            "seconds": t_walk,
            "finite": finite,
            "end_distance_median": float(d_end.median()),
            "end_distance_p90": float(d_end.quantile(0.9)),
            "path_distance_median": float(d_all.median()),
            "path_distance_max": float(d_all.max()),
            "end_far_fraction": float((d_end > 5).float().mean()),
            "_end": d_end.numpy(),
        }
    ends = {name: st["_end"] for name, st in stats.items()}
    p_tests = {
        "first_order_vs_euclidean": float(
            mannwhitneyu(ends["first_order"], ends["euclidean"], alternative="less").pvalue
        ),
        "brownian_vs_euclidean": float(
            mannwhitneyu(ends["brownian"], ends["euclidean"], alternative="less").pvalue
        ),
        "brownian_vs_first_order": float(
            mannwhitneyu(ends["brownian"], ends["first_order"], alternative="two-sided").pvalue
        ),
    }
    for s in stats.values():
        s.pop("_end")
    t_eval = time.perf_counter() - t0
    rows = [
        [
            kind,
            f"{s['step_size']:.4g}",
            f"{s['end_distance_median']:.2f}",
            f"{s['end_distance_p90']:.2f}",
            f"{s['path_distance_median']:.2f}",
            f"{s['path_distance_max']:.3g}",
            f"{100 * s['end_far_fraction']:.0f} %",
            "yes" if s["finite"] else "NO",
            f"{s['seconds']:.1f}",
        ]
        for kind, s in stats.items()
    ]
    report.add_text(
        f"Model: digits {list(digits)}, seed {seed}. {num_walks} walks of {num_steps} steps from "
        "random training codes; Riemannian step size matched to the Euclidean one by median "
        "step length at the start codes. Distance to the nearest training code in units of the "
        f"median nearest-neighbour distance of the codes ({nn_scale:.4g}); 'far' = more than 5 "
        "units. first_order = the paper's walk (step covariance s^2 M^-1, no drift); brownian = "
        "Euler-Maruyama of Riemannian Brownian motion (the same diffusion plus the drift s^2 b). "
        "Mann-Whitney p of the end distances: first_order < euclidean "
        f"{p_tests['first_order_vs_euclidean']:.2g}, brownian < euclidean "
        f"{p_tests['brownian_vs_euclidean']:.2g}, brownian vs first_order (two-sided) "
        f"{p_tests['brownian_vs_first_order']:.2g}. Paper: qualitative (the Riemannian walk "
        "stays in the data support, the Euclidean walk drifts)."
    )
    report.add_table(
        "walks",
        [
            "walk",
            "step size",
            "end dist median",
            "end dist p90",
            "path dist median",
            "path dist max",
            "far (end)",
            "finite",
            "time (s)",
        ],
        rows,
    )
    _figure(report.figure_path("walks"), codes.numpy(), walks, images)
    report.add_text(f"Time: training {t_train:.0f} s, walks {t_eval:.0f} s.")
    summary = {
        f"sampling/{k}/end_distance_median": s["end_distance_median"] for k, s in stats.items()
    }
    summary.update({f"sampling/mannwhitney_p/{k}": v for k, v in p_tests.items()})
    return report.write(
        {
            "walks": stats,
            "mannwhitney_p": p_tests,
            "nn_scale": nn_scale,
            "run_dir": tm.run_dir,
            "timing": {"train_seconds": t_train, "eval_seconds": t_eval},
        },
        summary,
    )
