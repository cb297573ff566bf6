"""The experiments package: its measures against hand computations and closed forms, its bad-input
errors, and every experiment end to end at a tiny size (slow)."""

from __future__ import annotations

import itertools
import json
import math
import os

import numpy as np
import pytest
import torch

from experiments import (
    EXPERIMENTS,
    ReproduceSettings,
    check_table1,
    f_measure,
    get_experiment,
    importance_log_marginal,
    k_medoids,
    path_smoothness,
    prior_log_marginal,
    selected_experiments,
)
from experiments.cli import main
from experiments.clustering import medoid_cost, stratified_subsets
from experiments.interpolation import paired_comparison
from geometry import random_walk
from pipeline import UserError

BUILT_IN = ("table1", "variance", "interpolation", "sampling")

# ---------------------------------------------------------------------------- F-measure


def test_f_measure_perfect_clustering_is_100_under_any_renaming():
    y = np.array([3, 3, 4, 4, 4, 7, 7])
    assert f_measure(y, y) == pytest.approx(100.0)
    assert f_measure(y, np.array([2, 2, 0, 0, 0, 1, 1])) == pytest.approx(100.0)


def test_f_measure_of_a_hand_computed_mix():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    c = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    # class 0 -> cluster 0: P = 1, R = 3/4, F = 6/7; class 1 -> cluster 1: P = 4/5, R = 1, F = 8/9
    assert f_measure(y, c) == pytest.approx(100 * (0.5 * 6 / 7 + 0.5 * 8 / 9))
    # one cluster for two balanced classes: P = 1/2, R = 1, F = 2/3 for each class
    assert f_measure(y, np.zeros(8, int)) == pytest.approx(200 / 3)


def test_f_measure_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="must be equal"):
        f_measure([0, 1], [0, 1, 1])


# ---------------------------------------------------------------------------- k-medoids


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_k_medoids_reaches_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    pts = np.concatenate([rng.normal(c, 0.7, size=(5, 2)) for c in ((0, 0), (3, 0), (0, 3))])
    D = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    brute = min(medoid_cost(D, m) for m in itertools.combinations(range(len(pts)), 3))
    assign, medoids, cost = k_medoids(D, 3, restarts=10, seed=seed)
    assert cost == pytest.approx(brute, rel=1e-12)
    assert medoid_cost(D, medoids) == pytest.approx(cost)
    assert np.array_equal(assign, D[:, medoids].argmin(1))


def test_k_medoids_bad_input():
    with pytest.raises(ValueError, match="k=5"):
        k_medoids(np.zeros((3, 3)), 5)
    with pytest.raises(ValueError, match="square"):
        k_medoids(np.zeros((3, 2)), 2)


def test_stratified_subsets_partition_with_equal_class_shares():
    y = np.repeat([0, 1, 2], [40, 33, 27])
    subsets = stratified_subsets(y, 4, seed=0)
    joined = np.sort(np.concatenate(subsets))
    assert np.array_equal(joined, np.arange(len(y)))
    for cls, n in ((0, 40), (1, 33), (2, 27)):
        counts = [int((y[s] == cls).sum()) for s in subsets]
        assert max(counts) - min(counts) <= 1 and sum(counts) == n


# ---------------------------------------------------------------------------- smoothness


def test_path_smoothness_on_hand_made_sequences():
    v = torch.tensor([1.0, -1.0, 0.0, 1.0])  # ||v||^2 = 3
    ramp = torch.stack([t * v for t in range(5)])  # (5, 4): steps of v
    jump = torch.stack([0 * v, 0 * v, 0 * v, 4 * v, 4 * v])  # same ends, one jump of 4v
    const = torch.ones(5, 4)
    out = path_smoothness(torch.stack([ramp, jump, const]))
    assert out["max_sq_change"].tolist() == pytest.approx([3.0, 48.0, 0.0])
    assert out["total_sq_change"].tolist() == pytest.approx([12.0, 48.0, 0.0])
    with pytest.raises(ValueError, match="T >= 2"):
        path_smoothness(torch.zeros(2, 1, 4))


def test_paired_comparison_counts_the_smaller_geodesic_measures():
    r = paired_comparison(np.array([1.0, 2.0, 3.0, 10.0]), np.array([2.0, 3.0, 4.0, 5.0]))
    assert r["fraction_geodesic_smaller"] == pytest.approx(0.75)
    assert r["median_ratio"] == pytest.approx(np.median([0.5, 2 / 3, 0.75, 2.0]))


def test_interpolants_are_refined_geodesics_never_longer_than_the_line_or_the_graph_path():
    from experiments.interpolation import geodesic_and_straight
    from geometry import curve_length
    from geometry.toy_models import ToyRBFDecoder

    dec = ToyRBFDecoder(data_dim=24, num_centers=6, seed=3).double()
    codes = dec.sample_data(150, spread=0.3, seed=0)
    rng = np.random.default_rng(0)
    src = rng.integers(150, size=12)
    tgt = (src + 1 + rng.integers(149, size=12)) % 150
    out = geodesic_and_straight(dec.embed, codes, src, tgt, graph_k=8, num_nodes=12)
    geo, line = out["geodesic"], out["straight"]
    assert geo.shape == line.shape == (12, 12, 2)
    assert torch.equal(geo[:, 0], codes[src]) and torch.equal(geo[:, -1], codes[tgt])
    assert bool((out["geodesic_length"] <= out["straight_length"]).all())
    assert bool((out["geodesic_length"] <= out["graph_length"] * (1 + 2e-3)).all())
    # the refinement shortens the graph paths (their chords cut across the metric's walls)
    assert float((out["geodesic_length"] / out["graph_length"]).median()) < 0.99
    shorter = out["geodesic_length"] < 0.999 * out["straight_length"]
    assert float(shorter.float().mean()) >= 0.75 and not bool(out["line_kept"][shorter].any())
    assert out["converged"].float().mean() >= 0.5
    # the reported lengths are the returned curves' measured lengths
    torch.testing.assert_close(
        curve_length(dec.embed, geo, rtol=1e-4), out["geodesic_length"], rtol=3e-3, atol=0
    )


def test_interpolation_rejects_a_bad_node_count():
    from experiments.interpolation import check_interpolation

    with pytest.raises(UserError, match="num_nodes=1 must be an integer >= 2"):
        check_interpolation(ReproduceSettings(wandb_mode="disabled"), (0, 1), 20, num_nodes=1)


# ---------------------------------------------------------------------------- marginal likelihood


class _LinearGaussian:
    """p(z) = N(0, I_2), p(x|z) = N(W z + b, s^2 I_D): p(x) = N(b, W W^T + s^2 I)."""

    def __init__(self, s: float = 0.6):
        self.W = torch.tensor([[1.5, 0.0], [0.0, 0.8], [0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)
        self.b = torch.tensor([0.2, -0.1, 0.3, 0.0], dtype=torch.float64)
        self.s = s

    def decode(self, z):
        z = z.double()
        mu = z @ self.W.T + self.b
        return mu, torch.full_like(mu, self.s)

    def posterior(self, x):
        """The exact posterior (diagonal since W's columns are orthogonal) as an encoder."""
        prec = 1 + (self.W**2).sum(0) / self.s**2  # (2,)
        mean = ((x.double() - self.b) @ self.W) / self.s**2 / prec  # (N, 2)
        return mean, (-prec.log()).expand_as(mean)

    def log_px(self, x):
        cov = self.W @ self.W.T + self.s**2 * torch.eye(4, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x.double())


def test_prior_estimator_matches_the_linear_gaussian_closed_form():
    lg = _LinearGaussian()
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    est, se = prior_log_marginal(lg.decode, x, 2, 20_000, torch.Generator().manual_seed(0))
    exact = lg.log_px(x)
    assert torch.all(se > 0) and torch.all(se < 0.1)
    assert torch.all((est - exact).abs() < 4 * se + 1e-6), (est, exact, se)


def test_importance_estimator_is_exact_with_the_true_posterior_and_close_with_a_wide_one():
    lg = _LinearGaussian()
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    exact = lg.log_px(x)
    est, se = importance_log_marginal(lg.decode, lg.posterior, x, 200, torch.Generator())
    assert torch.allclose(est, exact, atol=1e-9) and torch.all(se < 1e-9)

    def wide(xb):
        mean, logvar = lg.posterior(xb)
        return mean + 0.3, logvar + math.log(4.0)  # shifted, 2x the posterior std

    est, se = importance_log_marginal(lg.decode, wide, x, 5000, torch.Generator().manual_seed(3))
    assert torch.all(se > 1e-4) and torch.all((est - exact).abs() < 4 * se + 1e-6)


# ---------------------------------------------------------------------------- walks


def test_random_walks_stay_finite_with_large_steps(rbf):
    z0 = torch.zeros(8, 2, dtype=torch.float64)
    for metric, kind in ((True, "first_order"), (True, "brownian"), (False, "first_order")):
        w = random_walk(rbf, z0, 30, 2.0, metric=metric, generator=torch.Generator(), kind=kind)
        assert w.shape == (8, 31, 2) and torch.isfinite(w).all()


# ---------------------------------------------------------------------------- bad input


def test_the_registry_holds_the_built_in_experiments_in_order():
    assert list(EXPERIMENTS)[:4] == list(BUILT_IN)
    assert all(EXPERIMENTS[n].check is not None for n in BUILT_IN)


def test_all_selects_the_experiments_registered_for_it_and_named_ones_once():
    quick = [n for n, e in EXPERIMENTS.items() if e.in_all]
    assert "land" not in quick and set(BUILT_IN) <= set(quick)
    assert selected_experiments(["all"]) == quick
    assert selected_experiments(["land", "all", "table1"]) == ["land", *quick]
    with pytest.raises(UserError, match="unknown experiment 'lnad'"):
        selected_experiments(["all", "lnad"])


def test_unknown_experiment_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(UserError, match="unknown experiment 'tabel1'; accepted: table1"):
        get_experiment("tabel1")
    runs = tmp_path / "runs"
    assert main(["--experiment", "tabel1", "--runs-root", str(runs), "--out", str(tmp_path)]) == 2
    assert "accepted: table1" in capsys.readouterr().err
    assert not runs.exists()


def test_bad_options_are_errors_before_any_training(tmp_path, capsys):
    runs = tmp_path / "runs"
    common = ["--runs-root", str(runs), "--out", str(tmp_path / "rep"), "--wandb-mode", "disabled"]
    bad = [
        (["--experiment", "table1", "--option", "table1.digit_sets=[[0,1,12]]"], "12"),
        (["--experiment", "table1", "--option", "table1.num_subsets=200"], "num_subsets=200"),
        (["--experiment", "table1", "--option", "table1.nope=1"], "no option 'nope'"),
        (["--experiment", "all", "--option", "variance.digits=[0,10]"], "10"),
        (["--experiment", "all", "--option", "land.codes_per_class=5"], "'land' is not selected"),
    ]
    for argv, message in bad:
        assert main(argv + common) == 2
        out = capsys.readouterr()
        assert message in out.err
        assert ("all: leaves out land" in out.out) == ("all" in argv)
    assert not runs.exists() and not (tmp_path / "rep").exists()


def test_check_table1_names_the_digits_and_subsets():
    settings = ReproduceSettings(wandb_mode="disabled")
    with pytest.raises(UserError, match=r"fewer than 5 points per digit"):
        check_table1(settings, [(0, 1)], num_subsets=20, max_per_class=50)
    with pytest.raises(UserError, match="at least 2 distinct digits"):
        check_table1(settings, [(3, 3)])
    with pytest.raises(UserError, match="seeds"):
        ReproduceSettings(seeds=[])


# ---------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_every_experiment_end_to_end_at_a_tiny_size(tmp_path, wandb_offline_env):
    argv = [
        *("--experiment", "table1", "--experiment", "variance"),
        *("--experiment", "interpolation", "--experiment", "sampling"),
        "--out",
        str(tmp_path / "reports"),
        "--runs-root",
        str(tmp_path / "runs"),
        "--seeds",
        "0",
        "--stage1-epochs",
        "3",
        "--stage2-epochs",
        "1",
        "--wandb-mode",
        "offline",
        "--no-progress",
        "--option",
        "table1.digit_sets=[[0,1],[3,4,7]]",
        "--option",
        "table1.num_subsets=2",
        "--option",
        "table1.max_per_class=40",
    ]
    for name, extra in (
        ("interpolation", ["num_pairs=8", "max_per_class=60", "num_strips=2"]),
        ("sampling", ["num_walks=16", "num_steps=5", "max_per_class=60"]),
        (
            "variance",
            ["num_test=4", "prior_samples=300", "importance_samples=30", "max_per_class=60"],
        ),
    ):
        for e in extra:
            argv += ["--option", f"{name}.{e}"]
    assert main(argv) == 0
    for name in BUILT_IN:
        folder = tmp_path / "reports" / name
        res = json.loads((folder / "results.json").read_text())
        assert (folder / "report.md").read_text().startswith(f"# {name}")
        assert res["figures"] and all((folder / f).is_file() for f in res["figures"].values())
        assert res["wandb"]["mode"] == "offline"
        assert any(p.startswith("offline-run-") for p in os.listdir(res["wandb"]["dir"] + "/../.."))
    t1 = json.loads((tmp_path / "reports" / "table1" / "results.json").read_text())
    scores = t1["digit_sets"]["347"]["seeds"]["0"]
    assert len(scores["euclidean"]) == len(scores["riemannian"]) == 2
    assert all(0 < v <= 100 for v in scores["euclidean"] + scores["riemannian"])
    assert "| {0,1} |" in (tmp_path / "reports" / "table1" / "report.md").read_text()
    walks = json.loads((tmp_path / "reports" / "sampling" / "results.json").read_text())["walks"]
    assert list(walks) == ["first_order", "brownian", "euclidean"]
    assert all(walks[k]["finite"] for k in walks)
    # the same noise and step size: the drift alone separates the two Riemannian walks
    assert walks["first_order"]["step_size"] == walks["brownian"]["step_size"]
    assert walks["first_order"]["path_distance_max"] != walks["brownian"]["path_distance_max"]
    var = json.loads((tmp_path / "reports" / "variance" / "results.json").read_text())["heads"]
    assert all(math.isfinite(var[h]["prior"]["mean"]) for h in ("mlp", "rbf"))
    # a second call reuses every trained model (no new run folders, all stages skipped)
    runs_before = sorted(os.listdir(tmp_path / "runs"))
    assert main(argv) == 0
    assert sorted(os.listdir(tmp_path / "runs")) == runs_before


def test_classical_mds_recovers_euclidean_configurations():
    from experiments.clustering import classical_mds

    pts = np.random.default_rng(0).normal(size=(20, 3))
    D = np.linalg.norm(pts[:, None] - pts[None], axis=-1)
    X = classical_mds(D, 3)
    assert np.allclose(np.linalg.norm(X[:, None] - X[None], axis=-1), D, atol=1e-8)


def test_clustering_handles_a_disconnected_graph():
    from experiments.clustering import _cluster_model

    g = torch.Generator().manual_seed(0)
    codes = torch.cat(
        [torch.randn(12, 2, generator=g) * 0.1, torch.randn(12, 2, generator=g) * 0.1 + 50]
    )
    labels = np.repeat([0, 1], 12)
    res = _cluster_model(
        lambda z: 3.0 * z, codes, labels, [np.arange(24)], 2, 0, 3, 5, False, "toy"
    )
    assert res["disconnected_pairs"] == [144]
    assert res["riemannian"] == [pytest.approx(100.0)] and res["euclidean"] == [
        pytest.approx(100.0)
    ]


def test_frechet_kmeans_centres_are_the_candidates_nearest_the_means():
    from experiments.clustering import frechet_kmeans

    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(c, 0.3, size=(10, 2)) for c in ((0, 0), (4, 0))])
    grid = np.stack(np.meshgrid(np.linspace(-1, 5, 61), np.linspace(-1, 1, 21)), -1).reshape(-1, 2)
    D = np.linalg.norm(pts[:, None] - grid[None], axis=-1)  # (20, candidates)
    assign, centres, cost = frechet_kmeans(D, 2, restarts=5, seed=0)
    assert f_measure(np.repeat([0, 1], 10), assign) == pytest.approx(100.0)
    for j, c in enumerate(centres):
        members = pts[assign == j]
        # Euclidean Fréchet mean = the centroid; the best candidate is the grid node nearest it
        nearest = np.argmin(np.linalg.norm(grid - members.mean(0), axis=1))
        assert c == nearest
    assert cost == pytest.approx(sum(D[i, centres[assign[i]]] ** 2 for i in range(20)))
