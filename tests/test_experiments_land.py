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
    # a constant metric: the LAND is the GMM, so the held-out likelihoods agree
    assert res["land"]["test_log_likelihood"] == pytest.approx(
        res["gmm"]["test_log_likelihood"], abs=0.05
    )
    assert res["land"]["unconverged_log_maps_train"] == 0
    assert json.loads((tmp_path / "land_results.json").read_text())["K"] == 2
    with pytest.raises(ValueError, match="test_fraction must be in"):
        run_land_experiment(_LinearDecoder(), codes, labels, tmp_path, test_fraction=1.5)
