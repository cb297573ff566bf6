"""Batched Levenberg-Marquardt on the interior nodes of polylines with fixed end points.

The objectives (:mod:`geometry.sub_point_length`, :mod:`geometry.node_energy`) give, at
interior nodes ``x (b, n, d)``, their value, half their gradient and half their Gauss-Newton
matrix, which is block tridiagonal (a node interacts with its two neighbours only); each LM step
solves it exactly per curve (:mod:`geometry.block_tridiagonal`, ``O(n d^3)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geometry.block_tridiagonal import solve_spd_block_tridiagonal

__all__ = ["LMTerms", "TERM_FIELDS", "TermsFn", "levenberg_marquardt", "terms_by_chunks"]


@dataclass
class LMTerms:
    """Objective and Gauss-Newton pieces for ``b`` curves with ``n`` interior nodes (float64).

    ``S (b,)`` objective, ``L (b,)`` its length ``sum_i lambda_i``, ``g (b, n, d)`` half the
    gradient of ``S``, ``diag (b, n, d, d)`` / ``off (b, n - 1, d, d)`` half the Gauss-Newton
    matrix.
    """

    S: Tensor
    L: Tensor
    g: Tensor
    diag: Tensor
    off: Tensor
    noise: Tensor

    def take(self, idx: Tensor) -> LMTerms:
        return LMTerms(*(getattr(self, f)[idx] for f in TERM_FIELDS))

    def put(self, idx: Tensor, other: LMTerms) -> None:
        for name in TERM_FIELDS:
            getattr(self, name)[idx] = getattr(other, name)


TERM_FIELDS = ("S", "L", "g", "diag", "off", "noise")


TermsFn = Callable[[Tensor, Tensor, Tensor], "LMTerms"]


def terms_by_chunks(
    chunk_terms: Callable[[Tensor], LMTerms],
    x: Tensor,
    z0: Tensor,
    z1: Tensor,
    rows_per_curve: int,
    chunk_size: int,
) -> LMTerms:
    """:class:`LMTerms` at interior nodes ``x (b, n, d)`` between ``z0``, ``z1`` ``(b, d)``,
    from ``chunk_terms(nodes (c, N, d))`` on as many whole curves at a time as keep a
    forward-mode pass (``rows_per_curve`` embedded rows each) within ``chunk_size`` rows."""
    nodes = torch.cat([z0[:, None], x, z1[:, None]], dim=1)  # (b, N, d)
    per = max(1, chunk_size // rows_per_curve)  # curves per pass
    parts = [chunk_terms(nodes[s : s + per]) for s in range(0, nodes.shape[0], per)]
    if len(parts) == 1:
        return parts[0]
    return LMTerms(*(torch.cat([getattr(p, f) for p in parts]) for f in TERM_FIELDS))


def levenberg_marquardt(
    terms: TermsFn,
    x: Tensor,
    z0: Tensor,
    z1: Tensor,
    tolerance: float,
    max_iterations: int,
    bar: tqdm | None = None,
) -> tuple[Tensor, Tensor, Tensor, LMTerms]:
    """Batched Levenberg-Marquardt on interior nodes ``x (B, n, d)`` between ``z0``, ``z1``.

    Every curve keeps its own damping, accepts a step only if the objective decreases, and is
    stationary when the Gauss-Newton model predicts a decrease below ``tolerance`` times the
    objective (or below its roundoff level).

    Args:
        terms: ``(x, z0, z1) -> LMTerms`` of the objective at interior nodes ``x (b, n, d)``.
        x: ``(B, n, d)`` initial interior nodes (not modified).
        z0, z1: ``(B, d)`` end points.
        tolerance: relative predicted decrease at which a curve is stationary.
        max_iterations: step limit per curve.
        bar: optional progress bar, advanced once per iteration.

    Returns:
        Final nodes (a copy), stationary mask ``(B,)``, iterations ``(B,)`` and the terms at
        the final nodes.
    """
    B, n, d = x.shape
    x = x.clone()
    tm = terms(x, z0, z1)
    if not bool(torch.isfinite(tm.S).all()):
        bad = (~torch.isfinite(tm.S)).nonzero().flatten().tolist()
        raise ValueError(f"embed gives a non-finite length on the initial curves {bad[:10]}")
    # roundoff level of the objective (of the start: the embeddings stay of that size)
    noise = tm.noise.clone() + torch.finfo(torch.float64).tiny
    eye = torch.eye(d, dtype=torch.float64, device=x.device)
    lam = torch.full((B,), 1e-4, dtype=torch.float64, device=x.device)  # relative damping
    nu = torch.full((B,), 2.0, dtype=torch.float64, device=x.device)
    active = torch.ones(B, dtype=torch.bool, device=x.device)
    stationary = torch.zeros(B, dtype=torch.bool, device=x.device)
    iterations = torch.zeros(B, dtype=torch.long, device=x.device)
    tiny = torch.finfo(torch.float64).tiny
    for it in range(max_iterations + 1):
        act = active.nonzero().flatten()
        if act.numel() == 0:
            break
        ta = tm.take(act)
        scale = ta.diag.diagonal(dim1=2, dim2=3).mean(dim=(1, 2)).clamp_min(tiny)  # (b,)
        lam_a = lam[act]
        damp = torch.stack([lam_a, torch.full_like(lam_a, 1e-10)]) * scale  # (2, b)
        sys_diag = ta.diag[None] + damp[..., None, None, None] * eye  # (2, b, n, d, d)
        sol = solve_spd_block_tridiagonal(
            sys_diag.reshape(-1, n, d, d), ta.off.repeat(2, 1, 1, 1), -ta.g.repeat(2, 1, 1)
        ).reshape(2, -1, n, d)
        step, step0 = sol[0], sol[1]  # (b, n, d) each
        decrement = -(ta.g * step0).sum(dim=(1, 2))  # (b,) GN-predicted decrease of S
        done = (decrement <= tolerance * ta.S + noise[act]) | (noise[act] >= ta.S)
        stationary[act[done]] = True
        keep = ~done & (lam_a <= 1e12)
        active[act[~keep]] = False
        if it == max_iterations or not bool(keep.any()):
            break
        act, step, lam_a, scale = act[keep], step[keep], lam_a[keep], scale[keep]
        g_a, S_a = ta.g[keep], ta.S[keep]
        pred = -(g_a * step).sum(dim=(1, 2)) + lam_a * scale * step.pow(2).sum(dim=(1, 2))
        x_trial = x[act] + step.to(x.dtype)  # (b, n, d)
        tt = terms(x_trial, z0[act], z1[act])
        rho = (S_a - tt.S) / pred.clamp_min(tiny)
        accept = torch.isfinite(tt.S) & (S_a > tt.S) & (rho > 1e-4)
        iterations[act] += 1
        acc = act[accept]
        x[acc] = x_trial[accept]
        tm.put(acc, tt.take(accept.nonzero().flatten()))
        rho_c = rho.clamp(0, 1)
        lam[act] = torch.where(
            accept, lam_a * torch.clamp(1 - (2 * rho_c - 1) ** 3, min=1 / 3), lam_a * nu[act]
        ).clamp_min(1e-12)
        nu[act] = torch.where(accept, torch.full_like(lam_a, 2.0), nu[act] * 2)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(active=int(act.numel()))
    return x, stationary, iterations, tm
