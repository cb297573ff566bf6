"""A differentiable squared geodesic distance, with gradients for both end points.

For the constant-speed geodesic ``c: [0, 1] -> Z`` from ``z0`` to ``z1`` the energy
``E = int_0^1 ||c'(t)||^2_M dt`` equals the squared length ``L^2``. Its first variation along a
geodesic, with the interior of the curve free, only has boundary terms:

    ``dE = 2 <c'(1), dz1>_{M(z1)} - 2 <c'(0), dz0>_{M(z0)}``,

so ``d(L^2)/dz0 = -2 M(z0) v0`` and ``d(L^2)/dz1 = 2 M(z1) v1``, with ``v0 = c'(0) = log_{z0}(z1)``
and ``v1 = c'(1)`` the end velocities (``||v0||_{M(z0)} = L``). In the embedding ``h``,
``M(z) v = J(z)^T (J(z) v)`` and ``J v0`` is the embedded end tangent.

Discretely, the value is the minimal node energy
``E_N = (N - 1) sum_i ||h(c_{i+1}) - h(c_i)||^2`` over the interior nodes: the curves of
:func:`geometry.connecting_geodesics` (which pick the basin) are polished to a stationary point
of ``E_N`` by :func:`geometry.node_energy.minimize_node_energy`. At that minimizer
the interior gradient vanishes, so the total derivative of the minimal energy with respect to
an end point is its partial derivative (envelope theorem):

    ``dE_N/dz0 = -2 (N - 1) J(z0)^T (h(c_1) - h(z0))``,
    ``dE_N/dz1 =  2 (N - 1) J(z1)^T (h(z1) - h(c_{N-2}))``,

the discrete form of the formula above (``(N - 1) (h(c_1) - h(z0)) ~ J(z0) v0``). The backward
pass is one vector-Jacobian product of ``embed`` at each end point; no backward pass through the
solver. The gradient is exact for the discrete minimal energy up to the solver's tolerance, and
converges to the continuum one as ``N`` grows.

Gradients flow to ``z0`` and ``z1`` only (not to ``embed``'s parameters); they are first order
(``once_differentiable``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from geometry._checks import Embed, check_points, check_positive_int, embed_flat
from geometry.geodesics import GeodesicResult, connecting_geodesics
from geometry.node_energy import NodeEnergyResult, minimize_node_energy

__all__ = ["SquaredDistanceResult", "SquaredGeodesicDistance", "squared_geodesic_distance"]


@dataclass
class SquaredDistanceResult:
    """What :func:`squared_geodesic_distance` solved.

    Attributes:
        energy: the node-energy minimization (``curves``, ``energies``, ``stationary``,
            ``iterations``): the curves the value and the gradient are taken on.
        geodesics: the :func:`geometry.connecting_geodesics` result it started from.
    """

    energy: NodeEnergyResult
    geodesics: GeodesicResult

    def __len__(self) -> int:
        return len(self.geodesics)

    @property
    def stationary(self) -> Tensor:
        """``(B,)`` bool: ``E_N`` is stationary (the gradient formula holds)."""
        return self.energy.stationary


class SquaredGeodesicDistance(torch.autograd.Function):
    """``autograd.Function``: forward solves the geodesics (no graph), backward uses the end
    tangents. Call through :func:`squared_geodesic_distance`."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        z0: Tensor,
        z1: Tensor,
        embed: Embed,
        options: dict[str, Any],
        polish: dict[str, Any],
        holder: list[SquaredDistanceResult],
    ) -> Tensor:
        geo = connecting_geodesics(embed, z0.detach(), z1.detach(), **options)
        res = minimize_node_energy(embed, geo.curves, **polish)
        holder.append(SquaredDistanceResult(res, geo))
        c = res.curves  # (B, N, d)
        N = c.shape[1]
        with torch.no_grad():
            h = embed_flat(embed, torch.cat([c[:, 0], c[:, 1], c[:, -2], c[:, -1]]))  # (4B, D')
        h_a, h_b, h_y, h_z = h.chunk(4)  # (B, D') each: h(z0), h(c_1), h(c_{N-2}), h(z1)
        ctx.embed = embed  # type: ignore[attr-defined]
        ctx.save_for_backward(
            z0.detach(), z1.detach(), (N - 1) * (h_b - h_a), (N - 1) * (h_z - h_y)
        )
        return res.energies.to(z0.dtype)  # (B,) the minimal node energy E_N

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None, None, None, None]:
        z0, z1, u0, u1 = ctx.saved_tensors  # (B, d), (B, d), (B, D'), (B, D'): J v0, J v1
        embed = ctx.embed
        g0 = g1 = None
        with torch.enable_grad():
            if ctx.needs_input_grad[0]:
                x = z0.clone().requires_grad_(True)
                (g0,) = torch.autograd.grad(embed_flat(embed, x), x, -2 * grad[:, None] * u0)
            if ctx.needs_input_grad[1]:
                x = z1.clone().requires_grad_(True)
                (g1,) = torch.autograd.grad(embed_flat(embed, x), x, 2 * grad[:, None] * u1)
        return g0, g1, None, None, None, None


def squared_geodesic_distance(
    embed: Embed,
    z0: Tensor,
    z1: Tensor,
    *,
    num_nodes: int = 32,
    tolerance: float = 1e-8,
    max_iterations: int = 500,
    on_unconverged: str = "raise",
    return_result: bool = False,
    **geodesic_options: Any,
) -> Tensor | tuple[Tensor, SquaredDistanceResult]:
    """Squared geodesic distance ``(B,)`` between ``z0[i]`` and ``z1[i]``, differentiable in both.

    The value is the minimal node energy ``E_N`` on ``num_nodes`` nodes, reached from the curves
    of :func:`geometry.connecting_geodesics`; it equals the squared chord length at its equal
    chords. The gradient is ``-2 M(z0) v0`` / ``2 M(z1) v1`` in discrete form (module
    docstring).

    Args:
        embed: ``(m, d) -> (m, D')`` callable, differentiable (e.g. ``TwoStageVAE.embed``).
        z0: ``(B, d)`` start points (may require grad).
        z1: ``(B, d)`` end points (may require grad).
        num_nodes: nodes per geodesic, end points included (>= 3).
        tolerance: relative predicted decrease of ``E_N`` at which the polish stops (the
            gradient assumes a stationary interior: keep it tight).
        max_iterations: LM step limit of the polish.
        on_unconverged: ``"raise"`` (``RuntimeError`` naming the pairs), ``"warn"`` or
            ``"ignore"`` when ``E_N`` is not stationary for some pair (its gradient is then not
            the end-tangent formula's).
        return_result: also return the :class:`SquaredDistanceResult`.
        **geodesic_options: forwarded to :func:`geometry.connecting_geodesics` (``init``,
            ``graph_points``, ...; ``max_num_nodes`` defaults to ``num_nodes`` here).

    Returns:
        ``(B,)`` squared distances on ``z0``'s device and dtype (and the result, if asked).

    Example:
        >>> z0 = codes[:8].clone().requires_grad_(True)
        >>> loss = squared_geodesic_distance(model.embed, z0, codes[8:16]).mean()
        >>> loss.backward()  # z0.grad = d loss / d z0
    """
    check_points(z0, "z0")
    check_points(z1, "z1", dim=z0.shape[1])
    if z0.shape != z1.shape:
        raise ValueError(
            f"z0 and z1 must have the same shape, got {tuple(z0.shape)} and {tuple(z1.shape)}"
        )
    check_positive_int(num_nodes, "num_nodes", minimum=3)
    if on_unconverged not in ("raise", "warn", "ignore"):
        raise ValueError(
            f"on_unconverged must be 'raise', 'warn' or 'ignore', got {on_unconverged!r}"
        )
    check_positive_int(max_iterations, "max_iterations", minimum=0)
    polish = {"tolerance": tolerance, "max_iterations": max_iterations}
    # E_N on num_nodes nodes: no node refinement unless geodesic_options ask for it
    options = {"num_nodes": num_nodes, "max_num_nodes": num_nodes, **geodesic_options}
    holder: list[SquaredDistanceResult] = []
    value = SquaredGeodesicDistance.apply(z0, z1, embed, options, polish, holder)
    res = holder[0]
    bad = (~res.stationary).nonzero().flatten()  # what the end-tangent gradient needs
    if bad.numel() and on_unconverged != "ignore":
        msg = (
            f"{bad.numel()} of {len(res)} geodesics are not stationary (first "
            f"pairs {bad[:5].tolist()}): their squared distance is an upper bound and its "
            "gradient is not the end-tangent formula's; raise max_iterations, change num_nodes or "
            "init (e.g. init='graph'), or pass on_unconverged='warn'/'ignore'"
        )
        if on_unconverged == "raise":
            raise RuntimeError(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
    return (value, res) if return_result else value
