"""Exponential and logarithmic maps (geometry.maps): closed forms on a linear decoder and on the
sphere, and the log map's velocity from connecting geodesics."""

from __future__ import annotations

import math

import pytest
import torch

import geometry as G
from geometry.toy_models import LinearEmbed, SphereEmbed, ToyRBFDecoder
from tests.helpers.curves import distance_to_segment

pytestmark = pytest.mark.usefixtures("single_thread")


def test_exp_map_linear_and_sphere() -> None:
    A = torch.randn(4, 2, dtype=torch.float64)
    z, v = torch.randn(3, 2, dtype=torch.float64), torch.randn(3, 2, dtype=torch.float64)
    torch.testing.assert_close(G.exp_map(LinearEmbed(A), z, v, num_steps=4), z + v)
    sphere = SphereEmbed()
    eq = torch.tensor([[math.pi / 2, 0.3]], dtype=torch.float64)
    out = G.exp_map(sphere, eq, torch.tensor([[0.0, 1.2]], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([[math.pi / 2, 1.5]], dtype=torch.float64))
    # Off the equator the latent path is curved, but its length is ||v||_M.
    z0, v0 = (
        torch.tensor([[1.0, 0.3]], dtype=torch.float64),
        torch.tensor([[0.3, 0.5]], dtype=torch.float64),
    )
    path = G.exp_map(sphere, z0, v0, num_steps=64, return_path=True)
    speed = (v0 @ G.metric_tensor(sphere, z0)[0] @ v0.T).sqrt()[0]
    torch.testing.assert_close(G.curve_length(sphere, path), speed, rtol=1e-5, atol=0)
    assert distance_to_segment(path).max() > 1e-2


def test_log_map_inverts_exp_map_on_the_sphere() -> None:
    sphere = SphereEmbed()
    z0 = torch.tensor([[1.0, 0.3], [2.0, -0.5]], dtype=torch.float64)
    v = torch.tensor([[0.3, 0.5], [-0.4, 0.2]], dtype=torch.float64)
    z1 = G.exp_map(sphere, z0, v)
    v_hat, res = G.log_map(sphere, z0, z1, num_nodes=48)
    assert res.converged.all()
    torch.testing.assert_close(v_hat, v, rtol=0, atol=3e-3)


def test_log_map_norm_is_the_measured_distance_and_its_direction_converges() -> None:
    """``||v||_{M(z0)}`` is the reported length; the direction error falls as nodes are added."""
    sphere = SphereEmbed()
    z0 = torch.tensor([[1.0, 0.3], [2.0, -0.5], [1.4, 1.0]], dtype=torch.float64)
    v = torch.tensor([[0.3, 0.5], [-0.4, 0.2], [0.5, -0.6]], dtype=torch.float64)
    z1 = G.exp_map(sphere, z0, v, num_steps=256)
    M = G.metric_tensor(sphere, z0)  # (3, 2, 2)
    errors = []
    for n in (12, 48):
        v_hat, res = G.log_map(sphere, z0, z1, num_nodes=n, bent_starts=0)
        assert res.converged.all()
        norm = torch.einsum("bi,bij,bj->b", v_hat, M, v_hat).sqrt()
        torch.testing.assert_close(norm, res.lengths, rtol=1e-12, atol=0)
        errors.append(float(((v_hat - v).norm(dim=1) / v.norm(dim=1)).max()))
    assert errors[1] < errors[0] / 4, errors


def test_log_map_of_a_trainable_model_carries_no_graph(rbf: ToyRBFDecoder) -> None:
    """Velocities are a solver's output: a model whose parameters require grad (a freshly
    trained VAE) gives plain tensors, not graphs through its parameters."""
    assert any(p.requires_grad for p in rbf.parameters())
    z0 = torch.tensor([[0.2, -0.1], [1.0, 0.5]], dtype=torch.float64)
    z1 = torch.tensor([[1.5, 0.7], [-0.5, 0.2]], dtype=torch.float64)
    v, res = G.log_map(rbf.embed, z0, z1, num_nodes=8)
    assert not v.requires_grad and v.grad_fn is None
    assert bool(torch.isfinite(v).all()) and bool((v.norm(dim=1) > 0).all())


def test_exp_map_on_a_singular_metric_names_the_cause() -> None:
    flat = LinearEmbed(torch.tensor([[1.0, 1.0]], dtype=torch.float64))  # rank 1 < d = 2
    with pytest.raises(ValueError, match="metric is singular at 3 of 3 points"):
        z = torch.zeros(3, 2, dtype=torch.float64)
        G.exp_map(flat, z, torch.ones_like(z))
