"""The paper's RBF precision network (Arvanitidis et al. 2018, Sec. 4, eq. 11-12).

beta(z) = 1 / sigma^2(z) = W v(z) + zeta, with v_k(z) = exp(-lambda_k ||z - c_k||^2).

Far from every center v(z) -> 0, so beta -> zeta and sigma^2 -> 1 / zeta: the generator becomes
uncertain away from the data and the expected metric grows there, which is what makes geodesics
follow the data manifold.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn


def kmeans_centers(
    codes: Tensor, num_centers: int, seed: int = 0, n_init: int = 10
) -> tuple[Tensor, Tensor]:
    """k-means (scikit-learn, seeded) on latent codes.

    Args:
        codes: (n, d) latent codes (the encoder means of the training set).
        num_centers: K.
        seed: k-means random state.
        n_init: number of k-means restarts.

    Returns:
        centers (K, d) and assignments (n,) int64, on the device and dtype of ``codes``.

    Raises:
        ValueError: when K exceeds the number of codes or the codes are not finite.
    """
    from sklearn.cluster import KMeans

    n = codes.shape[0]
    if num_centers > n:
        raise ValueError(
            f"num_centers={num_centers} exceeds the number of training codes ({n}); "
            f"choose num_centers <= {n}"
        )
    if not torch.isfinite(codes).all():
        raise ValueError("k-means got non-finite latent codes: the stage-1 encoder diverged")
    data = codes.detach().to("cpu", torch.float64).numpy()
    km = KMeans(n_clusters=num_centers, n_init=n_init, random_state=seed).fit(data)
    centers = torch.as_tensor(km.cluster_centers_, dtype=codes.dtype, device=codes.device)
    labels = torch.as_tensor(km.labels_.astype(np.int64), device=codes.device)
    return centers, labels


def rbf_bandwidths(codes: Tensor, centers: Tensor, assignments: Tensor, a: float) -> Tensor:
    """Bandwidths of eq. 12: lambda_k = 0.5 * (a * mean_{z in C_k} ||z - c_k||)^(-2).

    A cluster with zero spread (a single point, or duplicates) would give an infinite bandwidth;
    its mean distance is replaced by the median mean distance of the other clusters (documented
    choice; the paper is silent).

    Args:
        codes: (n, d) latent codes.
        centers: (K, d) cluster centers.
        assignments: (n,) index of the center of each code.
        a: curvature hyper-parameter a > 0 (larger a = wider kernels, smoother metric).

    Returns:
        lambdas: (K,) positive bandwidths.
    """
    if not a > 0:
        raise ValueError(f"bandwidth_scale a={a} must be > 0 (the paper uses a=2 for MNIST)")
    K = centers.shape[0]
    dist = (codes - centers[assignments]).norm(dim=-1)  # (n,)
    sums = torch.zeros(K, dtype=codes.dtype, device=codes.device).index_add_(0, assignments, dist)
    counts = torch.bincount(assignments, minlength=K).to(codes.dtype)
    mean_dist = sums / counts.clamp(min=1)  # (K,)
    good = mean_dist > 0
    if not good.any():
        raise ValueError(
            "every k-means cluster has zero spread: the latent codes are all identical"
        )
    mean_dist = torch.where(good, mean_dist, mean_dist[good].quantile(0.5))
    return 0.5 * (a * mean_dist) ** -2


class RBFPrecision(nn.Module):
    """beta(z) = W v(z) + zeta, returned as the standard deviation sigma(z) = beta(z)^(-1/2).

    W (D x K) is parameterized as ``weight_scale * raw_weight`` with ``raw_weight >= 0`` enforced by
    projection after each optimizer step (:meth:`project_`). The fixed positive scale puts the raw
    parameter at O(1), so a first-order optimizer's step size is meaningful; projecting the raw
    weight onto the non-negative orthant is the same projected gradient method in scaled
    coordinates.

    Centers and bandwidths are buffers (saved in checkpoints) filled by :meth:`fit`.

    Args:
        data_shape: shape of one data point; D = prod(data_shape).
        latent_dim: d.
        num_centers: K.
        zeta: the precision floor zeta > 0 (sigma^2 <= 1 / zeta everywhere).
    """

    def __init__(self, data_shape: Sequence[int], latent_dim: int, num_centers: int, zeta: float):
        super().__init__()
        if not zeta > 0:
            raise ValueError(f"zeta={zeta} must be > 0 (it bounds the variance: sigma^2 <= 1/zeta)")
        if num_centers < 1:
            raise ValueError(f"num_centers={num_centers} must be >= 1")
        self.data_shape = tuple(data_shape)
        D = math.prod(self.data_shape)
        self.zeta = float(zeta)
        self.raw_weight = nn.Parameter(torch.ones(D, num_centers))
        self.register_buffer("centers", torch.zeros(num_centers, latent_dim))
        self.register_buffer("bandwidths", torch.ones(num_centers))
        self.register_buffer("weight_scale", torch.ones(()))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    @property
    def weight(self) -> Tensor:
        """W (D, K) >= 0."""
        return self.weight_scale * self.raw_weight

    def activations(self, z: Tensor) -> Tensor:
        """v(z): (B, d) -> (B, K)."""
        sq = ((z[:, None, :] - self.centers[None]) ** 2).sum(-1)  # (B, K)
        return torch.exp(-self.bandwidths * sq)

    def precision(self, z: Tensor) -> Tensor:
        """beta(z): (B, d) -> (B, D)."""
        return self.activations(z) @ self.weight.T + self.zeta

    def forward(self, z: Tensor) -> Tensor:
        """sigma(z): (B, d) -> (B, *data_shape)."""
        return self.precision(z).rsqrt().reshape(z.shape[0], *self.data_shape)

    @torch.no_grad()
    def fit(
        self, codes: Tensor, a: float, init_std: float, seed: int = 0, n_init: int = 10
    ) -> None:
        """Place centers by k-means, set eq.-12 bandwidths and initialize W.

        W starts constant, at the value that makes the mean precision over the codes equal
        1 / init_std^2 (the stage-1 constant variance), so stage 2 starts near stage 1's likelihood.

        Args:
            codes: (n, d) encoder means of the whole training set.
            a: bandwidth hyper-parameter of eq. 12.
            init_std: the generator standard deviation W is initialized to reproduce on the data.
            seed: k-means seed.
            n_init: k-means restarts.
        """
        codes = codes.to(self.centers)
        K = self.centers.shape[0]
        centers, assign = kmeans_centers(codes, K, seed=seed, n_init=n_init)
        self.centers.copy_(centers)
        self.bandwidths.copy_(rbf_bandwidths(codes, centers, assign, a))
        mean_activation = self.activations(codes).sum(-1).mean()  # mean_z sum_k v_k(z)
        target = 1.0 / init_std**2
        self.weight_scale.fill_(max(target - self.zeta, 1e-8) / float(mean_activation))
        self.raw_weight.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def project_(self) -> None:
        """Projection onto W >= 0 (call after every optimizer step)."""
        self.raw_weight.clamp_(min=0.0)
