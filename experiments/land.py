"""LAND mixture versus Euclidean GMM on the latent codes of a trained VAE (paper Sec. 5).

:func:`run_land_experiment` fits both mixtures to a seeded training split of the codes and
reports, side by side: held-out mean log-likelihood (both with respect to the Lebesgue measure
of the latent coordinates, the LAND with its Monte Carlo normaliser), the clustering F-measure
of the hard responsibilities against the labels, the mean latent distance of samples to the
nearest training code, the LAND's time per EM iteration and its log-map convergence. Decoded
sample grids are written as PNG files. Pure torch + matplotlib (no Lightning import): ``model``
is anything with ``embed(z)`` and ``decode(z) -> (mean, std)``, e.g. a ``TwoStageVAE``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from experiments.clustering import f_measure
from geometry import EuclideanGMM, LANDMixture

__all__ = ["clustering_f_measure", "run_land_experiment"]


def clustering_f_measure(labels: np.ndarray, clusters: np.ndarray) -> float:
    """The clustering F-measure of :func:`experiments.clustering.f_measure`, in [0, 1]."""
    return f_measure(labels, clusters) / 100


def _nearest_distance(samples: Tensor, codes: Tensor) -> float:
    return float(torch.cdist(samples.to(codes), codes).min(dim=1).values.mean())


def _save_grid(model: Any, z: Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        mean = model.decode(z)[0].detach().cpu()  # (n, *data_shape)
    n = mean.shape[0]
    side = int(math.isqrt(int(np.prod(mean.shape[1:]))))
    images = mean.reshape(n, side, side) if side * side == mean[0].numel() else None
    if images is None:
        return
    cols = 10
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].numpy(), cmap="gray")
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)


def run_land_experiment(
    model: Any,
    codes: Tensor,
    labels: Tensor | np.ndarray,
    out_dir: str | Path,
    seed: int = 0,
    *,
    num_components: int | None = None,
    test_fraction: float = 0.1,
    samples_per_component: int = 40,
    land_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Fit a LAND mixture and a GMM to ``codes`` and compare them (see module docstring).

    Args:
        model: decoder with ``embed`` and ``decode`` (its parameters' dtype is used for codes).
        codes: ``(n, d)`` latent codes (e.g. encoder means of digits 0 and 1).
        labels: ``(n,)`` class labels of the codes.
        out_dir: folder for ``land_results.json`` and the sample grids (created).
        seed: seed of the split, both fits and the samples.
        num_components: K (default: the number of distinct labels).
        test_fraction: held-out share of the codes, in (0, 1).
        samples_per_component: samples drawn per component for the distance and the grids.
        land_options: extra keyword arguments of :class:`geometry.LANDMixture`.

    Returns:
        The results (also written to ``out_dir/land_results.json``).
    """
    labels_np = np.asarray(labels.cpu() if isinstance(labels, Tensor) else labels)
    if codes.ndim != 2 or labels_np.shape != (codes.shape[0],):
        raise ValueError(
            f"codes must be (n, d) and labels (n,), got {tuple(codes.shape)} and {labels_np.shape}"
        )
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    K = num_components or len(np.unique(labels_np))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(codes.shape[0], generator=g)
    n_test = max(1, int(round(test_fraction * codes.shape[0])))
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    z_train, z_test = codes[train_idx].detach(), codes[test_idx].detach()
    y_train = labels_np[train_idx.numpy()]

    land = LANDMixture(model.embed, K, seed=seed, **(land_options or {}))
    start = time.perf_counter()
    land.fit(z_train)
    fit_s = time.perf_counter() - start
    iterations = max(1, len(land.nll_history) - 1)
    gmm = EuclideanGMM(K, seed=seed).fit(z_train)

    n_samples = samples_per_component * K
    results: dict[str, Any] = {"num_train": len(train_idx), "num_test": n_test, "K": K}
    for name, mix in (("land", land), ("gmm", gmm)):
        start = time.perf_counter()
        train_r = land.responsibilities_ if mix is land else gmm.responsibilities(z_train)
        assert train_r is not None
        assign = train_r.argmax(dim=1).cpu().numpy()
        test_ll = float(mix.log_prob(z_test).mean())
        samples, _ = mix.sample(n_samples, seed=seed)
        _save_grid(model, samples.to(z_train), out / f"{name}_samples.png")
        results[name] = {
            "test_log_likelihood": test_ll,
            "f_measure": clustering_f_measure(y_train, assign),
            "sample_nearest_code_distance": _nearest_distance(samples, z_train),
            "eval_s": time.perf_counter() - start,
        }
    assert land.converged_ is not None and land.last_converged is not None
    log_z, se = land.log_normaliser
    results["land"].update(
        fit_s=fit_s,
        em_iterations=iterations,
        s_per_em_iteration=fit_s / iterations,
        stop_reason=land.stop_reason,
        log_normaliser=log_z.tolist(),
        log_normaliser_std_error=se.tolist(),
        unconverged_log_maps_train=int((~land.converged_).sum()),
        unconverged_log_maps_test=int((~land.last_converged).sum()),
        nll_history=land.nll_history,
    )
    (out / "land_results.json").write_text(json.dumps(results, indent=2))
    return results
