"""LAND mixture (geometry.land) and its Euclidean GMM baseline, against closed forms.

Linear decoder ``h(z) = A z``: constant metric ``A^T A``, ``Log_mu(z) = z - mu``, so a LAND is the
Gaussian ``N(mu, Sigma)`` in latent coordinates, i.e. a Gaussian in the coordinates ``R z`` of the
image plane (``A = Q R``). Embedded unit sphere in spherical coordinates: closed-form log map.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from geometry import ComponentCollapseError, EuclideanGMM, LANDMixture, exp_map
from geometry.land_normaliser import estimate_normaliser
from geometry.toy_models import LinearEmbed, SphereEmbed, TanhStripEmbed

F64 = torch.float64
A_LIN = torch.tensor([[2.0, 0.5], [0.0, 1.0], [1.0, 1.0]], dtype=F64)
# cheap settings for the EM's bookkeeping: coarse log maps, without the solver's second-order
# steps (tested in test_geometry_negative_curvature.py; here they only re-polish 4-node curves)
FAST = {
    "geodesic_options": {"num_nodes": 4, "tolerance": 1e-4, "second_order": False},
    "num_mc_samples": 16,
    "exp_steps": 8,
    "progress": False,
}
# straight-line starts and one Newton step: exact log maps for the linear decoder
LINE = {**FAST, "graph_k": 0, "newton_steps": 1, "exp_steps": 2}


def _gaussian(n: int, mean: list[float], chol: list[list[float]], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    L = torch.tensor(chol, dtype=F64)
    return torch.randn(n, 2, generator=g, dtype=F64) @ L.T + torch.tensor(mean, dtype=F64)


def _closed_form_log_prob(z: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """Latent density of the Gaussian on the image plane ``y = R z`` (``A = Q R``)."""
    _, R = torch.linalg.qr(A_LIN)  # (2, 2)
    image = torch.distributions.MultivariateNormal(R @ mean, R @ cov @ R.T)
    return image.log_prob(z @ R.T) + torch.linalg.slogdet(R)[1]


@pytest.mark.parametrize("base_measure", ["riemannian", "lebesgue"])
def test_linear_one_component_is_the_closed_form_gaussian(base_measure: str) -> None:
    true_mean, true_chol = [0.5, -1.0], [[0.6, 0.0], [0.3, 0.4]]
    z = _gaussian(150, true_mean, true_chol, seed=1)
    land = LANDMixture(LinearEmbed(A_LIN), 1, base_measure=base_measure, **LINE).fit(z)
    assert bool(land.converged_.all())
    sample_mean = z.mean(dim=0)
    sample_cov = (z - sample_mean).T @ (z - sample_mean) / z.shape[0]  # ML (biased)
    torch.testing.assert_close(land.means[0], sample_mean, atol=1e-8, rtol=0)
    torch.testing.assert_close(land.covariances[0], sample_cov, atol=1e-8, rtol=0)
    # and the truth to sampling error (4 standard errors of the mean / of the variances)
    cov = torch.tensor(true_chol, dtype=F64) @ torch.tensor(true_chol, dtype=F64).T
    se_mean = (cov.diagonal() / z.shape[0]).sqrt()
    assert bool(((land.means[0] - torch.tensor(true_mean, dtype=F64)).abs() < 4 * se_mean).all())
    se_var = cov.diagonal() * math.sqrt(2 / z.shape[0])
    assert bool(((land.covariances[0].diagonal() - cov.diagonal()).abs() < 4 * se_var).all())
    # normaliser: (2 pi)^(d/2) det(Sigma)^(1/2) (times the constant volume sqrt(det A^T A)
    # for the Riemannian measure), exactly (moment-matched base samples)
    log_z, se = land.log_normaliser
    log_volume = 0.5 * torch.logdet(A_LIN.T @ A_LIN)
    expected = 0.5 * torch.logdet(2 * math.pi * land.covariances[0])
    expected = expected + (log_volume if base_measure == "riemannian" else 0.0)
    torch.testing.assert_close(log_z[0], expected, atol=1e-9, rtol=0)
    assert float(se[0]) < 1e-9
    held_out = _gaussian(20, true_mean, true_chol, seed=2)
    reference = _closed_form_log_prob(held_out, land.means[0], land.covariances[0])
    torch.testing.assert_close(land.log_prob(held_out), reference, atol=1e-7, rtol=0)
    riemannian = land.log_prob(held_out, measure="riemannian")
    torch.testing.assert_close(riemannian, reference - log_volume, atol=1e-7, rtol=0)


def test_linear_two_components_agree_with_the_gmm_em() -> None:
    z = torch.cat(
        [
            _gaussian(60, [0.0, 0.0], [[0.4, 0.0], [0.1, 0.3]], seed=3),
            _gaussian(60, [2.0, 1.5], [[0.5, 0.0], [0.0, 0.2]], seed=4),
        ]
    )
    land = LANDMixture(LinearEmbed(A_LIN), 2, tol=1e-9, max_iterations=15, **LINE).fit(z)
    gmm = EuclideanGMM(2, tol=1e-10).fit(z)
    order = torch.cdist(land.means, gmm.means).argmin(dim=1)  # match the components
    torch.testing.assert_close(land.means, gmm.means[order], atol=1e-4, rtol=0)
    torch.testing.assert_close(land.covariances, gmm.covariances[order], atol=1e-4, rtol=0)
    torch.testing.assert_close(land.weights, gmm.weights[order], atol=1e-4, rtol=0)
    test = _gaussian(10, [1.0, 0.8], [[0.7, 0.0], [0.0, 0.7]], seed=5)
    torch.testing.assert_close(land.log_prob(test), gmm.log_prob(test), atol=1e-4, rtol=1e-4)
    r_land, r_gmm = land.responsibilities(test), gmm.responsibilities(test)[:, order]
    torch.testing.assert_close(r_land, r_gmm, atol=1e-4, rtol=0)


def _sphere_data(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.tensor([[math.pi / 2, -0.6], [math.pi / 2 + 0.3, 0.6]], dtype=F64)
    noise = 0.25 * torch.randn(24, 2, generator=g, dtype=F64)
    return torch.cat([c[0] + noise[:12], c[1] + noise[12:]])


def test_em_on_the_sphere_never_increases_the_nll_and_reports_convergence() -> None:
    opts = {**FAST, "exp_steps": 16}
    land = LANDMixture(SphereEmbed(), 2, max_iterations=2, tol=0, **opts).fit(_sphere_data())
    nll = np.array(land.nll_history)
    assert len(nll) == 3 and np.isfinite(nll).all()
    # common random numbers: the NLL estimates are a deterministic function of the parameters
    assert (np.diff(nll) <= 1e-9 * abs(nll[0])).all(), nll
    assert nll[-1] < nll[0] - 0.05
    assert land.converged_ is not None and land.converged_.shape == (24, 2)
    assert bool(land.converged_.all())
    assert bool(torch.isfinite(land.covariances).all())


def test_paired_normaliser_error_is_zero_for_a_common_factor_and_sees_a_toggled_shot() -> None:
    from geometry.land_normaliser import log_ratio_std_error

    g = torch.Generator().manual_seed(0)
    w = 1 + torch.rand(64, generator=g, dtype=F64)
    assert float(log_ratio_std_error(w, w)) == 0.0
    assert float(log_ratio_std_error(w, 3 * w)) < 1e-15  # exact: every shot scales alike
    toggled = w.clone()
    toggled[5] = 0.0  # a shot that fails under the new parameters
    diff = toggled / toggled.mean() - w / w.mean()
    pairs = (diff[:32] + diff[32:]) / 2
    expected = float(pairs.std() / math.sqrt(32))
    assert float(log_ratio_std_error(w, toggled)) == pytest.approx(expected, rel=1e-12)
    assert expected > 0.5 * float(w[5] / w.sum())  # of the order of the shot's share


def test_noise_tolerant_em_accepts_increases_only_within_the_paired_error() -> None:
    """Near the strip's edge shots run off it; every accepted step's NLL increase is within
    ``noise_tolerance`` paired SEs, and on a constant metric the SE is 0 (a strict EM)."""
    g = torch.Generator().manual_seed(3)
    u1 = 0.6 + 0.39 * torch.rand(24, generator=g, dtype=F64)
    z = torch.stack([torch.atanh(u1), 0.4 * torch.randn(24, generator=g, dtype=F64)], dim=1)
    opts = {**FAST, "graph_k": 0, "max_iterations": 2, "tol": 0}
    land = LANDMixture(TanhStripEmbed(), 1, noise_tolerance=2.0, **opts).fit(z)
    nll, se = np.array(land.nll_history), np.array(land.nll_difference_std_errors)
    assert len(se) == len(nll) - 1 >= 1 and (se >= 0).all() and np.isfinite(nll).all()
    assert (np.diff(nll) <= 2.0 * se + 1e-9 * abs(nll[0])).all(), (nll, se)
    assert se.max() > 0  # the shots' weights changed unevenly here
    lin = LANDMixture(LinearEmbed(A_LIN), 1, noise_tolerance=2.0, **{**LINE, "tol": 0}).fit(
        _gaussian(30, [0, 0], [[1, 0], [0.3, 0.5]], 4)
    )
    assert lin.nll_difference_std_errors and max(lin.nll_difference_std_errors) < 1e-9
    assert (np.diff(lin.nll_history) <= 1e-9 * abs(lin.nll_history[0])).all()


def _sphere_log_map(mu: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Closed-form ``Log_mu(z)`` on the unit sphere, in spherical-coordinate velocities."""
    emb = SphereEmbed()
    p, q = emb(mu[None])[0], emb(z)  # (3,), (n, 3)
    cos = (q @ p).clamp(-1, 1)
    angle = torch.arccos(cos)  # (n,)
    u = (q - cos[:, None] * p) * (angle / torch.sin(angle).clamp_min(1e-300))[:, None]
    th, ph = float(mu[0]), float(mu[1])
    e_th = torch.tensor([math.cos(th) * math.cos(ph), math.cos(th) * math.sin(ph), -math.sin(th)])
    e_ph = torch.tensor([-math.sin(th) * math.sin(ph), math.sin(th) * math.cos(ph), 0.0])
    return torch.stack([u @ e_th.to(F64), u @ e_ph.to(F64) / math.sin(th) ** 2], dim=1)


SPHERE_MU = torch.tensor([math.pi / 2, 0.0], dtype=F64)
SPHERE_COV = torch.tensor([[0.45**2, 0.05], [0.05, 0.7**2]], dtype=F64)


def _sphere_unnormalised(z: torch.Tensor) -> torch.Tensor:
    v = _sphere_log_map(SPHERE_MU, z)  # (n, 2)
    return torch.exp(-0.5 * (v * torch.linalg.solve(SPHERE_COV, v.T).T).sum(dim=1))


@pytest.mark.parametrize("base_measure", ["riemannian", "lebesgue"])
def test_sphere_normaliser_matches_quadrature_within_its_standard_error(base_measure: str) -> None:
    factor = torch.linalg.inv(torch.linalg.cholesky(SPHERE_COV))
    from geometry.land_normaliser import base_samples

    eps = base_samples(2048, 2, seed=0, dtype=F64)
    est = estimate_normaliser(
        SphereEmbed(), SPHERE_MU, factor, eps, num_steps=32, base_measure=base_measure
    )
    th = torch.linspace(1e-3, math.pi - 1e-3, 600, dtype=F64)
    ph = torch.linspace(-math.pi, math.pi, 800, dtype=F64)
    grid = torch.cartesian_prod(th, ph)  # (th x ph, 2), latent Lebesgue measure
    cell = float((th[1] - th[0]) * (ph[1] - ph[0]))
    volume = grid[:, 0].sin() if base_measure == "riemannian" else torch.ones_like(grid[:, 0])
    quad = math.log(float((_sphere_unnormalised(grid) * volume).sum()) * cell)
    assert est.num_failed == 0
    assert float(est.std_error) < 0.01
    assert abs(float(est.log_value) - quad) < 4 * float(est.std_error) + 2e-3


STRIP_MU = torch.tensor([0.5, 0.0], dtype=F64)
STRIP_COV = torch.tensor([[0.6**2, 0.1], [0.1, 0.5**2]], dtype=F64)


def _strip_normaliser(mu: torch.Tensor, cov: torch.Tensor) -> float:
    """``log int q dV`` on the strip, a Gaussian in ``u = (tanh z_1, z_2)`` cut at ``|u_1| = 1``."""
    s = 1 - math.tanh(float(mu[0])) ** 2  # sech^2 mu_1 = du_1 / dz_1 at the mean
    scale = torch.diag(torch.tensor([s, 1.0], dtype=F64))
    cov_u = scale @ cov @ scale  # covariance of u - u(mu)
    marginal = torch.distributions.Normal(math.tanh(float(mu[0])), float(cov_u[0, 0].sqrt()))
    inside = float(marginal.cdf(torch.tensor(1.0)) - marginal.cdf(torch.tensor(-1.0)))
    return 0.5 * float(torch.logdet(2 * math.pi * cov_u)) + math.log(inside)


def test_strip_normaliser_counts_escaping_shots_as_zero_volume() -> None:
    """Shots past ``u_1 = 1`` leave the manifold; the Riemannian normaliser is the cut Gaussian."""
    from geometry.land_normaliser import base_samples

    factor = torch.linalg.inv(torch.linalg.cholesky(STRIP_COV))
    eps = base_samples(2048, 2, seed=0, dtype=F64)
    est = estimate_normaliser(TanhStripEmbed(), STRIP_MU, factor, eps, num_steps=16, rtol=1e-9)
    assert 0.08 * 2048 < est.num_failed < 0.2 * 2048  # about 13 % of the mass is past the edge
    closed = _strip_normaliser(STRIP_MU, STRIP_COV)
    assert abs(float(est.log_value) - closed) < 4 * float(est.std_error) + 1e-3, (est, closed)


def test_strip_log_prob_is_the_cut_gaussian_in_both_units() -> None:
    """Fitted near the strip's edge: ``log_prob`` is the closed form at held-out points."""
    g = torch.Generator().manual_seed(3)
    u1 = 0.2 + 0.75 * torch.rand(48, generator=g, dtype=F64)  # codes up to u_1 = 0.95
    z = torch.stack([torch.atanh(u1), 0.4 * torch.randn(48, generator=g, dtype=F64)], dim=1)
    opts = {**FAST, "graph_k": 0, "newton_steps": 2, "num_mc_samples": 512}
    land = LANDMixture(TanhStripEmbed(), 1, max_iterations=0, **opts).fit(z[:40])
    mu, cov = land.means[0], land.covariances[0]
    s = 1 - math.tanh(float(mu[0])) ** 2
    scale = torch.diag(torch.tensor([s, 1.0], dtype=F64))
    u = torch.stack([torch.tanh(z[40:, 0]), z[40:, 1]], dim=1)
    u_mu = torch.stack([mu[0].tanh(), mu[1]])
    gauss = torch.distributions.MultivariateNormal(u_mu, scale @ cov @ scale)
    log_cut = _strip_normaliser(mu, cov) - 0.5 * float(
        torch.logdet(2 * math.pi * scale @ cov @ scale)
    )
    riemannian = gauss.log_prob(u) - log_cut  # density in du = dV
    lebesgue = riemannian + torch.log(1 - torch.tanh(z[40:, 0]) ** 2)  # du = sech^2 z_1 dz
    tol = 4 * float(land.log_normaliser[1][0]) + 1e-3
    torch.testing.assert_close(
        land.log_prob(z[40:], measure="riemannian"), riemannian, atol=tol, rtol=0
    )
    torch.testing.assert_close(land.log_prob(z[40:]), lebesgue, atol=tol, rtol=0)


def _reference_sphere_samples(num: int, seed: int) -> torch.Tensor:
    """Rejection sampling from the closed-form density on a box holding its mass."""
    g = torch.Generator().manual_seed(seed)
    out = []
    while sum(len(o) for o in out) < num:
        box = torch.rand(20000, 2, generator=g, dtype=F64)
        cand = torch.stack([0.2 + (math.pi - 0.4) * box[:, 0], -2.6 + 5.2 * box[:, 1]], dim=1)
        keep = torch.rand(20000, generator=g, dtype=F64) < _sphere_unnormalised(cand)
        out.append(cand[keep])
    return torch.cat(out)[:num]


def _chi2_p(a: torch.Tensor, b: torch.Tensor) -> float:
    edges = [np.quantile(torch.cat([a, b])[:, j].numpy(), np.linspace(0, 1, 7)) for j in (0, 1)]
    for e in edges:
        e[0], e[-1] = -np.inf, np.inf
    ha = np.histogram2d(a[:, 0].numpy(), a[:, 1].numpy(), bins=edges)[0].ravel()
    hb = np.histogram2d(b[:, 0].numpy(), b[:, 1].numpy(), bins=edges)[0].ravel()
    keep = (ha + hb) > 0
    return float(chi2_contingency(np.stack([ha[keep], hb[keep]]))[1])


def _sphere_land() -> LANDMixture:
    """One component with the sphere test's mean and covariance (no fit)."""
    land = LANDMixture(SphereEmbed(), 1, **{**FAST, "exp_steps": 16}, oversample=8, seed=3)
    factor = torch.linalg.inv(torch.linalg.cholesky(SPHERE_COV))
    state = {
        "means": SPHERE_MU[None], "factors": factor[None], "weights": torch.ones(1, dtype=F64),
        "log_normalisers": torch.zeros(1, dtype=F64),
        "log_normaliser_std_errors": torch.zeros(1, dtype=F64), "graph_points": None,
        "nll_history": [], "num_mc_samples": 64, "exp_steps": 16, "geodesic_options": {},
        "seed": 3,
    }  # fmt: skip
    land.load_state_dict(state)
    return land


def _pushed_sphere_gaussian(n: int, seed: int) -> torch.Tensor:
    """``Exp_mu(v)``, ``v ~ N(0, SPHERE_COV)``: the pushed-forward tangent Gaussian."""
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n, 2, generator=g, dtype=F64) @ torch.linalg.cholesky(SPHERE_COV).T
    return exp_map(SphereEmbed(), SPHERE_MU.expand(n, 2).contiguous(), v, num_steps=16)


def test_sphere_samples_match_the_density_chi2_at_level_001() -> None:
    """Two-sample chi-square homogeneity test on 6 x 6 quantile bins, level 0.01."""
    land = _sphere_land()
    n = 3000
    samples, comp = land.sample(n)
    assert samples.shape == (n, 2) and bool((comp == 0).all())
    reference = _reference_sphere_samples(n, seed=4)
    assert _chi2_p(samples, reference) > 0.01
    # power: the pushed-forward tangent Gaussian without the Jacobian weights is rejected
    assert _chi2_p(_pushed_sphere_gaussian(n, seed=5), reference) < 0.01


def test_push_forward_samples_are_the_authors_sampler_not_the_density() -> None:
    """``method="push_forward"`` matches independent ``Exp`` shots of the tangent Gaussian and
    is rejected against the density (the volume term it ignores)."""
    land = _sphere_land()
    n = 3000
    samples, comp = land.sample(n, method="push_forward")
    assert samples.shape == (n, 2) and bool((comp == 0).all())
    assert _chi2_p(samples, _pushed_sphere_gaussian(n, seed=6)) > 0.01
    assert _chi2_p(samples, _reference_sphere_samples(n, seed=4)) < 0.01
    with pytest.raises(ValueError, match=r"method must be one of .*'exact'.*got 'pushed'"):
        land.sample(3, method="pushed")


def test_save_and_load_roundtrip(tmp_path) -> None:
    z = torch.cat(
        [
            _gaussian(20, [0, 0], [[0.3, 0], [0, 0.3]], 6),
            _gaussian(20, [2, 0], [[0.3, 0], [0, 0.2]], 7),
        ]
    )
    land = LANDMixture(LinearEmbed(A_LIN), 2, max_iterations=2, **LINE).fit(z)
    torch.save(land.state_dict(), tmp_path / "land.pt")
    again = LANDMixture(LinearEmbed(A_LIN), 2, **LINE)
    again.load_state_dict(torch.load(tmp_path / "land.pt", weights_only=False))
    test = z[:5] + 0.1
    torch.testing.assert_close(again.log_prob(test), land.log_prob(test))
    torch.testing.assert_close(again.sample(7, seed=1)[0], land.sample(7, seed=1)[0])
    assert again.nll_history == land.nll_history
    assert again.nll_difference_std_errors == land.nll_difference_std_errors
    assert len(again.nll_difference_std_errors) == len(again.nll_history) - 1
    with pytest.raises(ValueError, match="state has 2 components, this mixture 3"):
        LANDMixture(LinearEmbed(A_LIN), 3).load_state_dict(land.state_dict())


def test_seeded_fit_is_reproducible() -> None:
    z = _sphere_data(seed=2)
    a = LANDMixture(SphereEmbed(), 2, max_iterations=1, seed=4, **FAST).fit(z)
    b = LANDMixture(SphereEmbed(), 2, max_iterations=1, seed=4, **FAST).fit(z)
    assert a.nll_history == b.nll_history
    torch.testing.assert_close(a.factors, b.factors, atol=0, rtol=0)


def _with_duplicates(copies: int) -> torch.Tensor:
    far = torch.tensor([[8.0, 8.0]], dtype=F64).repeat(copies, 1)
    return torch.cat([_gaussian(40, [0, 0], [[0.5, 0], [0.2, 0.4]], 8), far])


def test_collapsing_component_raises_a_clear_error() -> None:
    with pytest.raises(ComponentCollapseError, match=r"component 1 collapsed .* mass 2 points"):
        LANDMixture(LinearEmbed(A_LIN), 2, **LINE).fit(_with_duplicates(2))
    with pytest.raises(ComponentCollapseError, match="covariance eigenvalue"):
        LANDMixture(LinearEmbed(A_LIN), 2, tol=0, **LINE).fit(_with_duplicates(3))


def test_collapsing_component_is_reset_without_nan() -> None:
    land = LANDMixture(LinearEmbed(A_LIN), 2, tol=0, max_iterations=6, on_collapse="reset", **LINE)
    land.fit(_with_duplicates(3))
    assert bool(torch.isfinite(land.factors).all() and torch.isfinite(land.means).all())
    assert np.isfinite(land.nll_history).all()
    assert bool(torch.isfinite(land.log_prob(torch.zeros(3, 2, dtype=F64))).all())


class _BoxEmbed(torch.nn.Module):
    """``clamp(z, -R, R)``: Euclidean inside the box, a singular metric outside."""

    def __init__(self, half_width: float) -> None:
        super().__init__()
        self.half_width = half_width

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.clamp(-self.half_width, self.half_width)


def test_candidate_steps_whose_normaliser_fails_are_undone() -> None:
    """Shots leaving the box fail; with ``max_failed_fraction=0`` one failed shot fails a step."""
    g = torch.Generator().manual_seed(2)
    centres = torch.tensor([[-0.6, 0.0], [0.6, 0.0]], dtype=F64)
    z = torch.cat([0.5 * torch.randn(30, 2, generator=g, dtype=F64) + c for c in centres])
    z = z[(z.abs() < 1.35).all(dim=1)]
    opts = {**FAST, "graph_k": 0, "exp_steps": 2, "max_iterations": 5, "tol": 0}
    strict = LANDMixture(_BoxEmbed(1.4), 2, max_failed_fraction=0.0, **opts).fit(z)
    assert strict.failed_steps and all("failed for" in m for m in strict.failed_steps)
    nll = np.array(strict.nll_history)
    assert len(nll) >= 2 and (np.diff(nll) <= 1e-9 * abs(nll[0])).all(), nll
    assert bool(torch.isfinite(strict.factors).all() and torch.isfinite(strict.means).all())
    assert bool(torch.isfinite(strict.log_normalisers).all())
    # the accepted state's normalisers (the fit's base samples) had no failed shot
    from geometry.land_normaliser import base_samples

    eps = base_samples(FAST["num_mc_samples"], 2, seed=0, dtype=F64)
    box = _BoxEmbed(1.4)
    final = [estimate_normaliser(box, strict.means[k], strict.factors[k], eps, 2) for k in range(2)]
    assert [e.num_failed for e in final] == [0, 0]


def test_bad_input_names_the_value() -> None:
    lin = LinearEmbed(A_LIN)
    z = _gaussian(10, [0, 0], [[1, 0], [0, 1]], 9)
    with pytest.raises(ValueError, match="num_components=11 exceeds the number of points n=10"):
        LANDMixture(lin, 11, **FAST).fit(z)
    bad = z.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="non-finite values"):
        LANDMixture(lin, 2, **FAST).fit(bad)
    with pytest.raises(ValueError, match="num_mc_samples must be an even integer >= 2 \\* d = 4"):
        LANDMixture(lin, 2, **{**FAST, "num_mc_samples": 5}).fit(z)
    with pytest.raises(ValueError, match="on_collapse must be 'raise' or 'reset', got 'drop'"):
        LANDMixture(lin, 2, on_collapse="drop")
    with pytest.raises(ValueError, match="mean_step must be a number in \\(0, 1\\], got 2"):
        LANDMixture(lin, 2, mean_step=2)
    with pytest.raises(ValueError, match="base_measure must be one of .*, got 'volume'"):
        LANDMixture(lin, 2, base_measure="volume")
    with pytest.raises(ValueError, match="max_failed_fraction must be a number in \\[0, 1\\)"):
        LANDMixture(lin, 2, max_failed_fraction=1.0)
    with pytest.raises(ValueError, match="noise_tolerance must be a number >= 0, got -1"):
        LANDMixture(lin, 2, noise_tolerance=-1)
    with pytest.raises(RuntimeError, match="not fitted"):
        LANDMixture(lin, 2).log_prob(z)
    land = LANDMixture(lin, 1, max_iterations=0, **FAST).fit(z)
    with pytest.raises(ValueError, match="latent dimension 3, expected 2"):
        land.log_prob(torch.zeros(2, 3, dtype=F64))
    with pytest.raises(ValueError, match="measure must be one of .*, got 'dz'"):
        land.log_prob(z, measure="dz")
    with pytest.raises(ValueError, match="num_components=11 exceeds"):
        EuclideanGMM(11).fit(z)


def test_euclidean_gmm_interface_matches_its_parameters(tmp_path) -> None:
    z = torch.cat(
        [
            _gaussian(50, [0, 0], [[0.3, 0], [0, 0.3]], 10),
            _gaussian(50, [3, 1], [[0.4, 0], [0.1, 0.2]], 11),
        ]
    )
    gmm = EuclideanGMM(2, seed=0).fit(z)
    test = z[:6] + 0.05
    comps = [
        torch.distributions.MultivariateNormal(gmm.means[k], gmm.covariances[k]) for k in range(2)
    ]
    lp = torch.stack([c.log_prob(test) for c in comps], dim=1) + gmm.weights.log()  # (6, 2)
    torch.testing.assert_close(gmm.log_prob(test), torch.logsumexp(lp, dim=1))
    torch.testing.assert_close(gmm.responsibilities(test), torch.softmax(lp, dim=1))
    x, comp = gmm.sample(4000, seed=1)
    for k in range(2):
        torch.testing.assert_close(x[comp == k].mean(dim=0), gmm.means[k], atol=0.05, rtol=0)
    again = EuclideanGMM(2)
    again.load_state_dict(gmm.state_dict())
    torch.testing.assert_close(again.log_prob(test), gmm.log_prob(test))


def test_log_maps_keep_their_node_count() -> None:
    """The LAND's log maps run at their own node count (the solver's node refinement is off
    unless geodesic_options ask for it): the same velocities as with max_num_nodes pinned to
    num_nodes, others with refinement."""
    z = _sphere_data(seed=5)[:6]
    means = torch.tensor([[math.pi / 2, 0.0], [1.2, 0.4]], dtype=F64)

    def velocities(**options: int) -> torch.Tensor:
        land = LANDMixture(SphereEmbed(), 2, progress=False, geodesic_options=options)
        land.graph_points = z
        return land.log_maps(z, means)[0]

    default = velocities()
    assert torch.equal(default, velocities(max_num_nodes=24))
    assert not torch.allclose(default, velocities(max_num_nodes=47), rtol=1e-6, atol=0)


def test_sphere_log_maps_match_the_closed_form() -> None:
    """All points to all means in one batch, graph starts on the codes, against the sphere."""
    z = _sphere_data(seed=5)[:8]
    means = torch.tensor([[math.pi / 2, 0.0], [1.2, 0.4]], dtype=F64)
    worst = {}
    for newton_steps in (0, 2):  # boundary-value velocities; refined by Newton shooting
        land = LANDMixture(SphereEmbed(), 2, progress=False, newton_steps=newton_steps)
        land.graph_points = z
        V, conv = land.log_maps(z, means)  # (8, 2, 2), (8, 2)
        assert bool(conv.all())
        errs = []
        for k in range(2):
            exact = _sphere_log_map(means[k], z)  # (8, 2)
            errs.append(float(((V[:, k] - exact).norm(dim=1) / exact.norm(dim=1)).max()))
        worst[newton_steps] = max(errs)
    assert worst[0] < 5e-3, worst  # O(1/N) direction error at the default 24 nodes
    assert worst[2] < 1e-5, worst
