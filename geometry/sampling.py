"""Random walks in latent space (the paper's sampling experiment).

Riemannian walk (Arvanitidis et al. 2018, Sec. 5): ``z <- z + s * U Lambda^(-1/2) eps`` with
``M(z) = U Lambda U^T`` (``torch.linalg.eigh``) and ``eps ~ N(0, I_d)``, i.e. a step with
covariance ``s^2 M(z)^(-1)``: short steps where the metric is large (away from the data for an
RBF-precision decoder). Eigenvalues are clamped below by ``eigenvalue_floor`` so that flat
directions do not produce unbounded steps. Like the paper, this omits the drift term of true
Riemannian Brownian motion. The Euclidean walk ``z <- z + s * eps`` is ``metric=False``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from geometry._checks import Embed, check_points, check_positive_int
from geometry.metric import metric_tensor

__all__ = ["random_walk"]


def random_walk(
    embed: Embed,
    z0: Tensor,
    num_steps: int,
    step_size: float,
    metric: bool = True,
    generator: torch.Generator | None = None,
    eigenvalue_floor: float = 1e-6,
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
            ``M``); bounds a step by ``s / sqrt(eigenvalue_floor)`` per unit of noise.

    Returns:
        ``(B, num_steps + 1, d)`` trajectories (batch first), ``[:, 0] == z0``; dtype/device of
        ``z0``.
    """
    check_points(z0, "z0")
    check_positive_int(num_steps, "num_steps", minimum=0)
    if not step_size > 0:
        raise ValueError(f"step_size must be > 0, got {step_size!r}")
    if not eigenvalue_floor > 0:
        raise ValueError(f"eigenvalue_floor must be > 0, got {eigenvalue_floor!r}")
    B, d = z0.shape
    gen_device = generator.device if generator is not None else torch.device("cpu")
    z = z0.detach().clone()
    path = [z]
    for _ in range(num_steps):
        eps = torch.randn(B, d, generator=generator, dtype=z.dtype, device=gen_device).to(z.device)
        if metric:
            M = metric_tensor(embed, z)  # (B, d, d)
            lam, U = torch.linalg.eigh(M)  # (B, d), (B, d, d)
            scaled = eps * lam.clamp_min(eigenvalue_floor).rsqrt()  # (B, d)
            step = (U @ scaled[..., None])[..., 0]  # (B, d)
        else:
            step = eps
        z = z + step_size * step
        path.append(z)
    return torch.stack(path, dim=1)  # (B, num_steps+1, d)
