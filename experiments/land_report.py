"""The ``land`` experiment: LAND mixture versus Euclidean GMM per digit set and seed (Sec. 5).

For each digit set (default: 0/1 as in the paper, and 0/1/2) and training seed, the VAE of the
sampling and interpolation experiments is trained or reused (:func:`train_model` with the same
name and data, so the models are shared), its training images are encoded, a seeded stratified
subset of ``codes_per_class`` codes per digit is drawn, and :func:`run_land_experiment` fits a
K-component LAND mixture and a GMM (K = the number of digits) to a seeded training split of it
and evaluates both on the held-out rest. Reported per digit set, mean and std over seeds: the
held-out mean log-likelihood (both in latent Lebesgue units: the LAND, by default a density with
respect to the Riemannian volume, is reported with respect to the Lebesgue measure of the latent
coordinates, like the GMM's), the F-measure of the hard
responsibilities, the mean Euclidean distance of samples to the nearest training code, fit
times, seconds per EM iteration, EM iterations, stop reasons, unconverged log maps, NaN fits and
failed fits (a collapsed component, or a normaliser where more than half of the ``Exp`` shots
failed: the error is listed in the report) and failed samples of fits that succeeded (a
sampler whose shots ran where the metric is singular: listed, its distance left out of the
means); the targets of issue #14 (on digits
0/1, in the mean over seeds: the LAND's F-measure above the GMM's, its samples closer to the
codes than the GMM's) are marked met or not met for every set. Figures per set and seed:
decoded samples of both mixtures and, for a 2-d latent space, density maps of both with the
codes.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from experiments.common import (
    ReproduceSettings,
    check_digits_available,
    encode_codes,
    mean_std,
    train_model,
)
from experiments.land import run_land_experiment
from experiments.report import ExperimentReport
from geometry import LANDMixture
from pipeline import UserError

__all__ = [
    "DEFAULT_LAND_OPTIONS",
    "LAND_DIGIT_SETS",
    "check_land",
    "run_land",
    "stratified_codes",
]

#: the paper's digit set and a 3-digit one
LAND_DIGIT_SETS: tuple[tuple[int, ...], ...] = ((0, 1), (0, 1, 2))
#: LANDMixture options of the experiment under ``land_options`` (the authors' 10 EM iterations)
DEFAULT_LAND_OPTIONS: dict[str, Any] = {"max_iterations": 10}
#: options the experiment sets itself
_RESERVED = ("embed", "num_components", "seed")
#: fewest codes per digit (a LAND component needs d + 1 points after the split)
MIN_CODES_PER_CLASS = 5
PAPER_FINDING = (
    "Paper (Sec. 5; qualitative, no numbers): a mixture of two LANDs fitted in the latent space "
    "of digits 0/1 finds the two clusters where a Gaussian mixture does not, and LAND samples "
    "decode to sharp digits while GMM samples fall where the generator was not trained."
)


def _is_int(value: Any, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


def check_land(
    settings: ReproduceSettings,
    digit_sets: Sequence[Sequence[int]] = LAND_DIGIT_SETS,
    codes_per_class: int = 100,
    test_fraction: float = 0.2,
    samples_per_component: int = 40,
    density_grid: int = 24,
    density_margin: float = 0.1,
    land_options: dict[str, Any] | None = None,
) -> None:
    """Up-front checks (no training). Raises :class:`~pipeline.UserError`.

    ``land_options`` are checked by building a :class:`geometry.LANDMixture` with them (so its
    own checks name the bad option), after refusing the options the experiment sets itself.
    """
    if not _is_int(codes_per_class, MIN_CODES_PER_CLASS):
        raise UserError(
            f"land: codes_per_class={codes_per_class!r} must be an integer >= {MIN_CODES_PER_CLASS}"
        )
    if not (isinstance(test_fraction, (int, float)) and 0 < test_fraction < 1):
        raise UserError(f"land: test_fraction={test_fraction!r} must be a number in (0, 1)")
    if not _is_int(samples_per_component, 1):
        raise UserError(
            f"land: samples_per_component={samples_per_component!r} must be an integer >= 1"
        )
    if not (_is_int(density_grid, 2) or density_grid == 0):
        raise UserError(
            f"land: density_grid={density_grid!r} must be 0 (no density maps) or an integer >= 2"
        )
    if not (isinstance(density_margin, (int, float)) and density_margin >= 0):
        raise UserError(f"land: density_margin={density_margin!r} must be a number >= 0")
    if land_options is not None and not isinstance(land_options, dict):
        raise UserError(
            f"land: land_options={land_options!r} must be a dict of LANDMixture options"
        )
    opts = {**DEFAULT_LAND_OPTIONS, **(land_options or {})}
    reserved = sorted(k for k in opts if k in _RESERVED)
    if reserved:
        raise UserError(
            f"land: land_options must not set {reserved} (the experiment sets them); accepted: "
            "the other keyword arguments of geometry.LANDMixture"
        )
    try:
        LANDMixture(lambda z: z, 2, **opts)
    except (TypeError, ValueError) as err:
        raise UserError(f"land: land_options={land_options!r}: {err}") from err
    if isinstance(digit_sets, (str, bytes)) or not digit_sets:
        raise UserError(f"land: digit_sets={digit_sets!r} must be a non-empty list of digit lists")
    for digits in digit_sets:
        if isinstance(digits, (str, bytes, int)) or len(set(digits)) < 2:
            raise UserError(f"land: digit set {digits!r} needs at least 2 distinct digits")
        check_digits_available(settings, digits, MIN_CODES_PER_CLASS, "land")


def stratified_codes(labels: Tensor, per_class: int, seed: int) -> np.ndarray:
    """Seeded indices of ``min(per_class, count)`` items of every label, sorted."""
    rng = np.random.default_rng(seed)
    y = labels.cpu().numpy()
    picks = [
        rng.choice(np.flatnonzero(y == c), size=min(per_class, int((y == c).sum())), replace=False)
        for c in np.unique(y)
    ]
    return np.sort(np.concatenate(picks))


def _stat(runs: list[dict[str, Any]], mixture: str, key: str) -> tuple[float, float]:
    values = [r[mixture][key] for r in runs if r[mixture].get(key) is not None]
    return mean_std(values) if values else (float("nan"), float("nan"))


def _fmt(ms: tuple[float, float], digits: int = 3) -> str:
    if not np.isfinite(ms[0]):
        return "-"  # no fit
    return f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def _aggregate(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean and std over seeds of every measure, counts of failures and stop reasons.

    Each mixture's means are over its fits that did not fail (``fits`` of ``seeds``).
    """
    agg: dict[str, Any] = {"seeds": len(runs)}
    for mixture in ("land", "gmm"):
        ok = [r for r in runs.values() if "error" not in r[mixture]]
        keys = ["test_log_likelihood", "f_measure", "sample_nearest_code_distance", "fit_s"]
        if mixture == "land":
            keys += ["sample_nearest_code_distance_push_forward"]
            keys += ["s_per_em_iteration", "em_iterations"]
        agg[mixture] = {"fits": len(ok), "failed_fits": len(runs) - len(ok)}
        for key in keys:
            mean, std = _stat(ok, mixture, key)
            agg[mixture][key] = {"mean": mean, "std": std}
        agg[mixture]["nan_fits"] = sum(bool(r[mixture]["nan_fit"]) for r in runs.values())
        agg[mixture]["failed_samples"] = sum(len(r[mixture].get("sample_errors", {})) for r in ok)
    ok = [r for r in runs.values() if "error" not in r["land"]]
    agg["land"]["stop_reasons"] = dict(Counter(r["land"]["stop_reason"] for r in ok))
    for part, num in (("train", "num_train"), ("test", "num_test")):
        agg["land"][f"unconverged_log_maps_{part}"] = sum(
            r["land"][f"unconverged_log_maps_{part}"] for r in ok
        )
        agg["land"][f"log_maps_{part}"] = sum(r[num] * r["K"] for r in ok)
    maps = [r["density_maps"] for r in runs.values() if "density_maps" in r]
    if maps:
        agg["density_map_seconds"] = {
            m: mean_std([x[m]["seconds"] for x in maps if m in x])[0]
            for m in ("land", "gmm")
            if any(m in x for x in maps)
        }
        fractions = [x["land"]["unconverged_fraction"] for x in maps if "land" in x]
        agg["density_map_land_unconverged_fraction"] = (
            float(np.mean(fractions)) if fractions else None
        )
    f_l, f_g = agg["land"]["f_measure"]["mean"], agg["gmm"]["f_measure"]["mean"]
    d_l = agg["land"]["sample_nearest_code_distance"]["mean"]
    d_g = agg["gmm"]["sample_nearest_code_distance"]["mean"]
    measured = all(np.isfinite([f_l, f_g, d_l, d_g]))  # None: a mixture has no fit
    agg["targets"] = {
        "land_f_measure_above_gmm": bool(f_l > f_g) if measured else None,
        "land_samples_closer_than_gmm": bool(d_l < d_g) if measured else None,
    }
    return agg


def run_land(
    settings: ReproduceSettings,
    digit_sets: Sequence[Sequence[int]] = LAND_DIGIT_SETS,
    codes_per_class: int = 100,
    test_fraction: float = 0.2,
    samples_per_component: int = 40,
    density_grid: int = 24,
    density_margin: float = 0.1,
    land_options: dict[str, Any] | None = None,
    max_per_class: int | None = None,
) -> dict[str, Any]:
    """Run the LAND experiment and write its report (``<out_dir>/land``).

    Args:
        settings: shared settings (one model per digit set and seed of ``settings.seeds``).
        digit_sets: digit sets (K = the number of digits of a set).
        codes_per_class: training codes drawn per digit (seeded, stratified; all when fewer).
        test_fraction: held-out share of those codes.
        samples_per_component: samples per component (decoded as image grids).
        density_grid: points per axis of the density maps (0: none; d = 2 only). A LAND map
            costs ``density_grid^2 * K`` log maps.
        density_margin: widening of the density maps' box per side (fraction of the extent).
        land_options: :class:`geometry.LANDMixture` options on top of
            :data:`DEFAULT_LAND_OPTIONS` (``progress`` defaults to ``settings.progress``).
        max_per_class: images per digit of the training data (None: all; shared with the
            sampling and interpolation models).
    """
    digit_sets = [tuple(int(d) for d in ds) for ds in digit_sets]
    check_land(
        settings, digit_sets, codes_per_class, test_fraction, samples_per_component,
        density_grid, density_margin, land_options,
    )  # fmt: skip
    opts = {"progress": settings.progress, **DEFAULT_LAND_OPTIONS, **(land_options or {})}
    report = ExperimentReport("land", settings)
    per_set: dict[str, Any] = {}
    t_train = t_eval = 0.0
    jobs = [(ds, s) for ds in digit_sets for s in settings.seeds]
    latent_dims: set[int] = set()
    for digits, seed in tqdm(jobs, desc="land (digit set, seed)", disable=not settings.progress):
        tag = "".join(map(str, digits))
        t0 = time.perf_counter()
        tm = train_model(settings, "vae", digits, seed, data={"max_per_class": max_per_class})
        t_train += time.perf_counter() - t0
        t0 = time.perf_counter()
        codes, labels, _ = encode_codes(tm.model, [tm.datamodule.train_dataset])
        latent_dims.add(codes.shape[1])
        idx = torch.as_tensor(stratified_codes(labels, codes_per_class, seed))
        res = run_land_experiment(
            tm.model, codes[idx], labels[idx], report.dir, seed,
            num_components=len(digits), test_fraction=test_fraction,
            samples_per_component=samples_per_component, land_options=opts,
            density_grid_size=density_grid, density_margin=density_margin,
            prefix=f"d{tag}_s{seed}_", progress=settings.progress,
        )  # fmt: skip
        for name in res["figures"].values():
            report.figure_path(name[: -len(".png")])
        res["run_dir"] = tm.run_dir
        res["codes_per_class"] = {
            int(c): int((labels[idx] == c).sum()) for c in torch.unique(labels[idx])
        }
        res["eval_s"] = time.perf_counter() - t0
        t_eval += res["eval_s"]
        per_set.setdefault(tag, {"digits": list(digits), "seeds": {}})["seeds"][seed] = res
    for entry in per_set.values():
        entry["summary"] = _aggregate(entry["seeds"])
    _write_report(report, per_set, settings, codes_per_class, test_fraction, opts)
    other_dims = sorted(latent_dims - {2})
    if density_grid and other_dims:
        report.add_text(
            f"Density maps: skipped for latent dimension {other_dims} (maps need d = 2)."
        )
    report.add_text(
        f"Time: training (or reuse) {t_train:.0f} s, fits and evaluation {t_eval:.0f} s "
        f"({len(jobs)} fits of each mixture)."
    )
    summary: dict[str, float] = {}
    for tag, entry in per_set.items():
        agg = entry["summary"]
        for m in ("land", "gmm"):
            for key in ("test_log_likelihood", "f_measure", "sample_nearest_code_distance"):
                summary[f"land/d{tag}/{m}/{key}"] = agg[m][key]["mean"]
        summary[f"land/d{tag}/land/sample_nearest_code_distance_push_forward"] = agg["land"][
            "sample_nearest_code_distance_push_forward"
        ]["mean"]
        summary[f"land/d{tag}/land/s_per_em_iteration"] = agg["land"]["s_per_em_iteration"]["mean"]
        summary[f"land/d{tag}/land/nan_fits"] = float(agg["land"]["nan_fits"])
        summary[f"land/d{tag}/land/failed_samples"] = float(agg["land"]["failed_samples"])
    return report.write(
        {
            "digit_sets": per_set,
            "land_options": opts,
            "timing": {"train_seconds": t_train, "eval_seconds": t_eval},
        },
        summary,
    )


def _write_report(
    report: ExperimentReport,
    per_set: dict[str, Any],
    settings: ReproduceSettings,
    codes_per_class: int,
    test_fraction: float,
    opts: dict[str, Any],
) -> None:
    seeds = list(settings.seeds)
    report.add_text(
        f"Per digit set and training seed ({seeds}; mean ± std over seeds): {codes_per_class} "
        f"codes per digit (stratified, seeded), {100 * test_fraction:.0f} % held out; a "
        "K-component LAND mixture and a GMM (K = digits) fitted to the rest. Log-likelihoods "
        "are mean held-out log p(z), both in latent Lebesgue units (density with respect to "
        "the Lebesgue measure of the latent coordinates; the LAND's, defined with respect to "
        "the Riemannian volume unless land_options say otherwise, converted with "
        "log sqrt(det M(z)), with its Monte Carlo normaliser). F = clustering F-measure of "
        "the hard training responsibilities against "
        "the labels (in [0, 1]). A mixture's means are over its fits that did not fail. "
        "Sample distance = mean Euclidean latent distance of the "
        "samples to the nearest training code; LAND samples by importance resampling (the "
        "mixture's density) and, as push-forward, by the LAND authors' sampler (Exp of tangent "
        "Gaussian samples, without the volume term; not the LAND density). LAND options: "
        f"{ {k: v for k, v in opts.items() if k != 'progress'} }. {PAPER_FINDING}"
    )
    rows, fit_rows, target_rows = [], [], []
    for entry in per_set.values():
        a, name = entry["summary"], "{" + ",".join(map(str, entry["digits"])) + "}"
        seed0 = next(iter(entry["seeds"].values()))
        rows.append(
            [
                name,
                f"{seed0['num_train']}/{seed0['num_test']}",
                _fmt(tuple(a["land"]["test_log_likelihood"].values()), 2),
                _fmt(tuple(a["gmm"]["test_log_likelihood"].values()), 2),
                _fmt(tuple(a["land"]["f_measure"].values())),
                _fmt(tuple(a["gmm"]["f_measure"].values())),
                _fmt(tuple(a["land"]["sample_nearest_code_distance"].values())),
                _fmt(tuple(a["land"]["sample_nearest_code_distance_push_forward"].values())),
                _fmt(tuple(a["gmm"]["sample_nearest_code_distance"].values())),
            ]
        )
        L = a["land"]
        fit_rows.append(
            [
                name,
                _fmt(tuple(L["fit_s"].values()), 0),
                _fmt(tuple(L["s_per_em_iteration"].values()), 1),
                _fmt(tuple(L["em_iterations"].values()), 1),
                ", ".join(f"{k}: {v}" for k, v in L["stop_reasons"].items()) or "-",
                f"{L['unconverged_log_maps_train']}/{L['log_maps_train']}",
                f"{L['unconverged_log_maps_test']}/{L['log_maps_test']}",
                f"{L['nan_fits']}/{a['seeds']}",
                f"{L['failed_fits']}/{a['seeds']}",
                _fmt(tuple(a["gmm"]["fit_s"].values()), 2),
                _density_cell(a),
            ]
        )
        t = a["targets"]
        target_rows.append(
            [
                name,
                f"{_mean(L['f_measure'])} vs {_mean(a['gmm']['f_measure'])}",
                _verdict(t["land_f_measure_above_gmm"]),
                f"{_mean(L['sample_nearest_code_distance'])} vs "
                f"{_mean(a['gmm']['sample_nearest_code_distance'])}",
                _verdict(t["land_samples_closer_than_gmm"]),
            ]
        )
    report.add_table(
        "comparison",
        [
            "digits",
            "train/test codes",
            "held-out log-lik LAND",
            "GMM",
            "F LAND",
            "F GMM",
            "sample dist LAND",
            "LAND push-forward",
            "GMM",
        ],
        rows,
    )
    report.add_table(
        "land_fit",
        [
            "digits",
            "LAND fit (s)",
            "s per EM iteration",
            "EM iterations",
            "stop reasons",
            "unconverged log maps (train)",
            "(test)",
            "NaN fits",
            "failed fits",
            "GMM fit (s)",
            "density maps LAND / GMM (s; unconverged grid log maps)",
        ],
        fit_rows,
    )
    failures = [
        f"{{{','.join(map(str, e['digits']))}}} seed {seed} {m.upper()}: {run[m]['error']}"
        for e in per_set.values()
        for seed, run in e["seeds"].items()
        for m in ("land", "gmm")
        if "error" in run[m]
    ]
    if failures:
        report.add_text("Failed fits:\n\n" + "\n".join(f"- {f}" for f in failures))
    sample_failures = [
        f"{{{','.join(map(str, e['digits']))}}} seed {seed} {m.upper()} {method} sampler: {error}"
        for e in per_set.values()
        for seed, run in e["seeds"].items()
        for m in ("land", "gmm")
        for method, error in run[m].get("sample_errors", {}).items()
    ]
    if sample_failures:
        report.add_text(
            "Failed samples (the fit succeeded; the sample's distance is missing from the means):"
            "\n\n" + "\n".join(f"- {f}" for f in sample_failures)
        )
    report.add_text(
        "Targets of issue #14 (stated on digits 0/1 over 3 seeds; this run: "
        f"{len(seeds)} seed(s); shown for every set): LAND F-measure above the GMM's and LAND "
        "samples closer to the training codes than the GMM's, in the mean over seeds."
    )
    report.add_table(
        "targets",
        ["digits", "F LAND vs GMM", "target", "sample dist LAND vs GMM", "target"],
        target_rows,
    )


def _density_cell(agg: dict[str, Any]) -> str:
    if "density_map_seconds" not in agg:
        return "-"
    s = agg["density_map_seconds"]
    frac = agg["density_map_land_unconverged_fraction"]
    frac_text = "-" if frac is None else f"{100 * frac:.0f} %"
    land = f"{s['land']:.0f}" if "land" in s else "-"
    gmm = f"{s['gmm']:.2f}" if "gmm" in s else "-"
    return f"{land} / {gmm} ({frac_text})"


def _mean(stat: dict[str, float]) -> str:
    return f"{stat['mean']:.3f}" if np.isfinite(stat["mean"]) else "-"


def _verdict(met: bool | None) -> str:
    return "no fit" if met is None else "met" if met else "not met"
