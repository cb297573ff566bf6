"""experiments.land: the F-measure and the LAND-vs-GMM comparison on a linear decoder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from experiments import clustering_f_measure, run_land_experiment


def test_clustering_f_measure_by_hand() -> None:
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert clustering_f_measure(labels, np.array([5, 5, 5, 7, 7, 7])) == pytest.approx(1.0)
    # class 0: best cluster 0 (P = 1, R = 2/3, F = 0.8); class 1: cluster 1 (P = 3/4, R = 1)
    expected = 0.5 * 0.8 + 0.5 * (2 * 0.75 / 1.75)
    got = clustering_f_measure(labels, np.array([0, 0, 1, 1, 1, 1]))
    assert got == pytest.approx(expected)
    with pytest.raises(ValueError, match=r"labels \(6,\) and clusters \(5,\) must be equal"):
        clustering_f_measure(labels, np.zeros(5))


class _LinearDecoder(nn.Module):
    """``mean(z) = A z`` (non-square output, so no image grid), constant std."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("A", torch.tensor([[1.0, 0.2], [0.0, 1.0], [0.5, 0.5]]).double())

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        mean = z @ self.A.T
        return mean, torch.full_like(mean, 0.1)

    def embed(self, z: Tensor) -> Tensor:
        return z @ self.A.T


def test_run_land_experiment_on_two_separated_clusters(tmp_path) -> None:
    g = torch.Generator().manual_seed(0)
    codes = torch.cat(
        [
            0.3 * torch.randn(30, 2, generator=g, dtype=torch.float64),
            0.3 * torch.randn(30, 2, generator=g, dtype=torch.float64) + 3.0,
        ]
    )
    labels = np.repeat([0, 1], 30)
    opts = {"geodesic_options": {"num_nodes": 4}, "graph_k": 0, "num_mc_samples": 16}
    opts |= {"newton_steps": 1, "exp_steps": 2, "oversample": 2}  # Exp is exact here
    res = run_land_experiment(
        _LinearDecoder(), codes, labels, tmp_path, seed=1, samples_per_component=10,
        land_options={**opts, "max_iterations": 3, "progress": False},
    )  # fmt: skip
    assert res["num_train"] == 54 and res["num_test"] == 6 and res["K"] == 2
    for name in ("land", "gmm"):
        assert res[name]["f_measure"] == pytest.approx(1.0)
        assert 0 < res[name]["sample_nearest_code_distance"] < 1.0
    assert 0 < res["land"]["sample_nearest_code_distance_push_forward"] < 1.0
    # a constant metric: the LAND is the GMM, so the held-out likelihoods agree
    assert res["land"]["test_log_likelihood"] == pytest.approx(
        res["gmm"]["test_log_likelihood"], abs=0.05
    )
    assert res["land"]["unconverged_log_maps_train"] == 0
    assert json.loads((tmp_path / "land_results.json").read_text())["K"] == 2
    with pytest.raises(ValueError, match="test_fraction must be in"):
        run_land_experiment(_LinearDecoder(), codes, labels, tmp_path, test_fraction=1.5)


class _StripDecoder(nn.Module):
    """``mean(z) = (tanh z_1, z_2)``: the flat strip of :class:`geometry.toy_models.
    TanhStripEmbed`, whose geodesics run off to infinity where ``tanh z_1`` reaches 1."""

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        mean = torch.stack([torch.tanh(z[:, 0]), z[:, 1]], dim=1)
        return mean, torch.full_like(mean, 0.1)

    def embed(self, z: Tensor) -> Tensor:
        return self.decode(z)[0]


def test_a_failed_sampler_is_recorded_without_failing_the_fit(tmp_path) -> None:
    """Codes near the strip's edge: some ``Exp`` shots of the fitted components run off it.
    The exact sampler resamples the others; the push-forward one needs every shot, raises,
    and that is recorded as a missing sample distance, not as a failed LAND fit."""
    g = torch.Generator().manual_seed(1)
    u1 = 0.6 + 0.39 * torch.rand(60, generator=g, dtype=torch.float64)  # up to tanh z_1 = 0.99
    z2 = 0.4 * torch.randn(60, generator=g, dtype=torch.float64)
    codes = torch.stack([torch.atanh(u1), z2 + torch.tensor([0.0, 3.0]).repeat_interleave(30)], 1)
    labels = np.repeat([0, 1], 30)
    opts = {**_EXACT_EXP, "newton_steps": 2, "exp_steps": 8, "oversample": 1}
    res = run_land_experiment(
        _StripDecoder(), codes, labels, tmp_path, seed=1, samples_per_component=100,
        land_options={**opts, "max_iterations": 0},
    )  # fmt: skip
    land = res["land"]
    assert "error" not in land and land["f_measure"] == pytest.approx(1.0)
    assert 0 < land["sample_nearest_code_distance"] < 1.0  # the exact sampler drew
    assert land["sample_nearest_code_distance_push_forward"] is None
    assert set(land["sample_errors"]) == {"push_forward"}
    assert "FloatingPointError" in land["sample_errors"]["push_forward"]
    assert land["nan_fit"] is False and res["gmm"]["sample_errors"] == {}


# ---------------------------------------------------------------------------- density maps


def _two_clusters(n: int = 30) -> tuple[Tensor, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    codes = torch.cat(
        [
            0.3 * torch.randn(n, 2, generator=g, dtype=torch.float64),
            0.3 * torch.randn(n, 2, generator=g, dtype=torch.float64) + 3.0,
        ]
    )
    return codes, np.repeat([0, 1], n)


_EXACT_EXP = {"geodesic_options": {"num_nodes": 4}, "graph_k": 0, "num_mc_samples": 16}
_EXACT_EXP |= {"newton_steps": 1, "exp_steps": 2, "oversample": 2, "progress": False}


def _gaussian_mixture_log_prob(z: Tensor, means: Tensor, covs: Tensor, weights: Tensor) -> Tensor:
    comps = torch.distributions.MultivariateNormal(means.double(), covs.double())
    lp = comps.log_prob(z.double()[:, None, :]) + weights.double().log()  # (n, K)
    return torch.logsumexp(lp, dim=1)


def test_density_grid_covers_the_codes_box_with_its_margin() -> None:
    from experiments.land_density import density_grid

    codes = torch.tensor([[0.0, -1.0], [2.0, 3.0], [1.0, 0.0]], dtype=torch.float64)
    xs, ys, pts = density_grid(codes, 5, 0.25)
    assert xs.tolist() == pytest.approx([-0.5, 0.25, 1.0, 1.75, 2.5])
    assert ys.tolist() == pytest.approx([-2.0, -0.5, 1.0, 2.5, 4.0])
    assert pts.shape == (25, 2) and pts[7].tolist() == pytest.approx([float(xs[2]), float(ys[1])])
    with pytest.raises(ValueError, match=r"need \(n, 2\) codes, got shape \(3, 3\)"):
        density_grid(torch.zeros(3, 3), 5, 0.1)
    with pytest.raises(ValueError, match="grid_size must be an integer >= 2, got 1"):
        density_grid(codes, 1, 0.1)


def test_land_density_map_of_a_linear_decoder_is_the_gaussian_mixture_closed_form() -> None:
    from experiments import latent_density_maps
    from geometry import EuclideanGMM, LANDMixture

    codes, _ = _two_clusters()
    dec = _LinearDecoder()
    land = LANDMixture(dec.embed, 2, seed=0, max_iterations=2, **_EXACT_EXP).fit(codes)
    gmm = EuclideanGMM(2, seed=0).fit(codes)
    maps = latent_density_maps({"land": land, "gmm": gmm}, codes, grid_size=6, margin=0.2)
    gx, gy = np.meshgrid(maps["xs"], maps["ys"])  # (G, G): row i is ys[i]
    grid = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1))  # (G * G, 2)
    # constant metric A^T A: the LAND (latent Lebesgue density) is a Gaussian mixture in z with
    # the fitted means, tangent covariances and weights, normaliser included
    exact = _gaussian_mixture_log_prob(grid, land.means, land.covariances, land.weights)
    np.testing.assert_allclose(maps["log_density"]["land"].ravel(), exact.numpy(), rtol=1e-6)
    exact_gmm = _gaussian_mixture_log_prob(grid, gmm.means, gmm.covariances, gmm.weights)
    np.testing.assert_allclose(maps["log_density"]["gmm"].ravel(), exact_gmm.numpy(), rtol=1e-8)
    assert maps["log_density"]["land"].shape == (6, 6) and maps["converged"]["land"].all()
    assert maps["converged"]["gmm"] is None and maps["seconds"]["land"] > 0


def test_run_land_experiment_writes_density_maps_and_flags_no_nan(tmp_path) -> None:
    codes, labels = _two_clusters(20)
    res = run_land_experiment(
        _LinearDecoder(), codes, labels, tmp_path, seed=0, samples_per_component=4,
        land_options={**_EXACT_EXP, "max_iterations": 1}, density_grid_size=4, prefix="x_",
    )  # fmt: skip
    assert res["figures"] == {"density_maps": "x_density_maps.png"}  # no image grids: D = 3
    assert (tmp_path / "x_density_maps.png").is_file()
    assert (tmp_path / "x_land_results.json").is_file()
    assert res["density_maps"]["land"]["unconverged_fraction"] == 0.0
    assert res["density_maps"]["gmm"]["unconverged_fraction"] is None
    assert not res["land"]["nan_fit"] and not res["gmm"]["nan_fit"]
    assert res["land"]["em_iterations"] == 1 and res["land"]["fit_s"] > 0


# ---------------------------------------------------------------------------- the experiment


def test_stratified_codes_take_the_same_share_of_every_label() -> None:
    from experiments.land_report import stratified_codes

    labels = torch.tensor([0] * 30 + [1] * 8 + [2] * 20)
    idx = stratified_codes(labels, 10, seed=3)
    assert [int((labels[idx] == c).sum()) for c in range(3)] == [10, 8, 10]
    assert np.array_equal(idx, stratified_codes(labels, 10, seed=3))
    assert not np.array_equal(idx, stratified_codes(labels, 10, seed=4))


def test_check_land_names_the_bad_value_before_any_work(tmp_path) -> None:
    from experiments import ReproduceSettings, check_land
    from pipeline import UserError

    settings = ReproduceSettings(wandb_mode="disabled", out_dir=str(tmp_path / "rep"))
    bad = [
        ({"codes_per_class": 2}, "codes_per_class=2 must be an integer >= 5"),
        ({"test_fraction": 1.0}, r"test_fraction=1.0 must be a number in \(0, 1\)"),
        ({"samples_per_component": 0}, "samples_per_component=0 must be an integer >= 1"),
        ({"density_grid": 1}, r"density_grid=1 must be 0 \(no density maps\) or an integer >= 2"),
        ({"density_margin": -1}, "density_margin=-1 must be a number >= 0"),
        ({"land_options": {"seed": 3}}, r"must not set \['seed'\]"),
        ({"land_options": {"mean_step": 2.0}}, r"mean_step must be a number in \(0, 1\], got 2.0"),
        ({"land_options": {"nope": 1}}, "unexpected keyword argument 'nope'"),
        ({"digit_sets": [[0, 0]]}, r"digit set \[0, 0\] needs at least 2 distinct digits"),
        ({"digit_sets": [[0, 12]]}, "12"),
    ]
    for options, message in bad:
        with pytest.raises(UserError, match=message):
            check_land(settings, **options)
    check_land(settings, land_options={"max_iterations": 2, "geodesic_options": {"num_nodes": 6}})
    assert not (tmp_path / "rep").exists()


@pytest.mark.slow
def test_land_experiment_end_to_end_at_a_tiny_size(tmp_path, wandb_offline_env) -> None:
    from experiments.cli import main

    argv = [
        *("--experiment", "land", "--out", str(tmp_path / "reports")),
        *("--runs-root", str(tmp_path / "runs"), "--seeds", "0", "1"),
        *("--stage1-epochs", "3", "--stage2-epochs", "1", "--wandb-mode", "offline"),
        "--no-progress",
    ]
    options = [
        "digit_sets=[[0,1]]",
        "codes_per_class=8",
        "samples_per_component=3",
        "density_grid=3",
        "max_per_class=60",
        'land_options={"max_iterations": 1, "num_mc_samples": 8, "newton_steps": 0, '
        '"exp_steps": 8, "exp_rtol": null, "geodesic_options": {"num_nodes": 5}}',
    ]
    for opt in options:
        argv += ["--option", f"land.{opt}"]
    assert main(argv) == 0
    folder = tmp_path / "reports" / "land"
    res = json.loads((folder / "results.json").read_text())
    report = (folder / "report.md").read_text()
    assert report.startswith("# land") and "latent Lebesgue units" in report
    assert "| {0,1} |" in report and "Targets of issue #14" in report
    assert res["wandb"]["mode"] == "offline"
    assert res["figures"] and all((folder / f).is_file() for f in res["figures"].values())
    entry = res["digit_sets"]["01"]
    assert sorted(entry["seeds"]) == ["0", "1"]
    for seed in ("0", "1"):
        run = entry["seeds"][seed]
        assert run["codes_per_class"] == {"0": 8, "1": 8}
        assert run["num_train"] + run["num_test"] == 16
        if "error" not in run["land"]:
            assert f"d01_s{seed}_density_maps.png" in res["figures"].values()
            assert run["land"]["em_iterations"] == 1
            assert run["land"]["unconverged_log_maps_train"] <= run["num_train"] * 2
        else:  # a clear error, listed in the report
            assert run["land"]["seconds_to_failure"] > 0 and not run["land"]["nan_fit"]
            assert f"seed {seed} LAND: {run['land']['error']}" in report
        assert f"d01_s{seed}_gmm_samples.png" in res["figures"].values()
    agg = entry["summary"]
    assert agg["seeds"] == 2 and agg["land"]["failed_fits"] + agg["land"]["fits"] == 2
    assert agg["gmm"]["fits"] == 2 and agg["gmm"]["nan_fits"] == 0
    targets = agg["targets"]
    assert set(targets) == {"land_f_measure_above_gmm", "land_samples_closer_than_gmm"}
    assert all((v is None) == (agg["land"]["fits"] == 0) for v in targets.values())
    gmm_f = [entry["seeds"][s]["gmm"]["f_measure"] for s in ("0", "1")]
    assert agg["gmm"]["f_measure"]["mean"] == pytest.approx(np.mean(gmm_f))
    assert agg["gmm"]["f_measure"]["std"] == pytest.approx(np.std(gmm_f, ddof=1))
    assert res["summary"]["land/d01/gmm/f_measure"] == agg["gmm"]["f_measure"]["mean"]


def _seed_result(f_land: float, f_gmm: float, d_land: float, d_gmm: float) -> dict:
    common = {"test_log_likelihood": -1.0, "fit_s": 2.0, "nan_fit": False}
    land = {**common, "f_measure": f_land, "sample_nearest_code_distance": d_land}
    land |= {"sample_nearest_code_distance_push_forward": d_land / 2}
    land |= {"s_per_em_iteration": 1.0, "em_iterations": 2, "stop_reason": "max_iterations"}
    land |= {"unconverged_log_maps_train": 3, "unconverged_log_maps_test": 1}
    gmm = {**common, "f_measure": f_gmm, "sample_nearest_code_distance": d_gmm}
    return {"num_train": 10, "num_test": 4, "K": 2, "land": land, "gmm": gmm}


def test_aggregate_over_seeds_counts_failures_and_marks_the_targets() -> None:
    from experiments.land_report import _aggregate

    failed = _seed_result(0, 0.7, 0, 0.5)
    failed["land"] = {"error": "FloatingPointError: ...", "nan_fit": False}
    runs = {0: _seed_result(0.9, 0.8, 0.2, 0.4), 1: _seed_result(0.7, 0.8, 0.3, 0.2), 2: failed}
    agg = _aggregate(runs)
    assert agg["seeds"] == 3 and agg["land"]["fits"] == 2 and agg["land"]["failed_fits"] == 1
    assert agg["land"]["f_measure"]["mean"] == pytest.approx(0.8)
    assert agg["land"]["f_measure"]["std"] == pytest.approx(np.std([0.9, 0.7], ddof=1))
    assert agg["gmm"]["fits"] == 3 and agg["gmm"]["f_measure"]["mean"] == pytest.approx(
        0.77, abs=4e-3
    )
    assert agg["land"]["unconverged_log_maps_train"] == 6 and agg["land"]["log_maps_train"] == 40
    assert agg["land"]["stop_reasons"] == {"max_iterations": 2}
    pushed = agg["land"]["sample_nearest_code_distance_push_forward"]
    assert pushed["mean"] == pytest.approx(0.125) and agg["land"]["failed_samples"] == 0
    runs[1]["land"]["sample_nearest_code_distance_push_forward"] = None  # its sampler failed
    runs[1]["land"]["sample_errors"] = {"push_forward": "FloatingPointError: ..."}
    partial = _aggregate(runs)["land"]
    assert partial["failed_samples"] == 1 and partial["fits"] == 2
    assert partial["sample_nearest_code_distance_push_forward"]["mean"] == pytest.approx(0.1)
    del runs[1]["land"]["sample_errors"]
    runs[1]["land"]["sample_nearest_code_distance_push_forward"] = 0.15
    # F: 0.8 vs 0.7667 (met); distance: 0.25 vs 0.3667 (met)
    assert agg["targets"] == {
        "land_f_measure_above_gmm": True,
        "land_samples_closer_than_gmm": True,
    }
    runs[0]["land"]["f_measure"] = 0.5  # LAND mean F 0.6 < GMM's
    assert _aggregate(runs)["targets"]["land_f_measure_above_gmm"] is False
    only_failed = _aggregate({0: failed})
    assert only_failed["targets"]["land_f_measure_above_gmm"] is None
