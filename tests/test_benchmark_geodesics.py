"""The geodesic benchmark's pieces (:mod:`benchmarks`): the synthetic decoder family, the
independent Adam reference, the length measurement, and a smoke run of its command line (slow)."""

from __future__ import annotations

import json
import math
import os
import re

import pytest
import torch

import geometry as G
from benchmarks import decoders, geodesics, geodesics_cli, measure, methods
from geometry.toy_models import (
    WALL_STEEPNESS,
    LinearEmbed,
    SphereEmbed,
    ToyMLPDecoder,
    walled_decoder,
)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.usefixtures("single_thread")


def test_walled_decoders_are_seeded_and_steeper_walls_are_higher() -> None:
    a, b = walled_decoder("steep", seed=3), walled_decoder("steep", seed=3)
    z = torch.randn(16, 2)
    torch.testing.assert_close(a.embed(z), b.embed(z), rtol=0, atol=0)
    assert not torch.equal(a.embed(z), walled_decoder("steep", seed=4).embed(z))
    assert a.embed(z).shape == (16, 200)
    assert all(not p.requires_grad for p in a.parameters())
    # sigma is small at the data-like points, and between them it rises with the steepness
    grid = torch.cartesian_prod(torch.linspace(-2, 2, 41), torch.linspace(-2, 2, 41))
    mean_sigma = {}
    for name in WALL_STEEPNESS:
        dec = walled_decoder(name, seed=0)
        pts = dec.sample_data(256, seed=1)
        assert pts.shape == (256, 2)
        sigma_data = dec.decode(pts)[1].mean(dim=1)  # (256,)
        assert float(sigma_data.median()) < 0.5
        mean_sigma[name] = float(dec.decode(grid)[1].mean())
    assert mean_sigma["soft"] < mean_sigma["medium"] < mean_sigma["steep"]
    assert mean_sigma["steep"] > 10 * mean_sigma["soft"]
    with pytest.raises(ValueError, match="unknown steepness 'cliff'"):
        walled_decoder("cliff")
    with pytest.raises(ValueError, match="must be a finite number > 0, got -1"):
        walled_decoder(-1.0)


def test_mlp_decoder_is_seeded_and_smooth() -> None:
    dec = ToyMLPDecoder(latent_dim=8, seed=2)
    z = dec.sample_data(32, seed=5)
    assert z.shape == (32, 8)
    torch.testing.assert_close(z, ToyMLPDecoder(latent_dim=8, seed=2).sample_data(32, seed=5))
    h = dec.embed(z)
    assert h.shape == (32, 200) and bool(((h > 0) & (h < 1)).all())
    torch.testing.assert_close(h, ToyMLPDecoder(latent_dim=8, seed=2).embed(z))
    # no wall: the metric's scale far from the prior's mass stays within a few times its
    # scale at the origin (a walled decoder's grows by orders of magnitude)
    M0 = G.metric_tensor(dec.embed, torch.zeros(1, 8)).diagonal(dim1=1, dim2=2).sum()
    M3 = G.metric_tensor(dec.embed, torch.full((1, 8), 3.0)).diagonal(dim1=1, dim2=2).sum()
    assert float(M3 / M0) < 10


def test_reference_adam_finds_straight_lines_and_great_circles() -> None:
    g = torch.Generator().manual_seed(0)
    A = torch.randn(5, 3, generator=g, dtype=torch.float64)
    z0, z1 = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g)
    z1 = z1.double()
    lin = methods.run_reference_adam(LinearEmbed(A), z0, z1, num_nodes=8, iterations=50, lr=0.02)
    exact = ((z1 - z0) @ A.T).norm(dim=1)
    torch.testing.assert_close(lin["reported"], exact, rtol=1e-9, atol=0)  # the line is optimal
    sphere = SphereEmbed()
    # latitude circles near the pole: far longer than the great circles between their ends
    theta = torch.tensor([[0.6, 0.8], [0.6, 1.0]], dtype=torch.float64)  # (start/end, pairs)
    phi = torch.tensor([[-1.2, 0.0], [1.2, 2.5]], dtype=torch.float64)
    p0 = torch.stack([theta[0], phi[0]], dim=1)  # (2, 2)
    p1 = torch.stack([theta[1], phi[1]], dim=1)
    res = methods.run_reference_adam(sphere, p0, p1, num_nodes=32, iterations=800, lr=0.02)
    great = sphere.great_circle(p0, p1)
    line = G.chord_length(sphere, G.straight_lines(p0, p1, 257))
    assert bool((line > great * 1.05).all())  # the start is measurably off
    fine = measure.chord_sum(sphere, G.subdivide_curves(res["curves"], 16))
    torch.testing.assert_close(fine, great, rtol=2e-3, atol=0)


def test_fine_lengths_and_ratio_statistics() -> None:
    A = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    z0 = torch.zeros(3, 2, dtype=torch.float64)
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    curves = G.straight_lines(z0, z1, 5)
    args = geodesics_cli.parse_args(
        ["--decoders", "tanh_d8", "--fixed-measure", "--fine-substeps", "8"]
    )
    lengths, how = measure.fine_lengths(LinearEmbed(A), curves, args)
    torch.testing.assert_close(lengths, ((z1 - z0) @ A.T).norm(dim=1))
    assert how.startswith("every segment split 8 times")
    stats = geodesics.ratio_stats(torch.tensor([1.0, 1.005, 1.02, 1.5]))
    assert stats["n_gt_1.01"] == 2 and stats["frac_gt_1.01"] == 0.5 and stats["max"] == 1.5
    err = geodesics.error_stats(
        torch.tensor([0.9, 1.0]), torch.tensor([1.0, 1.0], dtype=torch.float64)
    )
    assert math.isclose(err["max_abs"], 0.1, rel_tol=1e-6)
    assert math.isclose(err["min_signed"], -0.1, rel_tol=1e-6)


def test_bad_options_are_clear_errors(capsys) -> None:
    with pytest.raises(SystemExit, match="unknown decoder 'mlp_d3'"):
        geodesics_cli.parse_args(["--decoders", "mlp_d3"])
    with pytest.raises(SystemExit, match="--pairs is too small: 1"):
        geodesics_cli.parse_args(["--pairs", "1"])
    with pytest.raises(SystemExit, match="--ours-options must be a JSON object"):
        geodesics.resolve_ours_options("[1, 2]", torch.zeros(1, 2))
    assert decoders.parse_decoders("synthetic,wall_soft") == list(decoders.SYNTHETIC_DECODERS)
    assert geodesics_cli.parse_args(["--checkpoint", "x.ckpt"]).decoder_names == ["mlp_d2"]


@pytest.mark.slow
def test_benchmark_smoke_run_on_synthetic_decoders(tmp_path, capsys) -> None:
    report = tmp_path / "bench.json"
    cache = tmp_path / "refs.pt"
    argv = ["--decoders", "wall_soft,tanh_d8", "--quick", "--pairs", "3", "--json",
            str(report), "--reference-cache", str(cache)]  # fmt: skip
    assert geodesics_cli.main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"^wall_soft\s+2\s", out, re.M) and re.search(r"^tanh_d8\s+8\s", out, re.M)
    result = json.loads(report.read_text())
    for name in ("wall_soft", "tanh_d8"):
        rep = result["decoders"][name]
        assert rep["pairs"] == 3 and rep["embed_dim"] == 200
        methods = rep["methods"]
        assert {"ours", "adam", "graph", "line"} <= set(methods)
        best = torch.tensor([min(v) for v in zip(*(rep["per_pair"][m] for m in rep["best_of"]))])
        for m in rep["best_of"]:  # "best" is the shortest of them, pair by pair
            ratio = torch.tensor(rep["per_pair"][m]) / best
            assert float(ratio.min()) >= 1 - 1e-12
            assert math.isclose(methods[m]["ratio_to_best"]["max"], float(ratio.max()),
                                rel_tol=1e-5)  # fmt: skip
        assert 0 <= methods["ours"]["converged_fraction"] <= 1
        assert methods["ours"]["geodesics_per_s"] > 0
        assert set(rep["targets"]) >= {"ours_within_1%_of_best_on_every_pair"}
    # a second run takes the reference curves from the cache and measures them again
    argv = ["--decoders", "wall_soft", "--quick", "--pairs", "3", "--no-stochman", "--json",
            str(report), "--reference-cache", str(cache),
            "--ours-options", '{"max_iterations": 2}']  # fmt: skip
    assert geodesics_cli.main(argv) == 0
    again = json.loads(report.read_text())["decoders"]["wall_soft"]
    assert again["methods"]["adam"].get("from_cache") is True
    assert again["per_pair"]["adam"] == result["decoders"]["wall_soft"]["per_pair"]["adam"]
