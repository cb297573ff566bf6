"""Monte Carlo normaliser of a LAND component and its ``Exp`` shots (pure torch).

A LAND component with mean ``mu`` and precision ``Gamma = A^T A`` has the unnormalised density
``q(z) = exp(-1/2 Log_mu(z)^T Gamma Log_mu(z))`` with respect to a base measure:

* ``"riemannian"`` (default of :class:`geometry.LANDMixture`; the LAND papers' convention): the
  Riemannian volume ``dV = sqrt(det M(z)) dz``. Changing variables ``z = Exp_mu(v)``,

      ``Z = int q dV = (2 pi)^(d/2) |det A|^(-1) E_{v ~ N(0, Gamma^-1)}[ rho(v) ]``,
      ``rho(v) = sqrt(det M(Exp_mu(v))) |det D Exp_mu(v)|``,

  the volume of the tangent Gaussian's image. The authors (Arvanitidis et al., NeurIPS 2016)
  use ``sqrt(det M(Exp_mu(v))) / sqrt(det M(mu))``, which omits ``|det D Exp|`` and divides by
  the volume at the mean; here the Jacobian is exact and ``Z`` is absolute (the same base
  measure for every component of a mixture). Where the metric decays away from the data (an
  RBF precision, a saturating mean) far regions have little volume, so the model is proper.
* ``"lebesgue"``: the latent coordinates' ``dz``; ``rho(v) = |det D Exp_mu(v)|``. Improper when
  the metric decays so fast that infinity is at a finite distance (then ``q`` does not vanish
  at infinity and ``int q dz`` diverges): the estimate is then dominated by shots with huge
  Jacobians. Kept for comparison.

A density in one measure is the other's times ``sqrt(det M(z))^(+-1)``. Both are exact where
``Exp_mu`` is injective on the mass of the tangent Gaussian (inside the cut locus). A shot
whose geodesic leaves every bounded region before ``t = 1`` (its metric becomes singular;
:func:`geometry.shoot_geodesics` fails it) reaches no latent point and contributes 0.

Monte Carlo: ``v_s = A^{-1} eps_s`` from fixed base samples ``eps`` (common random numbers over
EM iterations), antithetic (``eps`` and ``-eps``) and moment-matched (their sample mean is 0 and
their sample second moment exactly ``I``). So for a constant metric the estimates are exact,
and in general the standard error is that of the antithetic pair means (an approximation: the
moment matching couples the pairs weakly). ``D Exp`` comes from central finite differences of
:func:`geometry.exp_map` (``2 d`` extra shots per sample).

Sampling is in :mod:`geometry.land_sampling`; Newton refinement of log maps in
:mod:`geometry.land_log_maps`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from geometry._checks import Embed
from geometry.adaptive_exp import shoot_geodesics
from geometry.maps import exp_map
from geometry.metric import log_magnification_factor

__all__ = [
    "BASE_MEASURES",
    "NormaliserEstimate",
    "base_samples",
    "check_base_measure",
    "estimate_normaliser",
    "exp_and_jacobian",
    "exp_map_or_nan",
    "exp_with_jacobian",
    "volume_weights",
]

BASE_MEASURES = ("riemannian", "lebesgue")


def check_base_measure(value: object, name: str = "base_measure") -> str:
    """``value`` if it is one of :data:`BASE_MEASURES`, else a ``ValueError`` naming it."""
    if value not in BASE_MEASURES:
        raise ValueError(f"{name} must be one of {BASE_MEASURES}, got {value!r}")
    return str(value)


@dataclass
class NormaliserEstimate:
    """Monte Carlo estimate for one component (tensors on the device/dtype of ``mu``).

    Attributes:
        log_value: ``()`` estimate of ``log Z``.
        std_error: ``()`` its standard error (delta method on the antithetic pair means).
        mean_v: ``(d,)`` ``E_q[v]`` under the tangent density ``exp(-v^T Gamma v / 2) rho(v)``.
        second_moment: ``(d, d)`` ``E_q[v v^T]`` under the same density.
        num_failed: shots whose end point or Jacobian was not finite (weight 0, see module doc).
        weights: ``(S,)`` the shots' volume weights ``rho(v)`` (0 where a shot failed), for
            paired comparisons of two estimates from the same base samples
            (:func:`log_ratio_std_error`).
    """

    log_value: Tensor
    std_error: Tensor
    mean_v: Tensor
    second_moment: Tensor
    num_failed: int
    weights: Tensor


def base_samples(num_samples: int, dim: int, seed: int, dtype: torch.dtype) -> Tensor:
    """``(S, d)`` antithetic, moment-matched standard normal samples (``S`` even, >= 2 d)."""
    if num_samples < 2 * dim or num_samples % 2:
        raise ValueError(
            f"num_mc_samples must be an even integer >= 2 * d = {2 * dim}, got {num_samples!r}"
        )
    g = torch.Generator().manual_seed(seed)
    half = torch.randn(num_samples // 2, dim, generator=g, dtype=torch.float64)  # (S/2, d)
    eps = torch.cat([half, -half])  # (S, d), sample mean exactly 0
    second = eps.T @ eps / num_samples  # (d, d)
    white = torch.linalg.cholesky(second)  # second = L L^T
    eps = torch.linalg.solve_triangular(white, eps.T, upper=False).T  # second moment I
    return eps.to(dtype)


def _fd_step(v: Tensor) -> Tensor:
    """Central-difference step per row ``(B, 1)``: ``eps^(1/3)`` times the row's scale."""
    return torch.finfo(v.dtype).eps ** (1 / 3) * (1 + v.norm(dim=1, keepdim=True))


def exp_map_or_nan(
    embed: Embed, z: Tensor, v: Tensor, num_steps: int, rtol: float | None = None,
    groups: Tensor | None = None,
) -> Tensor:  # fmt: skip
    """``Exp_z(v) (B, d)`` with NaN rows where a shot failed.

    ``rtol=None``: fixed-step RK4 (:func:`geometry.exp_map`, ``num_steps`` steps), which refuses
    a whole batch when the metric is singular at one point on one path; the batch is split in
    halves until the failing shots are found (``O(log B)`` extra batches per failing shot).
    A float: adaptive Dormand-Prince to that tolerance (:func:`geometry.shoot_geodesics`, first
    step ``1 / num_steps``, rows of one of ``groups`` share their steps), which isolates
    failing rows itself.
    """
    if rtol is not None:
        return shoot_geodesics(embed, z, v, rtol=rtol, initial_steps=num_steps, groups=groups).ends
    try:
        return exp_map(embed, z, v, num_steps=num_steps)
    except ValueError as err:
        if "singular" not in str(err):
            raise
        if z.shape[0] == 1:
            return torch.full_like(v, math.nan)
        half = z.shape[0] // 2
        return torch.cat(
            [
                exp_map_or_nan(embed, z[:half], v[:half], num_steps),
                exp_map_or_nan(embed, z[half:], v[half:], num_steps),
            ]
        )


def exp_and_jacobian(
    embed: Embed, mu: Tensor, v: Tensor, num_steps: int, rtol: float | None = None
) -> tuple[Tensor, Tensor]:
    """``Exp_mu(v)`` and ``D Exp_mu(v)`` for ``v (B, d)`` (one batch of ``(2 d + 1) B`` shots).

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        mu: ``(d,)`` base point, or ``(B, d)`` one per row.
        v: ``(B, d)`` tangent vectors.
        num_steps: RK4 steps (``rtol=None``) or the first step ``1 / num_steps`` of the
            adaptive shots (:func:`exp_map_or_nan`).
        rtol: None or the adaptive tolerance; the ``2 d + 1`` shots of one row share their
            steps, so the differences are those of one smooth discrete map.

    Returns:
        ``(B, d)`` end points and ``(B, d, d)`` Jacobians (central differences; non-finite
        where a shot failed).
    """
    B, d = v.shape
    h = _fd_step(v)  # (B, 1)
    eye = torch.eye(d, dtype=v.dtype, device=v.device)  # (d, d)
    plus = v[:, None] + h[:, :, None] * eye[None]  # (B, d, d): row k = v + h e_k
    minus = v[:, None] - h[:, :, None] * eye[None]
    vs = torch.cat([v, plus.reshape(B * d, d), minus.reshape(B * d, d)])  # ((2d+1) B, d)
    base = mu.expand_as(v) if mu.ndim == 1 else mu  # (B, d)
    base = torch.cat([base, base.repeat_interleave(d, 0), base.repeat_interleave(d, 0)])
    row = torch.arange(B, device=v.device)
    groups = torch.cat([row, row.repeat_interleave(d), row.repeat_interleave(d)])
    ends = exp_map_or_nan(embed, base.contiguous(), vs, num_steps, rtol, groups)
    x = ends[:B]  # (B, d)
    xp, xm = ends[B : B + B * d].reshape(B, d, d), ends[B + B * d :].reshape(B, d, d)
    jac = ((xp - xm) / (2 * h[:, :, None])).transpose(1, 2)  # (B, d, d): column k = dExp/dv_k
    return x, jac


def exp_with_jacobian(
    embed: Embed, mu: Tensor, v: Tensor, num_steps: int, rtol: float | None = None
) -> tuple[Tensor, Tensor]:
    """``Exp_mu(v) (B, d)`` and ``|det D Exp_mu(v)| (B,)`` (see :func:`exp_and_jacobian`)."""
    x, jac = exp_and_jacobian(embed, mu, v, num_steps, rtol)
    return x, torch.linalg.det(jac).abs()


def volume_weights(
    embed: Embed, mu: Tensor, v: Tensor, num_steps: int, rtol: float | None = None,
    base_measure: str = "riemannian",
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """Shots ``Exp_mu(v)`` and their volume weights ``rho(v)`` relative to the volume at ``mu``.

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        mu: ``(d,)`` base point.
        v: ``(B, d)`` tangent vectors.
        num_steps: RK4 steps or the first adaptive step (:func:`exp_map_or_nan`).
        rtol: None or the adaptive shooting tolerance.
        base_measure: ``"riemannian"`` or ``"lebesgue"`` (module docstring).

    Returns:
        ``(B, d)`` end points (NaN rows where a shot failed), ``(B,)`` weights
        ``rho(v) / sqrt(det M(mu))`` (``"riemannian"``) or ``rho(v)`` (``"lebesgue"``), 0 where a
        shot failed, ``(B,)`` bool ``ok`` (the shot and its Jacobian are finite) and ``()`` the
        log of the divisor (``log sqrt(det M(mu))`` or 0).
    """
    check_base_measure(base_measure)
    x, det = exp_with_jacobian(embed, mu, v, num_steps, rtol)  # (B, d), (B,)
    ok = torch.isfinite(det) & torch.isfinite(x).all(dim=1)
    w = torch.where(ok, det, torch.zeros_like(det))  # (B,)
    log_ref = torch.zeros((), dtype=v.dtype, device=v.device)
    if base_measure == "riemannian":
        log_ref = log_magnification_factor(embed, mu[None])[0]
        if not bool(torch.isfinite(log_ref)):
            raise FloatingPointError(f"the metric is singular at the mean {mu.tolist()}")
        log_vol = torch.full_like(det, -math.inf)
        if bool(ok.any()):
            log_vol[ok] = log_magnification_factor(embed, x[ok])
        w = torch.where(ok, w * torch.exp(log_vol - log_ref), torch.zeros_like(w))
    return x, w, ok, log_ref


def estimate_normaliser(
    embed: Embed, mu: Tensor, factor: Tensor, eps: Tensor, num_steps: int,
    rtol: float | None = None, base_measure: str = "riemannian",
    max_failed_fraction: float = 0.5,
) -> NormaliserEstimate:  # fmt: skip
    """Monte Carlo ``log Z`` of the component ``(mu, Gamma = factor^T factor)`` (see module doc).

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        mu: ``(d,)`` mean.
        factor: ``(d, d)`` precision factor ``A``.
        eps: ``(S, d)`` base samples from :func:`base_samples`.
        num_steps: RK4 steps of :func:`geometry.exp_map` (or the first adaptive step).
        rtol: None (fixed-step RK4) or the adaptive shooting tolerance (:func:`exp_map_or_nan`).
        base_measure: ``"riemannian"`` (``Z = int q dV``) or ``"lebesgue"`` (``int q dz``).
        max_failed_fraction: the largest fraction of failed shots accepted.

    Returns:
        A :class:`NormaliserEstimate`.

    Raises:
        FloatingPointError: when more than ``max_failed_fraction`` of the shots fail (by
            default: the estimate would rest on fewer than half of its samples).
    """
    S, d = eps.shape
    v = torch.linalg.solve(factor, eps.T).T  # (S, d), covariance Gamma^-1
    _, w, ok, log_ref = volume_weights(embed, mu, v, num_steps, rtol, base_measure)  # (S,)
    num_failed = int((~ok).sum())
    if num_failed > max_failed_fraction * S:
        raise FloatingPointError(
            f"the exponential map failed for {num_failed} of {S} Monte Carlo shots from the "
            f"mean {mu.tolist()}: the component's covariance reaches where the metric is singular"
        )
    mean_j = w.mean()
    se_j = _antithetic_std_error(w)
    log_det_a = torch.linalg.slogdet(factor)[1]
    log_value = 0.5 * d * math.log(2 * math.pi) - log_det_a + mean_j.log() + log_ref
    p = w / w.sum()  # (S,) importance weights of the tangent density
    mean_v = p @ v  # (d,)
    second = torch.einsum("s,si,sj->ij", p, v, v)  # (d, d)
    return NormaliserEstimate(log_value, se_j / mean_j, mean_v, second, num_failed, w)


def log_ratio_std_error(old: Tensor, new: Tensor) -> Tensor:
    """Standard error of ``log mean(new) - log mean(old)`` for paired shot weights ``(S,)``.

    Both estimates use the same antithetic base samples (common random numbers), so the error
    of their difference comes from how each shot's weight changes between them (delta method on
    the antithetic pair means of ``new / mean(new) - old / mean(old)``). It is 0 when every
    weight changes by the same factor (e.g. a constant metric) and large when a heavy shot
    appears or vanishes (a shot that fails under one set of parameters and not the other).
    """
    if not bool(old.sum() > 0) or not bool(new.sum() > 0):
        return torch.zeros((), dtype=old.dtype, device=old.device)
    return _antithetic_std_error(new / new.mean() - old / old.mean())


def _antithetic_std_error(values: Tensor) -> Tensor:
    """Standard error of the mean of ``values (S,)`` from antithetic samples: the first and the
    second half are the pairs (:func:`base_samples`); 0 for fewer than 2 pairs."""
    S = values.shape[0]
    if S < 4:
        return torch.zeros((), dtype=values.dtype, device=values.device)
    pairs = (values[: S // 2] + values[S // 2 :]) / 2  # (S/2,) antithetic pair means
    return pairs.std() / math.sqrt(S // 2)
