"""Adaptive geodesic shooting (geometry.adaptive_exp) against closed forms and RK4."""

from __future__ import annotations

import math

import pytest
import torch

import geometry as G
from geometry.toy_models import LinearEmbed, SphereEmbed, ToyRBFDecoder

F64 = torch.float64


def _sphere_exp(z: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Closed-form Exp on the unit sphere in (polar, azimuth) coordinates, via R^3."""
    th, ph = z[:, 0], z[:, 1]
    p = torch.stack([th.sin() * ph.cos(), th.sin() * ph.sin(), th.cos()], dim=1)  # (B, 3)
    e_th = torch.stack([th.cos() * ph.cos(), th.cos() * ph.sin(), -th.sin()], dim=1)
    e_ph = torch.stack([-th.sin() * ph.sin(), th.sin() * ph.cos(), torch.zeros_like(th)], dim=1)
    w = v[:, :1] * e_th + v[:, 1:] * e_ph  # (B, 3) ambient tangent
    s = w.norm(dim=1, keepdim=True)
    q = p * s.cos() + w / s * s.sin()
    return torch.stack([torch.arccos(q[:, 2].clamp(-1, 1)), torch.atan2(q[:, 1], q[:, 0])], dim=1)


def test_sphere_shots_match_great_circles_at_the_tolerance() -> None:
    z = torch.tensor([[1.0, 0.3], [2.0, -0.5], [1.4, 1.0], [1.2, 0.0]], dtype=F64)
    v = torch.tensor([[0.3, 0.5], [-0.4, 0.2], [0.5, -0.6], [0.9, 0.4]], dtype=F64)
    exact = _sphere_exp(z, v)
    errors = []
    for rtol in (1e-5, 1e-9):
        shots = G.shoot_geodesics(SphereEmbed(), z, v, rtol=rtol)
        assert not shots.failed.any()
        errors.append(float((shots.ends - exact).norm(dim=1).max()))
        assert errors[-1] < 100 * rtol, (rtol, errors)
    assert errors[1] < errors[0] / 100
    torch.testing.assert_close(G.exp_map(SphereEmbed(), z, v, rtol=1e-9), exact, atol=1e-7, rtol=0)


def test_linear_decoder_shots_are_straight_and_take_one_step() -> None:
    A = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, -1.0]], dtype=F64)
    z = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    v = torch.randn(5, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    shots = G.shoot_geodesics(LinearEmbed(A), z, v, rtol=1e-8, initial_steps=1)
    torch.testing.assert_close(shots.ends, z + v, atol=1e-12, rtol=0)
    torch.testing.assert_close(shots.end_velocities, v, atol=1e-12, rtol=0)
    assert shots.steps.tolist() == [1] * 5


def test_walled_decoder_shots_converge_and_agree_with_rk4() -> None:
    dec = ToyRBFDecoder(num_centers=16, seed=0).double()
    g = torch.Generator().manual_seed(2)
    z = dec.centers[:4].detach().clone()
    v = 1.5 * torch.randn(4, 2, dtype=F64, generator=g)
    coarse = G.shoot_geodesics(dec.embed, z, v, rtol=1e-4)
    fine = G.shoot_geodesics(dec.embed, z, v, rtol=1e-8)
    assert not (coarse.failed | fine.failed).any()
    scale = v.norm(dim=1).max()
    torch.testing.assert_close(coarse.ends, fine.ends, atol=1e-3 * float(scale), rtol=0)
    rk4 = G.exp_map(dec.embed, z, v, num_steps=32)  # an independent integrator
    torch.testing.assert_close(rk4, fine.ends, atol=1e-2 * float(scale), rtol=0)
    assert int(fine.steps.max()) > int(fine.steps.min())  # steps adapt per row
    assert (fine.steps >= coarse.steps).all()


def test_float32_tolerance_is_floored_at_the_dtype_resolution() -> None:
    """Below 8 eps the error estimate is roundoff: the tolerance is raised, shots do not fail."""
    dec = ToyRBFDecoder(num_centers=16, seed=0)  # float32
    g = torch.Generator().manual_seed(2)
    z = dec.centers[:6].detach().clone()
    v = 1.5 * torch.randn(6, 2, generator=g)
    floor = G.shoot_geodesics(dec.embed, z, v, rtol=8 * torch.finfo(torch.float32).eps)
    tight = G.shoot_geodesics(dec.embed, z, v, rtol=1e-10)
    assert not (floor.failed | tight.failed).any()
    assert tight.steps.tolist() == floor.steps.tolist()
    torch.testing.assert_close(tight.ends, floor.ends, atol=0, rtol=0)
    loose = G.shoot_geodesics(dec.embed, z, v, rtol=1e-4)
    assert int(loose.steps.sum()) < int(floor.steps.sum())  # above the floor rtol still acts


def test_groups_share_their_steps() -> None:
    dec = ToyRBFDecoder(num_centers=16, seed=0).double()
    z = dec.centers[:3].detach().clone().repeat(2, 1)  # (6, 2)
    v = torch.tensor([[1.0, 0.2], [0.1, -0.8], [0.5, 0.5]], dtype=F64)
    v = torch.cat([v, v * 1e-3])  # a tiny velocity alone would take one long step
    alone = G.shoot_geodesics(dec.embed, z, v, rtol=1e-8)
    together = G.shoot_geodesics(dec.embed, z, v, rtol=1e-8, groups=torch.arange(3).repeat(2))
    assert alone.steps[3:].lt(alone.steps[:3]).all()
    assert together.steps[3:].tolist() == together.steps[:3].tolist()
    torch.testing.assert_close(together.ends, alone.ends, atol=1e-6, rtol=0)


class _DegenerateOnRightHalf(torch.nn.Module):
    """Full rank for z_0 < 1, rank 1 beyond (the metric is singular there)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.stack([z[:, 0], z[:, 1] * (1 - z[:, 0]).clamp_min(0)], dim=1)


def test_a_shot_through_a_singular_metric_fails_alone() -> None:
    z = torch.tensor([[0.0, 0.5], [0.0, 0.5], [0.0, -0.3]], dtype=F64)
    v = torch.tensor([[0.3, 0.0], [2.0, 0.0], [0.0, 0.4]], dtype=F64)
    shots = G.shoot_geodesics(_DegenerateOnRightHalf(), z, v, rtol=1e-8)
    assert shots.failed.tolist() == [False, True, False]
    assert torch.isnan(shots.ends[1]).all() and torch.isfinite(shots.ends[[0, 2]]).all()
    with pytest.raises(ValueError, match="1 of 3 shots failed"):
        G.exp_map(_DegenerateOnRightHalf(), z, v, rtol=1e-8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rtol": 0.0}, "rtol must be a number in"),
        ({"rtol": 1.5}, "rtol must be a number in"),
        ({"initial_steps": 0}, "initial_steps"),
        ({"groups": torch.zeros(2, dtype=torch.int64)}, "groups must be a"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, match: str) -> None:
    z = torch.zeros(3, 2, dtype=F64)
    with pytest.raises(ValueError, match=match):
        G.shoot_geodesics(SphereEmbed(), z + 1.0, z + 0.1, **kwargs)


def test_exp_map_refuses_a_path_with_adaptive_steps() -> None:
    z = torch.ones(1, 2, dtype=F64)
    with pytest.raises(ValueError, match="return_path=True needs the fixed-step"):
        G.exp_map(SphereEmbed(), z, 0.1 * z, rtol=1e-6, return_path=True)
    assert math.isfinite(float(G.exp_map(SphereEmbed(), z, 0.1 * z, rtol=1e-6).sum()))
