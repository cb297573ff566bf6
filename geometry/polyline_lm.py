"""Batched Levenberg-Marquardt on the interior nodes of polylines with fixed end points.

The objectives (:mod:`geometry.sub_point_length`, :mod:`geometry.node_energy`) give, at
interior nodes ``x (b, n, d)``, their value, half their gradient and half their Gauss-Newton
matrix, which is block tridiagonal (a node interacts with its two neighbours only); each LM step
solves it exactly per curve (:mod:`geometry.block_tridiagonal`, ``O(n d^3)``). Optionally the
step is a truncated Newton step on the exact Hessian (Hessian-vector products), with that solve
as the preconditioner of conjugate gradients.

Optionally (``gradient``) a step may reuse the Gauss-Newton matrix of an earlier point with the
exact gradient at the current one (a frozen-model step: one reverse pass instead of the
forward-mode Jacobians); the matrix is refreshed after ``max_frozen`` such steps, after a
rejected step, and always before a curve counts as stationary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geometry.block_tridiagonal import block_tridiagonal_matvec, solve_spd_block_tridiagonal
from geometry.negative_curvature import second_order_step

__all__ = [
    "GradientFn",
    "HessianFn",
    "LMTerms",
    "ObjectiveFn",
    "TERM_FIELDS",
    "TermsFn",
    "leave_saddles",
    "levenberg_marquardt",
    "terms_by_chunks",
]


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
ObjectiveFn = Callable[[Tensor, Tensor, Tensor], Tensor]
HessianFn = Callable[[Tensor, Tensor, Tensor], Callable[[Tensor], Tensor]]
GradientFn = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]


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
    objective: ObjectiveFn | None = None,
    hessian: HessianFn | None = None,
    cg_iterations: int = 8,
    gradient: GradientFn | None = None,
    max_frozen: int = 0,
    saddle_hessian: HessianFn | None = None,
    saddle_objective: ObjectiveFn | None = None,
    saddle_rtol: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, LMTerms]:
    """Batched Levenberg-Marquardt on interior nodes ``x (B, n, d)`` between ``z0``, ``z1``.

    Every curve keeps its own damping, accepts a step only if the objective decreases, and is
    stationary when the Gauss-Newton model predicts a decrease below ``tolerance`` times the
    objective (or below its roundoff level).

    With ``hessian`` (and ``objective``) every iteration also tries a truncated Newton step:
    preconditioned conjugate gradients on the damped exact Hessian, ``cg_iterations`` products
    at most, preconditioned by the damped Gauss-Newton solve (:func:`_newton_cg`). Of the two
    trial steps the accepted one with the lower objective is taken (the Newton step's ratio of
    actual to predicted decrease then drives the damping); the stationarity test stays the same.

    Args:
        terms: ``(x, z0, z1) -> LMTerms`` of the objective at interior nodes ``x (b, n, d)``.
        x: ``(B, n, d)`` initial interior nodes (not modified).
        z0, z1: ``(B, d)`` end points.
        tolerance: relative predicted decrease at which a curve is stationary.
        max_iterations: step limit per curve.
        bar: optional progress bar, advanced once per iteration.
        objective: ``(x, z0, z1) -> S (b,)`` float64, the objective of ``terms`` alone
            (cheaper): trial steps are judged by it, and ``terms`` is evaluated only where a
            step is taken.
        hessian: ``(x, z0, z1) -> (v -> H v)``, half the exact Hessian of ``S`` at ``x``
            (``v``, ``H v`` of shape ``(b, n, d)``, float64); used only with ``objective``.
        cg_iterations: most Hessian-vector products per step (with ``hessian``).
        gradient: ``(x, z0, z1) -> (S, L, g)`` (float64; ``g`` half the gradient, as in
            :class:`LMTerms`), used only with ``objective``: after an accepted step the next
            step keeps the Gauss-Newton matrix and takes this exact gradient, at most
            ``max_frozen`` times in a row; a step rejected on a kept matrix gets a fresh one, and
            the stationarity test is only passed with a fresh matrix.
        max_frozen: most consecutive frozen-model steps per curve (0: none).
        saddle_hessian: ``(x, z0, z1) -> (v -> H v)`` as ``hessian``; with
            ``saddle_objective`` (or ``objective``), a curve that passes the stationarity test
            also tries second-order steps on the exact Hessian
            (:func:`geometry.negative_curvature.second_order_step`: Newton steps in a Krylov
            space, and the lowest curvature direction where that is negative); if the
            objective drops there by more than ``saddle_rtol`` (or the stationarity
            threshold), the curve moves and goes on. A Gauss-Newton model cannot see a saddle
            point and calls slow slopes of a length flat.
        saddle_objective: ``(x, z0, z1) -> S`` for that search (default ``objective``).
        saddle_rtol: the search moves a curve only if the objective drops by more than this
            relative amount (at least ``tolerance``), e.g. the resolution of the reported length.

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
    frozen = torch.zeros(B, dtype=torch.long, device=x.device)  # steps since the matrix
    freeze = gradient is not None and objective is not None and max_frozen > 0
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
        # a test on a frozen matrix does not count: the matrix is refreshed (at the same nodes)
        # and the curve tested again in the next iteration (after the last one: not stationary)
        stale = done & (frozen[act] > 0)
        recheck = stale if it < max_iterations else torch.zeros_like(stale)
        if bool(recheck.any()):
            idx = act[recheck]
            tm.put(idx, terms(x[idx], z0[idx], z1[idx]))
            frozen[idx] = 0
        done &= ~stale
        if saddle_hessian is not None and it < max_iterations and bool(done.any()):
            moved = leave_saddles(
                saddle_hessian, saddle_objective or objective, x, z0, z1, act[done], ta.take(
                    done.nonzero().flatten()), max(tolerance, saddle_rtol), noise,
            )  # fmt: skip
            if moved.numel():
                tm.put(moved, terms(x[moved], z0[moved], z1[moved]))
                frozen[moved] = 0
                iterations[moved] += 1
                lam[moved], nu[moved] = 1e-4, 2.0  # a new start for the damping
                esc = torch.isin(act, moved)
                done &= ~esc
                recheck = recheck | esc  # tested again, with fresh terms, next iteration
        stationary[act[done]] = True
        keep = ~done & (lam_a <= 1e12)
        active[act[~keep]] = False
        keep &= ~recheck  # tested again with the fresh matrix in the next iteration
        if it == max_iterations or not bool((keep | recheck).any()):
            break
        if not bool(keep.any()):
            continue
        act, step, lam_a, scale = act[keep], step[keep], lam_a[keep], scale[keep]
        g_a, S_a = ta.g[keep], ta.S[keep]
        pred = -(g_a * step).sum(dim=(1, 2)) + lam_a * scale * step.pow(2).sum(dim=(1, 2))
        x_trial = x[act] + step.to(x.dtype)  # (b, n, d)
        if objective is None:
            tt = terms(x_trial, z0[act], z1[act])
            S_t = tt.S
        else:  # the objective alone; the terms only where the step is taken
            S_t = objective(x_trial, z0[act], z1[act])
        rho = (S_a - S_t) / pred.clamp_min(tiny)
        accept = torch.isfinite(S_t) & (S_a > S_t) & (rho > 1e-4)
        if hessian is not None and objective is not None and cg_iterations > 0:
            # the Newton step, judged beside the LM step: the one that ends lower is taken
            step_n, pred_n = _newton_cg(
                hessian(x[act], z0[act], z1[act]), ta.take(keep.nonzero().flatten()),
                lam_a * scale, step, pred, cg_iterations,
            )  # fmt: skip
            x_n = x[act] + step_n.to(x.dtype)
            S_n = objective(x_n, z0[act], z1[act])
            rho_n = (S_a - S_n) / pred_n.clamp_min(tiny)
            accept_n = torch.isfinite(S_n) & (S_a > S_n) & (rho_n > 1e-4)
            newton = accept_n & (~accept | (S_n <= S_t))
            x_trial = torch.where(newton[:, None, None], x_n, x_trial)
            rho = torch.where(newton, rho_n, rho)
            accept = accept | accept_n
        iterations[act] += 1
        acc = act[accept]
        x[acc] = x_trial[accept]
        if objective is None:
            tm.put(acc, tt.take(accept.nonzero().flatten()))
        elif acc.numel() or freeze:
            fresh = acc
            if freeze:
                # an accepted step keeps the matrix (up to max_frozen times in a row); a step
                # rejected on a frozen matrix gets a fresh one
                hold = frozen[acc] < max_frozen
                held = acc[hold]
                fresh = torch.cat([acc[~hold], act[~accept & (frozen[act] > 0)]])
                if held.numel():
                    assert gradient is not None
                    tm.S[held], tm.L[held], tm.g[held] = gradient(x[held], z0[held], z1[held])
                    frozen[held] += 1
            if fresh.numel():
                tm.put(fresh, terms(x[fresh], z0[fresh], z1[fresh]))
                frozen[fresh] = 0
        rho_c = rho.clamp(0, 1)
        lam[act] = torch.where(
            accept, lam_a * torch.clamp(1 - (2 * rho_c - 1) ** 3, min=1 / 3), lam_a * nu[act]
        ).clamp_min(1e-12)
        nu[act] = torch.where(accept, torch.full_like(lam_a, 2.0), nu[act] * 2)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(active=int(act.numel()))
    return x, stationary, iterations, tm


def leave_saddles(
    hessian: HessianFn,
    objective: ObjectiveFn | None,
    x: Tensor,
    z0: Tensor,
    z1: Tensor,
    idx: Tensor,
    ta: LMTerms,
    tolerance: float,
    noise: Tensor,
) -> Tensor:
    """Moves the curves ``idx`` that sit on a saddle of the objective (in place in ``x``) and
    returns their indices: those whose second-order trial steps lower the objective by more
    than ``tolerance * S + noise``.

    Args:
        hessian: ``(x, z0, z1) -> (v -> H v)`` at the curves' nodes.
        objective: ``(x, z0, z1) -> S``.
        x: ``(B, n, d)`` interior nodes of all curves (modified in place at ``idx``).
        z0, z1: ``(B, d)`` end points.
        idx: ``(b,)`` the curves to search.
        ta: the terms at ``x[idx]`` (gradient and Gauss-Newton preconditioner).
        tolerance: relative decrease a move must exceed.
        noise: ``(B,)`` roundoff level of the objective.
    """
    if objective is None:
        raise ValueError("the saddle search needs an objective (saddle_objective or objective)")
    a, b = z0[idx], z1[idx]
    scale = (b - a).double().norm(dim=1).clamp_min(torch.finfo(torch.float64).tiny)

    def values(xs: Tensor, owner: Tensor) -> Tensor:
        return objective(xs, a[owner], b[owner])

    d = x.shape[2]
    eye = torch.eye(d, dtype=torch.float64, device=x.device)
    mean_diag = ta.diag.diagonal(dim1=2, dim2=3).mean(dim=(1, 2))  # (b,)
    pdiag = (
        ta.diag
        + (1e-10 * mean_diag.clamp_min(torch.finfo(torch.float64).tiny))[:, None, None, None] * eye
    )  # (b, n, d, d): the Gauss-Newton matrix, as in the stationarity test

    def solve(r: Tensor) -> Tensor:
        return solve_spd_block_tridiagonal(pdiag, ta.off, r)

    def mass(v: Tensor) -> Tensor:
        return block_tridiagonal_matvec(pdiag, ta.off, v)

    cand, gain = second_order_step(
        hessian(x[idx], a, b), values, x[idx], ta.S, ta.g, scale, solve, mass,
        mass_blocks=(pdiag, ta.off),
    )  # fmt: skip
    move = gain > tolerance * ta.S + noise[idx]
    x[idx[move]] = cand[move]
    return idx[move]


def _newton_cg(
    hvp: Callable[[Tensor], Tensor],
    ta: LMTerms,
    mu: Tensor,
    step: Tensor,
    pred: Tensor,
    iterations: int,
    forcing: float = 0.1,
) -> tuple[Tensor, Tensor]:
    """Truncated preconditioned CG on the damped exact Newton system ``(H + mu I) s = -g``.

    ``hvp`` gives ``H v`` (half the exact Hessian), the damped Gauss-Newton matrix of ``ta``
    preconditions, so the first iterate is the LM ``step`` (rescaled by the exact curvature).
    A curve stops at negative curvature (keeping its last iterate; the LM step if none), at a
    preconditioned residual below ``forcing`` times the first, or after ``iterations`` products.

    Returns:
        Steps ``(b, n, d)`` and their predicted decrease of ``S`` under the exact model.
    """
    b, n, d = step.shape
    eye = torch.eye(d, dtype=step.dtype, device=step.device)
    pdiag = ta.diag + mu[:, None, None, None] * eye  # (b, n, d, d)

    def precondition(r: Tensor) -> Tensor:
        return solve_spd_block_tridiagonal(pdiag, ta.off, r)

    def dot(a: Tensor, c: Tensor) -> Tensor:
        return (a * c).sum(dim=(1, 2))  # (b,)

    s = torch.zeros_like(step)
    As = torch.zeros_like(step)  # (H + mu) s, accumulated
    r = -ta.g
    z = step  # M^-1 r: the LM step
    p = z.clone()
    rz = dot(r, z)
    rz0 = rz.clone()
    live = torch.ones(b, dtype=torch.bool, device=step.device)
    used = torch.zeros_like(live)  # took at least one CG step
    for _ in range(iterations):
        Ap = hvp(p) + mu[:, None, None] * p
        pAp = dot(p, Ap)
        live &= pAp > 0
        if not bool(live.any()):
            break
        alpha = torch.where(live, rz / torch.where(live, pAp, 1.0), 0.0)[:, None, None]
        s = s + alpha * p
        As = As + alpha * Ap
        used |= live
        r = r - alpha * Ap
        z = precondition(r)
        rz_new = dot(r, z)
        live &= rz_new > forcing**2 * rz0
        if not bool(live.any()):
            break
        p = z + (rz_new / rz.clamp_min(torch.finfo(rz.dtype).tiny))[:, None, None] * p
        rz = rz_new
    # exact-model decrease: -(2 g.s + s^T H s), with H s = (H + mu) s - mu s
    pred_cg = -(2 * dot(ta.g, s) + dot(s, As - mu[:, None, None] * s))
    out_step = torch.where(used[:, None, None], s, step)
    out_pred = torch.where(used, pred_cg, pred)
    return out_step, out_pred
