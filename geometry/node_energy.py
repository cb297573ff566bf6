"""The discrete energy of a polyline on its nodes, minimized by Levenberg-Marquardt.

``E_N = (N - 1) sum_i ||h(c_{i+1}) - h(c_i)||^2`` over ``N`` nodes with fixed end points: the
classical discrete geodesic energy. Its minimizers have equal chords, and at a minimizer the
interior gradient vanishes, which is what the envelope-theorem gradient of
:func:`geometry.squared_geodesic_distance` needs. (The chords undercount the length of the
polyline between the nodes; :func:`geometry.connecting_geodesics` minimizes the measured
length instead. This module is for the energy itself.)

The Gauss-Newton model of ``E_N`` (chord Jacobians ``-J_i``, ``J_{i+1}``) is block tridiagonal:
``diag_j = 2 (N - 1) J_j^T J_j``, ``off_{j, j+1} = -(N - 1) J_j^T J_{j+1}`` (halved), gradient
``(N - 1) J_j^T (r_{j-1} - r_j)`` (halved), with ``r_i = h(c_{i+1}) - h(c_i)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geometry._checks import Embed, check_curves, check_positive_int
from geometry.chord_contractions import chord_contractions
from geometry.polyline_lm import LMTerms, levenberg_marquardt, terms_by_chunks

__all__ = ["NodeEnergyResult", "minimize_node_energy", "node_energy_terms"]


@dataclass
class NodeEnergyResult:
    """Output of :func:`minimize_node_energy`.

    Attributes:
        curves: ``(B, N, d)`` nodes (end points as given).
        energies: ``(B,)`` float64 ``E_N`` at ``curves``.
        stationary: ``(B,)`` bool; the LM first-order test passed.
        iterations: ``(B,)`` int64 LM steps.
    """

    curves: Tensor
    energies: Tensor
    stationary: Tensor
    iterations: Tensor


def _energy_chunk(embed: Embed, nodes: Tensor) -> LMTerms:
    c, N, d = nodes.shape
    k = N - 1
    cc = chord_contractions(embed, nodes)
    ell = cc.chords  # (c, N-1)
    ell2 = ell.pow(2)
    # roundoff of E_N: each chord is a difference of embeddings of size ||h||
    noise = 20 * cc.eps * k * ell.max(dim=1).values * cc.h_norms
    gram, cross, jr_lo, jr_hi = cc.gram, cc.cross, cc.lo, cc.hi
    return LMTerms(
        S=k * ell2.sum(dim=1),
        L=ell.sum(dim=1),
        g=k * (jr_hi[:, :-1] - jr_lo[:, 1:]),  # (c, N-2, d)
        diag=2 * k * gram[:, 1:-1],
        off=-k * cross[:, 1:-1],  # (c, N-3, d, d)
        noise=noise,
    )


def node_energy_terms(embed: Embed, x: Tensor, z0: Tensor, z1: Tensor, chunk_size: int) -> LMTerms:
    """:class:`~geometry.polyline_lm.LMTerms` of ``E_N`` at interior nodes ``x (b, n, d)``
    between ``z0``, ``z1`` ``(b, d)`` (``L`` holds the chord sums)."""
    b, n, d = x.shape
    return terms_by_chunks(
        lambda nodes: _energy_chunk(embed, nodes), x, z0, z1, (n + 2) * d, chunk_size
    )


def minimize_node_energy(
    embed: Embed,
    curves: Tensor,
    *,
    tolerance: float = 1e-8,
    max_iterations: int = 500,
    chunk_size: int = 8192,
    progress: bool = False,
) -> NodeEnergyResult:
    """Minimize ``E_N`` over the interior nodes of ``curves (B, N, d)`` (end points fixed).

    Args:
        embed: ``(n, d) -> (n, D')`` callable.
        curves: ``(B, N, d)`` initial polylines, ``N >= 2`` (e.g. the curves of
            :func:`geometry.connecting_geodesics`, which pick the basin).
        tolerance: stationary when the Gauss-Newton model predicts a relative decrease of
            ``E_N`` below this (or below its roundoff).
        max_iterations: LM step limit per curve.
        chunk_size: at most this many rows per forward-mode pass.
        progress: show a tqdm progress bar.

    Returns:
        A :class:`NodeEnergyResult` on the device and dtype of ``curves``.
    """
    check_curves(curves, "curves")
    check_positive_int(max_iterations, "max_iterations", minimum=0)
    check_positive_int(chunk_size, "chunk_size")
    if not (tolerance >= 0):
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    curves = curves.detach()
    B, N, d = curves.shape
    z0, z1 = curves[:, 0], curves[:, -1]

    def terms(x: Tensor, a: Tensor, b: Tensor) -> LMTerms:
        return node_energy_terms(embed, x, a, b, chunk_size)

    with torch.no_grad():
        if N == 2 or B == 0:
            t = terms(curves[:, 1:-1], z0, z1) if B else None
            energies = t.S if t is not None else curves.new_zeros(0, dtype=torch.float64)
            ones = torch.ones(B, dtype=torch.bool, device=curves.device)
            zeros = torch.zeros(B, dtype=torch.long, device=curves.device)
            return NodeEnergyResult(curves.clone(), energies, ones, zeros)
        bar = tqdm(total=max_iterations, disable=not progress, desc="node energy", leave=False)
        x, stationary, iterations, tm = levenberg_marquardt(
            terms, curves[:, 1:-1], z0, z1, tolerance, max_iterations, bar
        )
        bar.close()
    out = torch.cat([z0[:, None], x, z1[:, None]], dim=1)
    return NodeEnergyResult(out, tm.S, stationary, iterations)
