"""Random walks in latent space (the paper's sampling experiment).

Three walks, all with ``eps ~ N(0, I_d)`` and step size ``s``:

* ``kind="first_order"`` (the paper's Riemannian walk, Arvanitidis et al. 2018, Sec. 5):
  ``z <- z + s * U Lambda^(-1/2) eps`` with ``M(z) = U Lambda U^T`` (``torch.linalg.eigh``), a
  step with covariance ``s^2 M(z)^(-1)``: short steps where the metric is large (away from the
  data for an RBF-precision decoder). It omits the drift of Riemannian Brownian motion, so it is
  **not** a discretised Brownian motion: its long-run density is not the Riemannian volume (on
  the chart ``(theta, phi)`` of the sphere it spreads uniformly in ``theta`` instead of as
  ``sin theta``).
* ``kind="brownian"``: the Euler-Maruyama discretisation with time step ``dt = s^2`` of
  Riemannian Brownian motion, generator ``Delta_LB / 2`` (half the Laplace-Beltrami operator),
  ``z <- z + s^2 b(z) + s * U Lambda^(-1/2) eps`` with the drift
  ``b^i = (1/2) (1/sqrt(det M)) d_j(sqrt(det M) M^{ij})`` of :func:`geometry.brownian_drift`.
  The diffusion is the first-order walk's; the drift (second derivatives of ``embed``, about
  ``d^2`` forward passes per step) pushes the walk towards larger volume ``sqrt(det M)``, so
  its stationary density on a compact manifold is proportional to ``sqrt(det M)``, i.e.
  uniform on the manifold. Its error is first order in ``dt``; there is no step control, so
  where the metric is small and varies fast (off the data of an RBF-precision decoder, beyond
  its variance walls) the drift step ``s^2 b`` can be far longer than the diffusion step.
* ``metric=False``: the Euclidean walk ``z <- z + s * eps`` (Brownian motion of the flat metric,
  with ``dt = s^2``).

Eigenvalues are clamped below by ``eigenvalue_floor`` so that flat directions do not produce
unbounded steps; the Brownian drift uses the same clamped inverse of ``M``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geometry._checks import Embed, check_points, check_positive_int
from geometry.brownian import drift_from_derivatives, floored_inverse, metric_and_derivatives
from geometry.metric import metric_tensor

__all__ = ["WALK_KINDS", "random_walk"]

#: Accepted values of ``random_walk(kind=...)``.
WALK_KINDS: tuple[str, ...] = ("first_order", "brownian")


def random_walk(
    embed: Embed,
    z0: Tensor,
    num_steps: int,
    step_size: float,
    metric: bool = True,
    generator: torch.Generator | None = None,
    eigenvalue_floor: float = 1e-6,
    kind: str = "first_order",
) -> Tensor:
    """Run ``B`` independent random walks for ``num_steps`` steps.

    Args:
        embed: ``(n, d) -> (n, D')`` callable defining the metric (unused if ``metric=False``).
        z0: ``(B, d)`` start points.
        num_steps: number of steps (>= 0).
        step_size: ``s`` > 0.
        metric: Riemannian walk (``True``) or Euclidean walk (``False``).
        generator: ``torch.Generator`` for the noise (noise is drawn on the generator's device and
            moved to ``z0``'s device); ``None`` uses the global RNG.
        eigenvalue_floor: lower clamp of the metric eigenvalues (absolute, in the units of
            ``M``); bounds a diffusion step by ``s / sqrt(eigenvalue_floor)`` per unit of noise.
        kind: Riemannian walk, ``"first_order"`` (the paper's, no drift) or ``"brownian"``
            (Euler-Maruyama of Brownian motion with ``dt = s^2``; ``embed`` must be
            forward-mode differentiable twice); see the module docstring.

    Returns:
        ``(B, num_steps + 1, d)`` trajectories (batch first), ``[:, 0] == z0``; dtype/device of
        ``z0``.

    Raises:
        ValueError: on a bad argument (named with the accepted values), before any step.
    """
    check_points(z0, "z0")
    check_positive_int(num_steps, "num_steps", minimum=0)
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    if not eigenvalue_floor > 0:
        raise ValueError(f"eigenvalue_floor must be > 0, got {eigenvalue_floor!r}")
    if kind not in WALK_KINDS:
        raise ValueError(f"kind must be one of {WALK_KINDS}, got {kind!r}")
    if kind == "brownian" and not metric:
        raise ValueError(
            "kind='brownian' needs metric=True (the Euclidean walk, metric=False, has no drift); "
            "use kind='first_order' with metric=False"
        )
    B, d = z0.shape
    gen_device = generator.device if generator is not None else torch.device("cpu")
    z = z0.detach().clone()
    path = [z]
    for _ in range(num_steps):
        eps = torch.randn(B, d, generator=generator, dtype=z.dtype, device=gen_device).to(z.device)
        if kind == "brownian":
            M, dM = metric_and_derivatives(embed, z)  # (B, d, d), (B, d, d, d)
            lam, U, M_inv = floored_inverse(M, eigenvalue_floor)
            drift = drift_from_derivatives(M_inv, dM)  # (B, d)
            step = (U @ (eps * lam.rsqrt())[..., None])[..., 0]  # (B, d)
            z = z + step_size**2 * drift + step_size * step
        elif metric:
            M = metric_tensor(embed, z)  # (B, d, d)
            lam, U = floored_inverse(M, eigenvalue_floor)[:2]  # (B, d), (B, d, d)
            step = (U @ (eps * lam.rsqrt())[..., None])[..., 0]  # (B, d)
            z = z + step_size * step
        else:
            z = z + step_size * eps
        path.append(z)
    return torch.stack(path, dim=1)  # (B, num_steps+1, d)
