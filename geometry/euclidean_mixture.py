"""A Euclidean Gaussian mixture on latent codes, with the interface of :class:`LANDMixture`.

A thin adapter over scikit-learn's ``GaussianMixture`` (full covariances, k-means init): the
baseline of the LAND experiments. Densities are with respect to the Lebesgue measure of the
latent coordinates, as for :class:`geometry.land.LANDMixture`, so log-likelihoods compare.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from geometry._checks import check_points, check_positive_int

__all__ = ["EuclideanGMM"]


class EuclideanGMM:
    """Gaussian mixture in latent coordinates (``fit``, ``log_prob``, ``responsibilities``,
    ``sample``, ``state_dict``).

    Args:
        num_components: K.
        seed: seed of the k-means initialisation and of :meth:`sample`.
        max_iterations: EM iterations.
        tol: scikit-learn's convergence threshold (change of the mean log-likelihood).
        reg_covar: ridge added to the covariances.
    """

    def __init__(
        self,
        num_components: int,
        *,
        seed: int = 0,
        max_iterations: int = 200,
        tol: float = 1e-4,
        reg_covar: float = 1e-6,
    ) -> None:
        check_positive_int(num_components, "num_components")
        self.num_components = num_components
        self.seed = seed
        self.max_iterations = max_iterations
        self.tol = tol
        self.reg_covar = reg_covar
        self._gmm: Any = None
        self._dim: int | None = None

    def fit(self, z: Tensor) -> EuclideanGMM:
        """Fit to ``z (n, d)``; returns ``self``."""
        from sklearn.mixture import GaussianMixture

        check_points(z, "z")
        if self.num_components > z.shape[0]:
            raise ValueError(
                f"num_components={self.num_components} exceeds the number of points n={z.shape[0]}"
            )
        self._gmm = GaussianMixture(
            self.num_components, covariance_type="full", tol=self.tol, reg_covar=self.reg_covar,
            max_iter=self.max_iterations, random_state=self.seed,
        ).fit(z.detach().cpu().double().numpy())  # fmt: skip
        self._dim = z.shape[1]
        return self

    def _np(self, z: Tensor) -> np.ndarray:
        if self._gmm is None:
            raise RuntimeError("the mixture is not fitted: call fit(z) first")
        check_points(z, "z", dim=self._dim)
        return z.detach().cpu().double().numpy()

    @property
    def means(self) -> Tensor:
        """``(K, d)`` component means."""
        return torch.as_tensor(self._gmm.means_)

    @property
    def covariances(self) -> Tensor:
        """``(K, d, d)`` component covariances."""
        return torch.as_tensor(self._gmm.covariances_)

    @property
    def weights(self) -> Tensor:
        """``(K,)`` mixture weights."""
        return torch.as_tensor(self._gmm.weights_)

    def log_prob(self, z: Tensor) -> Tensor:
        """``(n,)`` log density at ``z (n, d)`` (dtype and device of ``z``)."""
        return torch.as_tensor(self._gmm.score_samples(self._np(z))).to(z)

    def responsibilities(self, z: Tensor) -> Tensor:
        """``(n, K)`` posterior component probabilities."""
        return torch.as_tensor(self._gmm.predict_proba(self._np(z))).to(z)

    def sample(self, num: int, seed: int | None = None) -> tuple[Tensor, Tensor]:
        """``(num, d)`` samples (float64) and their ``(num,)`` components."""
        check_positive_int(num, "num")
        if self._gmm is None:
            raise RuntimeError("the mixture is not fitted: call fit(z) first")
        rng = np.random.default_rng(self.seed if seed is None else seed)
        comp = rng.choice(self.num_components, size=num, p=self._gmm.weights_)
        chol = np.linalg.cholesky(self._gmm.covariances_)  # (K, d, d)
        eps = rng.standard_normal((num, self._gmm.means_.shape[1]))
        x = self._gmm.means_[comp] + np.einsum("nij,nj->ni", chol[comp], eps)
        return torch.as_tensor(x), torch.as_tensor(comp)

    def state_dict(self) -> dict[str, Any]:
        """Parameters as tensors (``means``, ``covariances``, ``weights``)."""
        return {"means": self.means, "covariances": self.covariances, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        from sklearn.mixture import GaussianMixture

        cov = state["covariances"].double().numpy()
        gmm = GaussianMixture(self.num_components, covariance_type="full")
        gmm.means_ = state["means"].double().numpy()
        gmm.covariances_ = cov
        gmm.weights_ = state["weights"].double().numpy()
        gmm.precisions_cholesky_ = np.linalg.inv(np.linalg.cholesky(cov)).transpose(0, 2, 1)
        self._gmm, self._dim = gmm, gmm.means_.shape[1]
