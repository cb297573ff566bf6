"""Batched Adam on the interior nodes of polylines (the chord energy): the baseline optimizer of
:func:`geometry.connecting_geodesics` (``optimizer="adam"``)."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geometry._checks import Embed
from geometry.curves import curve_energy

__all__ = ["adam_on_nodes"]


def adam_on_nodes(
    embed: Embed,
    x: Tensor,
    z0: Tensor,
    z1: Tensor,
    tolerance: float,
    max_iterations: int,
    lr: float,
    chunk_size: int,
    bar: tqdm,
) -> tuple[Tensor, Tensor, Tensor]:
    """Batched Adam on interior nodes (chord energy); per-curve best-so-far and stagnation test.

    Returns:
        Best nodes ``(B, n, d)``, stagnation mask ``(B,)`` and iterations ``(B,)``.
    """
    B, n, d = x.shape
    x = x.clone()
    step_scale = lr * (z1 - z0).norm(dim=1).clamp_min(1e-12)[:, None, None]  # (B, 1, 1)
    m, v = torch.zeros_like(x), torch.zeros_like(x)
    best_x, best_E = x.clone(), torch.full((B,), torch.inf, dtype=x.dtype, device=x.device)
    ref_E = best_E.clone()
    active = torch.ones(B, dtype=torch.bool, device=x.device)
    converged = torch.zeros_like(active)
    iterations = torch.zeros(B, dtype=torch.long, device=x.device)
    t_step = torch.zeros(B, dtype=x.dtype, device=x.device)
    beta1, beta2, window = 0.9, 0.999, 20
    for it in range(max_iterations):
        act = active.nonzero().flatten()
        if act.numel() == 0:
            break
        xa = x[act].detach().requires_grad_(True)
        with torch.enable_grad():
            curves = torch.cat([z0[act, None], xa, z1[act, None]], dim=1)  # (b, n+2, d)
            E = curve_energy(embed, curves, chunk_size)  # (b,)
            (grad,) = torch.autograd.grad(E.sum(), xa)
        E = E.detach()
        better = best_E[act] > E
        best_E[act] = torch.where(better, E, best_E[act])
        best_x[act[better]] = xa.detach()[better]
        t_step[act] += 1
        tt = t_step[act][:, None, None]
        m[act] = beta1 * m[act] + (1 - beta1) * grad
        v[act] = beta2 * v[act] + (1 - beta2) * grad**2
        upd = (m[act] / (1 - beta1**tt)) / ((v[act] / (1 - beta2**tt)).sqrt() + 1e-12)
        x[act] = xa.detach() - step_scale[act] * upd
        iterations[act] += 1
        if (it + 1) % window == 0:
            stagnant = best_E[act] >= ref_E[act] * (1 - tolerance * window)
            converged[act[stagnant]] = True
            active[act[stagnant]] = False
            ref_E[act] = best_E[act]
        bar.update(1)
    return best_x, converged, iterations
