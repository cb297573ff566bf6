"""Small analytic and random generators for tests, examples and benchmarks.

Nothing here is trained; these are stand-ins with known geometry (linear map, sphere) or with
the qualitative shape of a trained RBF-precision VAE decoder (small variance near a few centers,
large variance far from them).

The synthetic decoder family of the geodesic benchmark (``scripts/benchmark_geodesics.py``) and
of tests that need decoders the project did not train is built here, seeded:

* :func:`walled_decoder`: a 2-D sigmoid-MLP mean plus an RBF precision around 20 random centers,
  ``D' = 200``; its ``steepness`` (the RBF bandwidth) sets how sharply the standard deviation
  rises between the centers, i.e. how high and thin the "variance walls" are;
* :class:`ToyMLPDecoder`: a tanh MLP mean without any variance term (no walls), any ``d``.

Each has a ``sample_data`` method giving data-like latent points (near the centers, or from the
prior) for pairs and graphs.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "WALL_STEEPNESS",
    "LinearEmbed",
    "SphereEmbed",
    "ToyConvDecoder",
    "ToyMLPDecoder",
    "ToyRBFDecoder",
    "walled_decoder",
]

#: Named RBF bandwidths (``lambda`` of ``exp(-lambda ||z - c||^2)``) of :func:`walled_decoder`.
#: With 20 centers in ``[-2, 2]^2`` (typical spacing ~0.9) the kernels overlap at ``"soft"``
#: and leave high-variance walls between the centers at ``"steep"``.
WALL_STEEPNESS: dict[str, float] = {"soft": 4.0, "medium": 16.0, "steep": 64.0}


class LinearEmbed(nn.Module):
    """``h(z) = z @ A.T``; metric ``A^T A`` everywhere, geodesics are straight lines."""

    A: Tensor

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


class TanhStripEmbed(nn.Module):
    """``h(z) = (tanh z_1, z_2)``: a flat strip, isometric to ``(-1, 1) x R`` by ``u = h(z)``.

    Metric ``diag(sech^4 z_1, 1)``; ``Log_mu(z) = ((tanh z_1 - tanh mu_1) / sech^2 mu_1,
    z_2 - mu_2)``; the Riemannian volume is ``du``. Geodesics are incomplete: one whose ``u_1``
    reaches +-1 before ``t = 1`` runs off to infinite ``z_1`` (the metric decays to 0 there).
    """

    def forward(self, z: Tensor) -> Tensor:
        return torch.stack([torch.tanh(z[:, 0]), z[:, 1]], dim=1)  # (B, 2)


class ToyRBFDecoder(nn.Module):
    """A random decoder shaped like the paper's: tanh MLP mean, RBF-precision standard deviation.

    ``mu(z) = sigmoid(MLP(z))`` (hidden tanh layers 32 and 64), ``beta(z) = W v(z) + zeta`` with
    Gaussian bumps ``v_k`` around ``centers``, ``sigma = beta^(-1/2)``;
    ``embed(z) = [mu(z), sigma(z)]``.

    Args:
        latent_dim: d.
        data_dim: D.
        num_centers: K bumps, placed at random in ``[-2, 2]^d`` unless ``centers`` is given.
        bandwidth: bump precision lambda.
        zeta: precision floor far from the centers.
        seed: generator seed for the weights.
    """

    centers: Tensor
    W: Tensor

    def __init__(
        self,
        latent_dim: int = 2,
        data_dim: int = 64,
        num_centers: int = 6,
        bandwidth: float = 2.0,
        zeta: float = 1e-3,
        seed: int = 0,
        centers: Tensor | None = None,
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
        if centers is None:
            centers = 4 * torch.rand(num_centers, latent_dim, generator=g) - 2
        self.register_buffer("centers", centers)
        self.register_buffer("W", 5 + 20 * torch.rand(data_dim, centers.shape[0], generator=g))
        self.bandwidth = bandwidth
        self.zeta = zeta

    def sample_data(self, n: int, spread: float = 0.5, seed: int = 0) -> Tensor:
        """Data-like latent points: random centers plus Gaussian noise of ``spread`` kernel widths.

        Args:
            n: number of points.
            spread: noise standard deviation in units of the kernel's own standard deviation
                ``(2 lambda)^(-1/2)`` (so points stay inside the low-variance region at every
                steepness).
            seed: generator seed.

        Returns:
            ``(n, d)`` points, dtype of ``centers``; the center of point ``i`` is drawn uniformly.
        """
        g = torch.Generator().manual_seed(seed)
        k, d = self.centers.shape
        idx = torch.randint(0, k, (n,), generator=g)
        noise = torch.randn(n, d, generator=g, dtype=self.centers.dtype)  # (n, d)
        width = spread / math.sqrt(2 * self.bandwidth)
        return self.centers[idx] + width * noise.to(self.centers.device)

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        mu = torch.sigmoid(self.mean(z))  # (B, D)
        sq = (
            (z[:, None, :] - self.centers[None]).pow(2).sum(dim=2)
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


def walled_decoder(
    steepness: str | float = "medium",
    *,
    latent_dim: int = 2,
    data_dim: int = 100,
    num_centers: int = 20,
    zeta: float = 1e-3,
    seed: int = 0,
) -> ToyRBFDecoder:
    """A synthetic decoder with variance walls between its centers (float32, parameters frozen).

    ``mu(z) = sigmoid(MLP(z))`` and ``sigma(z) = (W v(z) + zeta)^(-1/2)`` with ``num_centers``
    Gaussian bumps ``v_k(z) = exp(-lambda ||z - c_k||^2)`` at random centers in ``[-2, 2]^d``
    (see :class:`ToyRBFDecoder`); ``embed`` is ``[mu, sigma]`` of size ``D' = 2 * data_dim``.
    ``sigma`` is ~``0.2-0.45`` at a center and rises towards ``zeta^(-1/2)`` (~32) between
    centers, the faster the larger ``lambda``.

    Args:
        steepness: a name in :data:`WALL_STEEPNESS` (``"soft"``, ``"medium"``, ``"steep"``) or
            the bandwidth ``lambda > 0`` itself.
        latent_dim: d.
        data_dim: D (the embedding has ``2 D`` components).
        num_centers: K.
        zeta: precision floor far from the centers.
        seed: seed of the weights and centers.

    Returns:
        The decoder; call ``.embed(z: (B, d)) -> (B, 2 D)``, ``.sample_data(n)`` for data-like
        points.

    Raises:
        ValueError: for an unknown steepness name or a bandwidth that is not a positive number.
    """
    if isinstance(steepness, str):
        if steepness not in WALL_STEEPNESS:
            raise ValueError(
                f"unknown steepness {steepness!r}; expected one of {sorted(WALL_STEEPNESS)} "
                "or a positive bandwidth"
            )
        bandwidth = WALL_STEEPNESS[steepness]
    else:
        bandwidth = float(steepness)
        if not (bandwidth > 0 and math.isfinite(bandwidth)):
            raise ValueError(
                f"steepness (bandwidth) must be a finite number > 0, got {steepness!r}"
            )
    dec = ToyRBFDecoder(
        latent_dim=latent_dim,
        data_dim=data_dim,
        num_centers=num_centers,
        bandwidth=bandwidth,
        zeta=zeta,
        seed=seed,
    )
    for p in dec.parameters():
        p.requires_grad_(False)
    return dec.eval()


class ToyMLPDecoder(nn.Module):
    """A random tanh-MLP decoder mean without a variance term: ``embed(z) = sigmoid(MLP(z))``.

    Smooth everywhere and without variance walls; the metric is ``J_mu^T J_mu``. Weights are
    ``N(0, 1 / fan_in)`` (biases ``N(0, 1)``) from ``seed``; parameters are frozen.

    Args:
        latent_dim: d.
        data_dim: D (= D').
        hidden_dims: widths of the tanh hidden layers.
        seed: generator seed of the weights.
    """

    def __init__(
        self,
        latent_dim: int = 8,
        data_dim: int = 200,
        hidden_dims: tuple[int, ...] = (64, 128),
        seed: int = 0,
    ) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        widths = [latent_dim, *hidden_dims, data_dim]
        layers: list[nn.Module] = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            lin = nn.Linear(w_in, w_out)
            with torch.no_grad():
                lin.weight.copy_(torch.randn(w_out, w_in, generator=g) / math.sqrt(w_in))
                lin.bias.copy_(torch.randn(w_out, generator=g))
            layers.append(lin)
            if i < len(widths) - 2:
                layers.append(nn.Tanh())
        self.mean = nn.Sequential(*layers)
        self.latent_dim = latent_dim
        for p in self.parameters():
            p.requires_grad_(False)

    def sample_data(self, n: int, seed: int = 0) -> Tensor:
        """``(n, d)`` data-like points from the prior ``N(0, I)`` (dtype of the weights)."""
        g = torch.Generator().manual_seed(seed)
        first = self.mean[0]
        assert isinstance(first, nn.Linear)
        w = first.weight
        return torch.randn(n, self.latent_dim, generator=g, dtype=w.dtype).to(w.device)

    def embed(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.mean(z))  # (B, D)

    forward = embed
