"""Samples of a LAND component (pure torch).

By default (``method="exact"``) sampling-importance-resampling: fresh tangent Gaussian samples
are shot through ``Exp_mu`` and resampled with weights ``rho(v)``
(:func:`geometry.land_normaliser.volume_weights`); exact as ``oversample -> inf`` (a documented
approximation for finite ``oversample``). The authors' sampler (``method="push_forward"``)
keeps the shots without weights: it samples the pushed-forward tangent Gaussian, which ignores
the volume term.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geometry._checks import Embed
from geometry.land_normaliser import exp_map_or_nan, volume_weights

__all__ = ["SAMPLE_METHODS", "check_sample_method", "sample_component"]

SAMPLE_METHODS = ("exact", "push_forward")


def check_sample_method(value: object) -> str:
    """``value`` if it is one of :data:`SAMPLE_METHODS`, else a ``ValueError`` naming it."""
    if value not in SAMPLE_METHODS:
        raise ValueError(f"method must be one of {SAMPLE_METHODS}, got {value!r}")
    return str(value)


def sample_component(
    embed: Embed,
    mu: Tensor,
    factor: Tensor,
    num: int,
    *,
    oversample: int,
    num_steps: int,
    generator: torch.Generator,
    rtol: float | None = None,
    base_measure: str = "riemannian",
    method: str = "exact",
) -> Tensor:
    """``(num, d)`` samples of one component.

    ``method="exact"``: importance resampling. Draws ``oversample * num`` tangent vectors
    ``v ~ N(0, Gamma^-1)``, maps them to ``Exp_mu(v)`` and resamples ``num`` of them with
    replacement with probabilities proportional to ``rho(v)`` (the ratio of the target density
    to the density of the pushed-forward Gaussian, both in latent coordinates); consistent as
    ``oversample`` grows.

    ``method="push_forward"``: ``Exp_mu(v)`` of ``num`` tangent vectors ``v ~ N(0, Gamma^-1)``,
    the sampler of the LAND authors' code. It ignores the volume change of ``Exp`` and of the
    base measure, so it samples the pushed-forward tangent Gaussian, not the LAND density
    (they agree for a constant metric). Shots that fail (the metric becomes singular before
    ``t = 1``) are drawn again, at most ``oversample`` rounds.
    """
    check_sample_method(method)
    d = mu.shape[0]
    if num == 0:
        return mu.new_zeros(0, d)
    if method == "push_forward":
        return _push_forward(embed, mu, factor, num, oversample, num_steps, generator, rtol)
    m = oversample * num
    v = _tangent_gaussian(factor, m, generator).to(mu)  # (m, d)
    x, w, _, _ = volume_weights(embed, mu, v, num_steps, rtol, base_measure)
    if not bool(w.sum() > 0):
        raise FloatingPointError(f"every exponential-map shot from {mu.tolist()} failed")
    idx = torch.multinomial(w.double().cpu(), num, replacement=True, generator=generator)
    return x[idx.to(x.device)]


def _tangent_gaussian(factor: Tensor, num: int, generator: torch.Generator) -> Tensor:
    """``(num, d)`` float64 draws of ``N(0, (A^T A)^-1)`` for the precision factor ``A``."""
    eps = torch.randn(num, factor.shape[0], generator=generator, dtype=torch.float64)
    return torch.linalg.solve(factor.double().cpu(), eps.T).T


def _push_forward(
    embed: Embed, mu: Tensor, factor: Tensor, num: int, rounds: int, num_steps: int,
    generator: torch.Generator, rtol: float | None,
) -> Tensor:  # fmt: skip
    """``(num, d)`` successful shots ``Exp_mu(v)``, ``v ~ N(0, Gamma^-1)``, in draw order."""
    kept: list[Tensor] = []
    have = 0
    for _ in range(rounds):
        v = _tangent_gaussian(factor, num - have, generator).to(mu)
        x = exp_map_or_nan(embed, mu.expand_as(v).contiguous(), v, num_steps, rtol)
        x = x[torch.isfinite(x).all(dim=1)]
        kept.append(x)
        have += x.shape[0]
        if have == num:
            return torch.cat(kept)
    raise FloatingPointError(
        f"only {have} of {num} exponential-map shots from {mu.tolist()} succeeded in {rounds} "
        "rounds (they run where the metric is singular)"
    )
