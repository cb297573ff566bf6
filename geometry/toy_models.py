"""Small analytic and random generators for tests, examples and benchmarks.

Nothing here is trained; these are stand-ins with known geometry (linear map, sphere) or with
the qualitative shape of a trained RBF-precision VAE decoder (small variance near a few centres,
large variance far from them).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["LinearEmbed", "SphereEmbed", "ToyRBFDecoder", "ToyConvDecoder"]


class LinearEmbed(nn.Module):
    """``h(z) = z @ A.T``; metric ``A^T A`` everywhere, geodesics are straight lines."""

    def __init__(self, A: Tensor) -> None:
        super().__init__()
        self.register_buffer("A", A)

    def forward(self, z: Tensor) -> Tensor:
        return z @ self.A.T  # (B, D)


class SphereEmbed(nn.Module):
    """Spherical coordinates ``(theta, phi) -> R^3`` (radius ``r``); theta is the polar angle."""

    def __init__(self, radius: float = 1.0) -> None:
        super().__init__()
        self.radius = radius

    def forward(self, z: Tensor) -> Tensor:
        theta, phi = z[:, 0], z[:, 1]
        return self.radius * torch.stack(
            [theta.sin() * phi.cos(), theta.sin() * phi.sin(), theta.cos()], dim=1
        )  # (B, 3)

    def great_circle(self, z0: Tensor, z1: Tensor) -> Tensor:
        """Exact geodesic distance ``(B,)`` between spherical coordinates."""
        p, q = self(z0) / self.radius, self(z1) / self.radius
        return self.radius * torch.arccos((p * q).sum(dim=1).clamp(-1, 1))


class ToyRBFDecoder(nn.Module):
    """A random decoder shaped like the paper's: tanh MLP mean, RBF-precision standard deviation.

    ``mu(z) = sigmoid(MLP(z))`` (hidden tanh layers 32 and 64), ``beta(z) = W v(z) + zeta`` with
    Gaussian bumps ``v_k`` around ``centres``, ``sigma = beta^(-1/2)``;
    ``embed(z) = [mu(z), sigma(z)]``.

    Args:
        latent_dim: d.
        data_dim: D.
        n_centres: K bumps, placed at random in ``[-2, 2]^d`` unless ``centres`` is given.
        bandwidth: bump precision lambda.
        zeta: precision floor far from the centres.
        seed: generator seed for the weights.
    """

    def __init__(
        self,
        latent_dim: int = 2,
        data_dim: int = 64,
        n_centres: int = 6,
        bandwidth: float = 2.0,
        zeta: float = 1e-3,
        seed: int = 0,
        centres: Tensor | None = None,
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.mean = nn.Sequential(
            nn.Linear(latent_dim, 32),
            nn.Tanh(),
            nn.Linear(32, 64),
            nn.Tanh(),
            nn.Linear(64, data_dim),
        )
        with torch.no_grad():
            for p in self.mean.parameters():
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(max(p.shape[-1], 1)))
        if centres is None:
            centres = 4 * torch.rand(n_centres, latent_dim, generator=g) - 2
        self.register_buffer("centres", centres)
        self.register_buffer("W", 5 + 20 * torch.rand(data_dim, centres.shape[0], generator=g))
        self.bandwidth = bandwidth
        self.zeta = zeta

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        mu = torch.sigmoid(self.mean(z))  # (B, D)
        sq = (
            (z[:, None, :] - self.centres[None]).pow(2).sum(dim=2)
        )  # (B, K); cdist lacks forward AD
        v = torch.exp(-self.bandwidth * sq)  # (B, K)
        beta = v @ self.W.T + self.zeta  # (B, D)
        return mu, beta.rsqrt()

    def embed(self, z: Tensor) -> Tensor:
        mu, sigma = self.decode(z)
        return torch.cat([mu, sigma], dim=1)  # (B, 2D)

    forward = embed


class ToyConvDecoder(nn.Module):
    """A small convolutional decoder: ``z -> (B, 1, 8, 8)`` image means, flattened by ``embed``."""

    def __init__(self, latent_dim: int = 2, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng():  # seeded weights without touching the global RNG
            torch.manual_seed(seed)
            self.fc = nn.Linear(latent_dim, 8 * 4 * 4)
            self.deconv = nn.ConvTranspose2d(8, 4, kernel_size=4, stride=2, padding=1)  # 4 -> 8
            self.conv = nn.Conv2d(4, 1, kernel_size=3, padding=1)

    def embed(self, z: Tensor) -> Tensor:
        x = torch.tanh(self.fc(z)).reshape(-1, 8, 4, 4)
        x = torch.nn.functional.softplus(self.deconv(x))
        x = torch.sigmoid(self.conv(x))  # (B, 1, 8, 8)
        return x.reshape(z.shape[0], -1)  # (B, 64)

    forward = embed
