"""Metric tensor, Jacobians and magnification factors (geometry.metric)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import geometry as G
from geometry.toy_models import LinearEmbed, ToyConvDecoder, ToyRBFDecoder

pytestmark = pytest.mark.usefixtures("single_thread")


def _mlp(d: int, D: int, act: type[nn.Module], seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(d, 16), act(), nn.Linear(16, 16), act(), nn.Linear(16, D)
    ).double()


def _reverse_mode_metric(embed, z: torch.Tensor) -> torch.Tensor:
    rows = []
    for zi in z:
        J = torch.autograd.functional.jacobian(
            lambda x: embed(x[None])[0].reshape(-1), zi
        )  # (D, d)
        rows.append(J.T @ J)
    return torch.stack(rows)


def _finite_difference_metric(embed, z: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    d = z.shape[1]
    cols = []
    with torch.no_grad():
        for k in range(d):
            e = torch.zeros_like(z)
            e[:, k] = eps
            cols.append((embed(z + e) - embed(z - e)).reshape(z.shape[0], -1) / (2 * eps))
    J = torch.stack(cols, dim=2)  # (B, D, d)
    return J.transpose(1, 2) @ J


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_linear_decoder_metric_is_exact(d: int) -> None:
    A = torch.randn(7, d, dtype=torch.float64)
    z = torch.randn(11, d, dtype=torch.float64)
    M = G.metric_tensor(LinearEmbed(A), z)
    assert M.shape == (11, d, d)
    torch.testing.assert_close(M, (A.T @ A).expand(11, d, d), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("d", [1, 2, 3, 5])
@pytest.mark.parametrize("act", [nn.Tanh, nn.Softplus])
def test_metric_matches_reverse_mode_and_finite_differences(d: int, act: type[nn.Module]) -> None:
    net = _mlp(d, 9, act, seed=d)
    z = torch.randn(6, d, dtype=torch.float64)
    M = G.metric_tensor(net, z, chunk_size=4)  # several chunks
    torch.testing.assert_close(M, _reverse_mode_metric(net, z), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(M, _finite_difference_metric(net, z), rtol=1e-6, atol=1e-8)


def test_metric_of_conv_decoder_matches_reverse_mode() -> None:
    dec = ToyConvDecoder(latent_dim=3).double()
    z = torch.randn(5, 3, dtype=torch.float64)
    M = G.metric_tensor(dec.embed, z)
    torch.testing.assert_close(M, _reverse_mode_metric(dec.embed, z), rtol=1e-10, atol=1e-12)
    J = G.jacobian(dec.embed, z)
    assert J.shape == (5, 64, 3)


def test_metric_sums_all_outputs_not_first_d_rows() -> None:
    """Defect seen in a reproduction: J J^T of the first d outputs instead of J^T J over all D."""
    d, D = 2, 60
    net = _mlp(d, D, nn.Tanh, seed=3)
    z = torch.randn(4, d, dtype=torch.float64)
    J = G.jacobian(net, z)  # (B, D, d)
    assert J.shape == (4, D, d)
    M = G.metric_tensor(net, z)
    per_output = sum(J[:, i, :, None] * J[:, i, None, :] for i in range(D))  # sum_i grad grad^T
    torch.testing.assert_close(M, per_output, rtol=1e-12, atol=1e-12)
    wrong = J[:, :d, :] @ J[:, :d, :].transpose(1, 2)  # (B, d, d) from the first d outputs only
    assert ((M - wrong).norm(dim=(1, 2)) > 0.1 * M.norm(dim=(1, 2))).all()


def test_metric_is_symmetric_psd_and_leaves_no_gradients() -> None:
    dec = ToyRBFDecoder(latent_dim=3, data_dim=20, seed=1)
    z = torch.randn(50, 3)
    M = G.metric_tensor(dec.embed, z)
    assert torch.equal(M, M.transpose(1, 2))
    assert (torch.linalg.eigvalsh(M.double()) > -1e-6).all()
    assert not M.requires_grad
    assert all(p.grad is None for p in dec.parameters())
    assert any(p.requires_grad for p in dec.parameters())


def test_metric_preserves_dtype_and_device() -> None:
    dec = ToyRBFDecoder(data_dim=10)
    for dtype in (torch.float32, torch.float64):
        z = torch.randn(5, 2, dtype=dtype)
        emb = dec.to(dtype).embed
        for out in (
            G.metric_tensor(emb, z),
            G.log_magnification_factor(emb, z),
            G.jacobian(emb, z),
        ):
            assert out.dtype == dtype and out.device == z.device


def test_magnification_factor_linear_and_stable_log() -> None:
    A = torch.randn(6, 2, dtype=torch.float64)
    z = torch.randn(3, 2, dtype=torch.float64)
    expected = torch.linalg.det(A.T @ A).sqrt()
    torch.testing.assert_close(G.magnification_factor(LinearEmbed(A), z), expected.expand(3))
    # Tiny metric in float32: det(M) ~ 1e-80 underflows, log MF must not.
    A32 = (A * 1e-20).float()
    lmf = G.log_magnification_factor(LinearEmbed(A32), z.float())
    assert torch.isfinite(lmf).all()
    expected_log = 0.5 * torch.linalg.slogdet(A.T @ A).logabsdet + 2 * math.log(1e-20)
    torch.testing.assert_close(lmf.double(), expected_log.expand(3), rtol=1e-5, atol=1e-4)
    # Singular metric (D' < d) gives -inf, not NaN.
    flat = G.log_magnification_factor(LinearEmbed(torch.randn(1, 2, dtype=torch.float64)), z)
    assert torch.isneginf(flat).all()


def test_ops_without_forward_ad_fall_back_with_warning() -> None:
    centers = torch.randn(4, 2, dtype=torch.float64)

    def embed(z: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.exp(-(torch.cdist(z, centers) ** 2)), z.sin()], dim=1)

    z = torch.randn(5, 2, dtype=torch.float64)
    with pytest.warns(RuntimeWarning, match="forward-mode"):
        M = G.metric_tensor(embed, z)
    torch.testing.assert_close(M, _reverse_mode_metric(embed, z), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    ("z", "match"),
    [
        (torch.zeros(3), "shape"),
        (torch.zeros(3, 2, 1), "shape"),
        (torch.tensor([[0.0, float("nan")]]), "non-finite"),
        (torch.zeros(2, 2, dtype=torch.long), "floating"),
    ],
)
def test_metric_rejects_bad_input(z: torch.Tensor, match: str) -> None:
    with pytest.raises((ValueError, TypeError), match=match):
        G.metric_tensor(LinearEmbed(torch.eye(2)), z)


def test_empty_batches_give_empty_results() -> None:
    dec = ToyRBFDecoder(data_dim=12, seed=4)
    z = torch.zeros(0, 2)
    assert G.metric_tensor(dec.embed, z).shape == (0, 2, 2)
    assert G.jacobian(dec.embed, z).shape == (0, 24, 2)
    assert G.log_magnification_factor(dec.embed, z).shape == (0,)
    assert G.curve_length(dec.embed, torch.zeros(0, 5, 2)).shape == (0,)
    assert G.chord_length(dec.embed, torch.zeros(0, 5, 2)).shape == (0,)


def test_points_of_another_dtype_than_the_model_get_a_clear_error() -> None:
    dec = ToyRBFDecoder(data_dim=12, seed=4)  # float32
    z = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"torch.float64 but embed's parameters are torch.float32"):
        G.metric_tensor(dec.embed, z)
    with pytest.raises(TypeError, match=r"torch.float64.*model's dtype"):
        G.curve_length(lambda x: dec.embed(x), z[None])  # a wrapped model: the error it raises


def test_log_magnification_floor_far_from_the_data() -> None:
    """A saturating generator's metric vanishes far away: -inf, unless a floor is asked for."""
    mean = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 5))
    mean = mean.double()
    z = torch.tensor([[0.0, 0.0], [1e3, 1e3]], dtype=torch.float64)
    raw = G.log_magnification_factor(mean, z)
    assert torch.isfinite(raw[0]) and raw[1] == -torch.inf
    floored = G.log_magnification_factor(mean, z, floor=-30.0)
    assert floored[0] == raw[0] and floored[1] == -30.0
    with pytest.raises(ValueError, match="floor"):
        G.log_magnification_factor(mean, z, floor=float("-inf"))
