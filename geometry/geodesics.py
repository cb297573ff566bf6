"""Batched connecting geodesics by discrete energy minimisation.

A geodesic between ``z0`` and ``z1`` is approximated by a discrete curve of ``N`` nodes (end
points fixed) minimising the discrete energy ``E = (N - 1) * sum_i ||h(c_{i+1}) - h(c_i)||^2``
(see :mod:`geometry.curves`). The minimiser has (approximately) constant Riemannian speed, so it
also minimises the length among curves with its nodes.

Default solver (``optimiser="lm"``): a per-curve Levenberg-Marquardt / Gauss-Newton method
vectorised over the batch. ``E`` is a sum of squares of the residuals
``r_i = h(c_{i+1}) - h(c_i)``; with node Jacobians ``J_i = dh/dz(c_i)`` (forward mode, one batched
pass) the Gauss-Newton matrix is block tridiagonal with blocks ``2 J_i^T J_i = 2 M(c_i)`` on the
diagonal and ``-J_i^T J_{i+1}`` beside it, and it is solved exactly per curve (block Thomas
algorithm, ``O(N d^3)``). No backward pass through ``embed`` is needed. Each curve keeps its own
damping, accepts or rejects its own steps (so its energy never increases) and stops on its own:
finished curves cost no further ``embed`` evaluations. Convergence test per curve: the
Gauss-Newton model predicts a relative energy decrease below ``tolerance``
(``g^T H^{-1} g <= tolerance * E``, the Newton decrement).

``optimiser="adam"`` is a plain batched Adam on the nodes (gradients by one backward pass),
kept as a baseline; its convergence test is stagnation of the best energy.

Guarantee: no returned curve is longer than its initial curve, measured both on its ``N`` nodes
and with every segment split into ``check_substeps`` parts (a discrete minimiser can "cut corners":
short chords between its nodes while the polyline between them crosses a high-metric region). If
the optimised curve is longer by either measure, the initial curve is returned, ``reverted`` is
set, and ``converged`` is cleared unless the difference is within ``revert_rtol`` (numerical
noise).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geometry._checks import Embed, check_curves, check_points, check_positive_int, embed_flat
from geometry.block_tridiagonal import solve_spd_block_tridiagonal
from geometry.curves import (
    constant_speed_curves,
    curve_energy,
    curve_length,
    resample_curves,
    straight_lines,
    subdivide_curves,
)
from geometry.metric import embed_and_tangents

__all__ = ["GeodesicResult", "connecting_geodesics"]


@dataclass
class GeodesicResult:
    """Output of :func:`connecting_geodesics` (batch-first).

    Attributes:
        curves: ``(B, N, d)`` node positions; ``curves[:, 0] == z0`` and ``curves[:, -1] == z1``.
        lengths: ``(B,)`` discrete Riemannian lengths on the ``N`` nodes.
        energies: ``(B,)`` discrete energies on the ``N`` nodes (curve parameter in ``[0, 1]``).
        converged: ``(B,)`` bool; ``False`` for curves that hit ``max_iterations``, stalled, or
            ended longer than their initial curve.
        iterations: ``(B,)`` int64, optimiser steps taken by each curve.
        initial_lengths: ``(B,)`` lengths of the initial curves (after resampling to ``N`` nodes).
        reverted: ``(B,)`` bool; the initial curve was returned because the optimised one was
            longer.
    """

    curves: Tensor
    lengths: Tensor
    energies: Tensor
    converged: Tensor
    iterations: Tensor
    initial_lengths: Tensor
    reverted: Tensor

    def __len__(self) -> int:
        return int(self.curves.shape[0])


# --------------------------------------------------------------------------------------------
# Gauss-Newton terms
# --------------------------------------------------------------------------------------------


def _gn_terms(
    embed: Embed, x: Tensor, h0: Tensor, h1: Tensor, chunk_size: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Sum of squared residuals, length and Gauss-Newton pieces for interior nodes ``x``.

    Args:
        x: ``(b, n, d)`` interior nodes; ``h0``, ``h1``: ``(b, D')`` embedded end points.

    Returns:
        ``S (b,)`` = sum_i ||r_i||^2, ``L (b,)`` = sum_i ||r_i||, ``g (b, n, d)`` = A^T r,
        ``diag (b, n, d, d)``, ``off (b, n - 1, d, d)`` of ``H = A^T A`` (all float64), where
        ``A = dr/dx``, and the node embeddings ``h (b, n, D')`` (dtype of ``x``).
    """
    b, n, d = x.shape
    per = max(1, chunk_size // (n * d))  # curves per forward-mode pass
    S_l, L_l, g_l, dg_l, off_l, h_l = [], [], [], [], [], []
    for s in range(0, b, per):
        xc = x[s : s + per]  # (c, n, d)
        c = xc.shape[0]
        h, T = embed_and_tangents(embed, xc.reshape(c * n, d))  # (c*n, D'), (d, c*n, D')
        h = h.reshape(c, n, -1)  # (c, n, D')
        T = T.reshape(d, c, n, -1)  # (d, c, n, D'): T[k] = J e_k at every node
        a, z = h0[s : s + per], h1[s : s + per]  # (c, D')
        inner = h[:, 1:] - h[:, :-1]  # (c, n-1, D') interior residuals
        first, last = (h[:, 0] - a).pow(2).sum(1), (z - h[:, -1]).pow(2).sum(1)  # (c,)
        inner_sq = inner.pow(2).sum(2)  # (c, n-1)
        S = first + last + inner_sq.sum(1)
        L = first.sqrt() + last.sqrt() + inner_sq.sqrt().sum(1)
        lap = 2 * h  # (c, n, D'): r_{j-1} - r_j = 2 h_j - h_{j-1} - h_{j+1}
        lap[:, 1:] -= h[:, :-1]
        lap[:, :-1] -= h[:, 1:]
        lap[:, 0] -= a
        lap[:, -1] -= z
        h_l.append(h)
        S_l.append(S.double())
        L_l.append(L.double())
        g_l.append(torch.einsum("kcnD,cnD->cnk", T, lap).double())
        dg_l.append(2.0 * torch.einsum("kcnD,lcnD->cnkl", T, T).double())
        off_l.append(-torch.einsum("kcnD,lcnD->cnkl", T[:, :, :-1], T[:, :, 1:]).double())
    return _cat(S_l), _cat(L_l), _cat(g_l), _cat(dg_l), _cat(off_l), _cat(h_l)


def _cat(parts: list[Tensor]) -> Tensor:
    """``torch.cat`` without the copy when there is one part (most calls: one chunk)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def _lm(
    embed: Embed,
    x: Tensor,
    h0: Tensor,
    h1: Tensor,
    tolerance: float,
    max_iterations: int,
    chunk_size: int,
    progress: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Batched Levenberg-Marquardt on interior nodes ``x (B, n, d)``.

    Returns:
        Final nodes (a copy), converged mask, iterations, final ``S`` and length, initial ``S``
        and length (float64; ``S`` is the energy divided by ``N - 1``), and the embeddings
        ``(B, n, D')`` of the final and of the initial nodes.
    """
    B, n, d = x.shape
    x = x.clone()
    S, L, g, diag, off, h = _gn_terms(embed, x, h0, h1, chunk_size)
    S_init, L_init, h_init = S.clone(), L.clone(), h.clone()
    if not bool(torch.isfinite(S).all()):
        bad = (~torch.isfinite(S)).nonzero().flatten().tolist()
        raise ValueError(f"embed gives a non-finite energy on the initial curves {bad[:10]}")
    # Roundoff level of S: residual components carry errors ~ eps * |h|.
    eps = torch.finfo(h0.dtype).eps
    noise = 100 * eps**2 * (n + 1) * (h0.double().pow(2).sum(1) + h1.double().pow(2).sum(1))  # (B,)
    eye = torch.eye(d, dtype=torch.float64, device=x.device)
    lam = torch.full((B,), 1e-4, dtype=torch.float64, device=x.device)  # relative damping
    nu = torch.full((B,), 2.0, dtype=torch.float64, device=x.device)
    active = torch.ones(B, dtype=torch.bool, device=x.device)
    converged = torch.zeros(B, dtype=torch.bool, device=x.device)
    iterations = torch.zeros(B, dtype=torch.long, device=x.device)
    bar = tqdm(total=max_iterations, disable=not progress, desc="geodesics (lm)", leave=False)
    for it in range(max_iterations + 1):
        act = active.nonzero().flatten()
        if act.numel() == 0:
            break
        dg, of, ga, Sa = diag[act], off[act], g[act], S[act]
        scale = dg.diagonal(dim1=2, dim2=3).mean(dim=(1, 2))  # (b,) mean diagonal of H
        scale = scale.clamp_min(torch.finfo(torch.float64).tiny)
        lam_a = lam[act]
        damp = torch.stack([lam_a, torch.full_like(lam_a, 1e-10)]) * scale  # (2, b)
        sys_diag = dg[None] + damp[..., None, None, None] * eye  # (2, b, n, d, d)
        sol = solve_spd_block_tridiagonal(
            sys_diag.reshape(-1, n, d, d), of.repeat(2, 1, 1, 1), -ga.repeat(2, 1, 1)
        ).reshape(2, -1, n, d)
        step, step0 = sol[0], sol[1]  # (b, n, d) each
        newton_decrement = -(ga * step0).sum(dim=(1, 2))  # (b,) GN-predicted decrease of S
        floor = noise[act]
        done = (newton_decrement <= tolerance * Sa + floor) | (Sa <= floor)
        converged[act[done]] = True
        stalled = lam_a > 1e12
        keep = ~done & ~stalled
        active[act[~keep]] = False
        if it == max_iterations or not bool(keep.any()):
            break
        act, step, ga, Sa = act[keep], step[keep], ga[keep], Sa[keep]
        lam_a, scale = lam_a[keep], scale[keep]
        pred = -(ga * step).sum(dim=(1, 2)) + lam_a * scale * step.pow(2).sum(dim=(1, 2))  # (b,)
        x_trial = x[act] + step.to(x.dtype)  # (b, n, d)
        S_t, L_t, g_t, diag_t, off_t, h_t = _gn_terms(
            embed, x_trial, h0[act], h1[act], chunk_size
        )
        rho = (Sa - S_t) / pred.clamp_min(torch.finfo(torch.float64).tiny)
        accept = torch.isfinite(S_t) & (S_t < Sa) & (rho > 1e-4)
        iterations[act] += 1
        acc = act[accept]
        x[acc], S[acc], L[acc], g[acc] = x_trial[accept], S_t[accept], L_t[accept], g_t[accept]
        h[acc] = h_t[accept]
        diag[acc], off[acc] = diag_t[accept], off_t[accept]
        rho_c = rho.clamp(0, 1)
        lam[act] = torch.where(
            accept, lam_a * torch.clamp(1 - (2 * rho_c - 1) ** 3, min=1 / 3), lam_a * nu[act]
        ).clamp_min(1e-12)
        nu[act] = torch.where(accept, torch.full_like(lam_a, 2.0), nu[act] * 2)
        bar.update(1)
        bar.set_postfix(active=int(act.numel()))
    bar.close()
    return x, converged, iterations, S, L, S_init, L_init, h, h_init


def _adam(
    embed: Embed,
    x: Tensor,
    z0: Tensor,
    z1: Tensor,
    tolerance: float,
    max_iterations: int,
    lr: float,
    chunk_size: int,
    progress: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Batched Adam on interior nodes; per-curve best-so-far and stagnation test."""
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
    bar = tqdm(total=max_iterations, disable=not progress, desc="geodesics (adam)", leave=False)
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
    bar.close()
    return best_x, converged, iterations


# --------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------


def connecting_geodesics(
    embed: Embed,
    z0: Tensor,
    z1: Tensor,
    *,
    n_nodes: int = 24,
    init: str = "line",
    init_curves: Tensor | None = None,
    graph_points: Tensor | None = None,
    graph_k: int = 40,
    optimiser: str = "lm",
    tolerance: float = 1e-3,
    max_iterations: int | None = None,
    lr: float = 0.01,
    reparametrise: bool = True,
    revert_rtol: float = 1e-3,
    check_substeps: int | None = None,
    chunk_size: int = 8192,
    progress: bool = False,
) -> GeodesicResult:
    """Geodesics between ``B`` pairs of latent points, all at once.

    Args:
        embed: ``(n, d) -> (n, D')`` callable whose Euclidean pull-back is the metric (for a VAE,
            ``[mu(z), sigma(z)]`` flattened, e.g. ``TwoStageVAE.embed``).
        z0: start points ``(B, d)``.
        z1: end points ``(B, d)``.
        n_nodes: nodes per curve including both end points (>= 2).
        init: ``"line"`` (straight latent line), ``"curves"`` (use ``init_curves``; implied when
            they are given) or ``"graph"`` (shortest path on a kNN graph over
            ``graph_points`` plus the end points, see :mod:`geometry.graph`).
        init_curves: ``(B, M, d)`` initial polylines whose end points equal ``z0`` / ``z1``
            (M >= 2, resampled to ``n_nodes``).
        graph_points: ``(P, d)`` latent points (e.g. data codes) for ``init="graph"``.
        graph_k: neighbours per node of that graph.
        optimiser: ``"lm"`` (batched Levenberg-Marquardt, default) or ``"adam"``.
        tolerance: ``"lm"``: stop a curve when the Gauss-Newton model predicts a relative energy
            decrease below this; ``"adam"``: relative decrease of the best energy per iteration,
            averaged over 20 iterations.
        max_iterations: step limit per curve (default 100 for ``"lm"``, 1000 for ``"adam"``).
        lr: ``"adam"`` step size as a fraction of ``||z1 - z0||``.
        reparametrise: place the initial nodes at equal Riemannian arc length (recommended:
            then energy decrease implies length decrease).
        revert_rtol: an optimised curve longer than its initial curve is replaced by the initial
            curve; ``converged`` is cleared unless it was longer by at most this relative amount.
        check_substeps: the "never longer" check also compares both curves with every segment
            split into this many equal parts (1: on the nodes only); ``None``:
            ``max(2, ceil(32 / (N - 1)))``, i.e. midpoints for ``N >= 17`` and at least 32
            sub-segments per curve below (few nodes cut corners more). The node embeddings are
            reused: only the new points go through ``embed``.
        chunk_size: at most this many rows per ``embed`` call (forward mode uses ``d`` rows per
            node).
        progress: show a tqdm progress bar.

    Returns:
        A :class:`GeodesicResult` on the device and dtype of ``z0``.

    Raises:
        ValueError: on malformed input (shapes, ``d`` mismatch, non-finite values, end points of
            ``init_curves`` not matching, unknown options).
    """
    check_points(z0, "z0")
    check_points(z1, "z1")
    if z0.shape[1] != z1.shape[1]:
        raise ValueError(
            f"z0 and z1 have different latent dimensions: {z0.shape[1]} vs {z1.shape[1]}"
        )
    if z0.shape[0] != z1.shape[0]:
        raise ValueError(
            f"z0 and z1 must hold the same number of points: {z0.shape[0]} vs {z1.shape[0]}"
        )
    if z0.dtype != z1.dtype or z0.device != z1.device:
        raise ValueError(
            f"z0 and z1 differ in dtype/device: {z0.dtype}/{z0.device} vs {z1.dtype}/{z1.device}"
        )
    check_positive_int(n_nodes, "n_nodes", minimum=2)
    if optimiser not in ("lm", "adam"):
        raise ValueError(f"optimiser must be 'lm' or 'adam', got {optimiser!r}")
    if not (tolerance >= 0 and math.isfinite(tolerance)):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    if max_iterations is None:
        max_iterations = 100 if optimiser == "lm" else 1000
    check_positive_int(max_iterations, "max_iterations", minimum=0)
    check_positive_int(chunk_size, "chunk_size")
    if check_substeps is None:
        check_substeps = max(2, -(-32 // (n_nodes - 1)))
    check_positive_int(check_substeps, "check_substeps")
    if init_curves is not None and init == "line":
        init = "curves"
    if init not in ("line", "curves", "graph"):
        raise ValueError(f"init must be 'line', 'curves' or 'graph', got {init!r}")
    B, d = z0.shape
    z0, z1 = z0.detach(), z1.detach()

    with torch.no_grad():
        if init == "line":
            start = straight_lines(z0, z1, n_nodes)  # (B, N, d)
        elif init == "curves":
            if init_curves is None:
                raise ValueError("init='curves' needs init_curves of shape (B, M, d)")
            start = _checked_init_curves(init_curves.detach(), z0, z1)
        else:
            if graph_points is None:
                raise ValueError("init='graph' needs graph_points (P, d), e.g. the data codes")
            start = _graph_init(embed, z0, z1, graph_points.detach(), graph_k)
        if reparametrise and n_nodes > 2:
            start = constant_speed_curves(embed, start, n_nodes, n_sub=2, chunk_size=chunk_size)
        elif start.shape[1] != n_nodes:
            start = resample_curves(start, n_nodes)
        start[:, 0], start[:, -1] = z0, z1
        energies = None
        node_h = start_h = None  # node embeddings, when the solver has them
        if n_nodes > 2 and B > 0 and optimiser == "lm":
            h0 = embed_flat(embed, z0)  # (B, D')
            h1 = embed_flat(embed, z1)
            x, converged, iterations, S, lengths, S_init, initial_lengths, h, h_init = _lm(
                embed, start[:, 1:-1], h0, h1, tolerance, max_iterations, chunk_size, progress
            )  # lengths and S come with the Jacobian passes: no extra embed calls
            energies, initial_energies = (n_nodes - 1) * S, (n_nodes - 1) * S_init
            curves = torch.cat([z0[:, None], x, z1[:, None]], dim=1)  # (B, N, d)
            node_h = torch.cat([h0[:, None], h, h1[:, None]], dim=1)  # (B, N, D')
            start_h = torch.cat([h0[:, None], h_init, h1[:, None]], dim=1)
        else:
            initial_lengths = curve_length(embed, start, chunk_size)  # (B,)
            if n_nodes == 2 or B == 0:
                curves = start
                converged = torch.ones(B, dtype=torch.bool, device=z0.device)
                iterations = torch.zeros(B, dtype=torch.long, device=z0.device)
            else:
                x, converged, iterations = _adam(
                    embed, start[:, 1:-1], z0, z1, tolerance, max_iterations, lr, chunk_size,
                    progress,
                )  # fmt: skip
                curves = torch.cat([z0[:, None], x, z1[:, None]], dim=1)  # (B, N, d)
            lengths = curve_length(embed, curves, chunk_size)

        longer = ~(lengths <= initial_lengths)  # also catches NaN
        far = ~(lengths <= initial_lengths * (1 + revert_rtol))
        if check_substeps > 1 and n_nodes > 2 and B > 0:
            fine = _subdivided_length(embed, curves, check_substeps, node_h, chunk_size)
            fine0 = _subdivided_length(embed, start, check_substeps, start_h, chunk_size)
            longer |= ~(fine <= fine0)
            far |= ~(fine <= fine0 * (1 + revert_rtol))
        reverted = longer.clone()
        if bool(longer.any()):
            converged = converged & ~far
            curves[longer] = start[longer]
            lengths = torch.where(longer, initial_lengths, lengths)
            if energies is not None:
                energies = torch.where(longer, initial_energies, energies)
        if energies is None:
            energies = curve_energy(embed, curves, chunk_size)
        lengths, energies = lengths.to(z0.dtype), energies.to(z0.dtype)
        initial_lengths = initial_lengths.to(z0.dtype)
    return GeodesicResult(
        curves=curves,
        lengths=lengths,
        energies=energies,
        converged=converged,
        iterations=iterations,
        initial_lengths=initial_lengths,
        reverted=reverted,
    )


def _subdivided_length(
    embed: Embed, curves: Tensor, n_sub: int, node_h: Tensor | None, chunk_size: int
) -> Tensor:
    """Length of each polyline with every segment split into ``n_sub`` equal parts.

    Args:
        curves: ``(B, N, d)``.
        n_sub: parts per segment (>= 2).
        node_h: ``(B, N, D')`` embeddings of the nodes if known (only the new points are then
            embedded), else ``None``.

    Returns:
        ``(B,)`` float64 lengths.
    """
    if node_h is None:
        return curve_length(embed, subdivide_curves(curves, n_sub), chunk_size).double()
    B, N, d = curves.shape
    s = torch.arange(1, n_sub, dtype=curves.dtype, device=curves.device) / n_sub  # (n_sub-1,)
    step = curves[:, 1:] - curves[:, :-1]  # (B, N-1, d)
    inner = curves[:, :-1, None] + s[None, None, :, None] * step[:, :, None]  # (B, N-1, n_sub-1, d)
    flat = inner.reshape(-1, d)
    h_inner = _cat([embed_flat(embed, part) for part in flat.split(chunk_size)])
    h_inner = h_inner.reshape(B, N - 1, n_sub - 1, -1).to(node_h.dtype)  # (B, N-1, n_sub-1, D')
    first = (h_inner[:, :, 0] - node_h[:, :-1]).norm(dim=2)  # (B, N-1)
    last = (node_h[:, 1:] - h_inner[:, :, -1]).norm(dim=2)  # (B, N-1)
    middle = (h_inner[:, :, 1:] - h_inner[:, :, :-1]).norm(dim=3).sum(dim=2)  # (B, N-1)
    return (first.double() + middle.double() + last.double()).sum(dim=1)


def _checked_init_curves(init_curves: Tensor, z0: Tensor, z1: Tensor) -> Tensor:
    check_curves(init_curves, "init_curves")
    B, d = z0.shape
    if init_curves.shape[0] != B or init_curves.shape[2] != d:
        raise ValueError(
            f"init_curves must have shape ({B}, M, {d}) to match z0, got {tuple(init_curves.shape)}"
        )
    init_curves = init_curves.to(dtype=z0.dtype, device=z0.device)
    scale = 1e-4 * (1 + (z1 - z0).norm(dim=1))  # (B,)
    err = torch.maximum((init_curves[:, 0] - z0).norm(dim=1), (init_curves[:, -1] - z1).norm(dim=1))
    if bool((err > scale).any()):
        worst = int(err.argmax())
        raise ValueError(
            f"init_curves end points do not match z0/z1 (worst: curve {worst}, "
            f"distance {float(err[worst]):.3g})"
        )
    out = init_curves.clone()
    out[:, 0], out[:, -1] = z0, z1
    return out


def _graph_init(embed: Embed, z0: Tensor, z1: Tensor, graph_points: Tensor, k: int) -> Tensor:
    from geometry.graph import knn_graph, shortest_path_curves

    check_points(graph_points, "graph_points", dim=z0.shape[1])
    B = z0.shape[0]
    nodes = torch.cat([graph_points.to(z0), z0, z1])  # (P + 2B, d)
    P = graph_points.shape[0]
    graph = knn_graph(embed, nodes, k=min(k, nodes.shape[0] - 1))
    src = torch.arange(P, P + B)
    tgt = torch.arange(P + B, P + 2 * B)
    curves, _ = shortest_path_curves(graph, src, tgt, on_disconnected="raise")
    return curves
