"""LAND mixture versus Euclidean GMM on the latent codes of a trained VAE (paper Sec. 5).

:func:`run_land_experiment` fits both mixtures to a seeded training split of the codes and
reports, side by side: held-out mean log-likelihood (both with respect to the Lebesgue measure
of the latent coordinates; the LAND, defined by default with respect to the Riemannian volume, with
its Monte Carlo normaliser and converted by ``log sqrt(det M(z))``), the clustering F-measure
of the hard responsibilities against the labels, the mean latent distance of samples to the
nearest training code (latent Euclidean units; for the LAND also of the authors' sampler,
``method="push_forward"``, which ignores the volume term), fit times, the LAND's time per EM
iteration, stop reason and log-map convergence, and whether a fit ended in NaN. Decoded sample
grids and, for a 2-d latent space, density maps (:mod:`experiments.land_density`) are written as PNG
files. Pure torch + matplotlib (no Lightning import): ``model`` is anything with ``embed(z)``
and ``decode(z) -> (mean, std)``, e.g. a ``TwoStageVAE``.
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
from experiments.land_density import density_map_figure, latent_density_maps
from geometry import ComponentCollapseError, EuclideanGMM, LANDMixture

__all__ = ["clustering_f_measure", "run_land_experiment"]

_MIXTURES = ("land", "gmm")


def clustering_f_measure(labels: np.ndarray, clusters: np.ndarray) -> float:
    """The clustering F-measure of :func:`experiments.clustering.f_measure`, in [0, 1]."""
    return f_measure(labels, clusters) / 100


def _nearest_distance(samples: Tensor | None, codes: Tensor) -> float | None:
    """Mean distance of ``samples (m, d)`` to their nearest code; None without samples."""
    if samples is None:
        return None
    return float(torch.cdist(samples.to(codes), codes).min(dim=1).values.mean())


def _draw_samples(
    mix: Any, num: int, seed: int, method: str, like: Tensor, errors: dict[str, str]
) -> Tensor | None:
    """``(num, d)`` samples of ``mix`` grouped by component, in ``like``'s dtype and device, or
    None if the sampler failed.

    A sampler whose exponential-map shots run where the metric is singular raises
    ``FloatingPointError``; that is a failure of the sample, not of the fit: its message is
    stored in ``errors[method]`` and the sample's measures are reported as missing.
    """
    kwargs = {"method": method} if method != "exact" else {}
    try:
        samples, comp = mix.sample(num, seed=seed, **kwargs)
    except FloatingPointError as err:
        errors[method] = f"{type(err).__name__}: {err}"
        return None
    return samples.to(like)[torch.argsort(comp, stable=True)]  # grouped by component


def _save_grid(model: Any, z: Tensor, path: Path, title: str) -> bool:
    """Decoded means of ``z (n, d)`` as an image grid, 10 per row; False if not square images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with torch.no_grad():
        mean = model.decode(z)[0].detach().cpu()  # (n, *data_shape)
    n = mean.shape[0]
    side = int(math.isqrt(int(np.prod(mean.shape[1:]))))
    if n == 0 or side * side != mean[0].numel():
        return False
    images = mean.reshape(n, side, side)
    cols = 10
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols, rows + 0.4), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].float().numpy(), cmap="gray")
    fig.subplots_adjust(top=1 - 0.4 / (rows + 0.4))  # the title's strip, not a fixed share
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return True


def _all_finite(*values: Any) -> bool:
    return all(bool(torch.isfinite(torch.as_tensor(v, dtype=torch.float64)).all()) for v in values)


#: fits that fail with a clear error (recorded as failed fits, not NaN): a collapsed component,
#: a normaliser where more than half of the exponential-map shots failed
_FIT_FAILURES = (ComponentCollapseError, FloatingPointError)


def _fit_and_evaluate(
    name: str, model: Any, K: int, seed: int, land_options: dict[str, Any] | None,
    z_train: Tensor, y_train: np.ndarray, z_test: Tensor, samples_per_component: int,
    grid_path: Path,
) -> tuple[Any, dict[str, Any], str | None]:  # fmt: skip
    """Fit one mixture, evaluate it, draw its sample grid: (mixture, results, grid file name)."""
    start = time.perf_counter()
    if name == "land":
        mix: Any = LANDMixture(model.embed, K, seed=seed, **(land_options or {}))
    else:
        mix = EuclideanGMM(K, seed=seed)
    mix.fit(z_train)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    train_r = mix.responsibilities_ if name == "land" else mix.responsibilities(z_train)
    assert train_r is not None
    assign = train_r.argmax(dim=1).cpu().numpy()
    test_lp = mix.log_prob(z_test)  # (n_test,)
    num_samples = samples_per_component * K
    sample_errors: dict[str, str] = {}
    samples = _draw_samples(mix, num_samples, seed, "exact", z_train, sample_errors)
    pushed: Tensor | None = None  # the LAND authors' sampler, LAND only
    drawn = False
    if samples is not None:
        title = f"{name.upper()}: {len(samples)} samples, sorted by component"
        drawn = _save_grid(model, samples, grid_path, title)
    res: dict[str, Any] = {
        "test_log_likelihood": float(test_lp.mean()),
        "f_measure": clustering_f_measure(y_train, assign),
        "sample_nearest_code_distance": _nearest_distance(samples, z_train),
        "fit_s": fit_s,
        "eval_s": time.perf_counter() - start,
    }
    if name == "land":
        assert mix.converged_ is not None and mix.last_converged is not None
        log_z, se = mix.log_normaliser
        iterations = max(1, len(mix.nll_history) - 1)
        pushed = _draw_samples(mix, num_samples, seed, "push_forward", z_train, sample_errors)
        res.update(
            sample_nearest_code_distance_push_forward=_nearest_distance(pushed, z_train),
            em_iterations=iterations,
            s_per_em_iteration=fit_s / iterations,
            stop_reason=mix.stop_reason,
            log_normaliser=log_z.tolist(),
            log_normaliser_std_error=se.tolist(),
            unconverged_log_maps_train=int((~mix.converged_).sum()),
            unconverged_log_maps_test=int((~mix.last_converged).sum()),
            nll_history=mix.nll_history,
            nll_difference_std_errors=mix.nll_difference_std_errors,
            timings=dict(mix.timings),
            failed_steps=len(mix.failed_steps),
        )
        params: tuple[Any, ...] = (mix.means, mix.factors, mix.weights, log_z, mix.nll_history)
    else:
        params = (mix.means, mix.covariances, mix.weights)
    drawn_samples = [x for x in (samples, pushed) if x is not None]
    res["nan_fit"] = not _all_finite(*params, test_lp, *drawn_samples)
    res["sample_errors"] = sample_errors
    return mix, res, grid_path.name if drawn else None


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
    density_grid_size: int = 0,
    density_margin: float = 0.1,
    prefix: str = "",
    progress: bool = False,
) -> dict[str, Any]:
    """Fit a LAND mixture and a GMM to ``codes`` and compare them (see module docstring).

    Args:
        model: decoder with ``embed`` and ``decode`` (its parameters' dtype is used for codes).
        codes: ``(n, d)`` latent codes (e.g. encoder means of digits 0 and 1).
        labels: ``(n,)`` class labels of the codes.
        out_dir: folder for ``<prefix>land_results.json`` and the figures (created).
        seed: seed of the split, both fits and the samples.
        num_components: K (default: the number of distinct labels).
        test_fraction: held-out share of the codes, in (0, 1).
        samples_per_component: ``samples_per_component * K`` samples are drawn from each mixture
            (components by the weights) for the distance and the grids (sorted by component).
        land_options: extra keyword arguments of :class:`geometry.LANDMixture` (passed through).
        density_grid_size: points per axis of the density maps (0: none; only for d = 2).
        density_margin: widening of the density maps' box (fraction of the codes' extent).
        prefix: prefix of the written files' names.
        progress: progress bars of the density maps.

    Returns:
        The results (also written to ``out_dir/<prefix>land_results.json``): ``num_train``,
        ``num_test``, ``K``, ``figures`` (kind -> file name), and per mixture (``land``,
        ``gmm``): ``test_log_likelihood`` (mean over the held-out codes), ``f_measure`` (hard
        training responsibilities vs labels, in [0, 1]), ``sample_nearest_code_distance``,
        ``fit_s``, ``eval_s``, ``nan_fit``, ``sample_errors`` (sampler -> error message, for a
        sampler that raised ``FloatingPointError`` after a successful fit; its distance is then
        None); the LAND also ``em_iterations``,
        ``s_per_em_iteration``, ``stop_reason``, ``log_normaliser`` (and its standard error),
        ``unconverged_log_maps_train`` / ``_test`` (of ``num_train * K`` / ``num_test * K``),
        ``nll_history`` (and the Monte Carlo SE of each accepted change,
        ``nll_difference_std_errors``), ``timings`` (seconds in log maps, normalisers,
        M-steps; evaluations) and ``failed_steps`` (candidate steps undone because their
        normaliser failed). A fit that fails with a clear error
        (:class:`geometry.ComponentCollapseError`, or ``FloatingPointError`` from a normaliser
        where more than half of the ``Exp`` shots crossed a singular metric) gives ``{"error":
        "<type>: <message>", "nan_fit": False, "seconds_to_failure": ...}`` for that mixture.
        With density maps: ``density_maps``
        (per mixture: seconds and the unconverged fraction of the grid's log maps).
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

    mixtures: dict[str, Any] = {}
    results: dict[str, Any] = {"num_train": len(train_idx), "num_test": n_test, "K": K}
    figures: dict[str, str] = {}
    for name in _MIXTURES:
        start = time.perf_counter()
        try:
            mix, results[name], grid_name = _fit_and_evaluate(
                name, model, K, seed, land_options, z_train, y_train, z_test,
                samples_per_component, out / f"{prefix}{name}_samples.png",
            )  # fmt: skip
        except _FIT_FAILURES as err:
            elapsed = time.perf_counter() - start  # until the failure
            results[name] = {"error": f"{type(err).__name__}: {err}", "nan_fit": False}
            results[name]["seconds_to_failure"] = elapsed
            continue
        mixtures[name] = mix
        if grid_name:
            figures[f"{name}_samples"] = grid_name

    if density_grid_size and codes.shape[1] == 2 and mixtures:
        maps = latent_density_maps(
            mixtures, z_train, density_grid_size, density_margin, progress=progress
        )
        stem = f"{prefix}density_maps"
        density_map_figure(
            str(out / f"{stem}.png"), maps, z_train.cpu().double().numpy(), y_train,
            title=f"log density, {len(z_train)} training codes by label",
        )  # fmt: skip
        figures["density_maps"] = f"{stem}.png"
        results["density_maps"] = {
            name: {
                "seconds": maps["seconds"][name],
                "grid_size": density_grid_size,
                "unconverged_fraction": (
                    None
                    if maps["converged"][name] is None
                    else float(1 - maps["converged"][name].mean())
                ),
            }
            for name in mixtures
        }
    results["figures"] = figures
    (out / f"{prefix}land_results.json").write_text(json.dumps(results, indent=2))
    return results
