"""Mixtures of locally adaptive normal distributions (LAND, Arvanitidis et al. NeurIPS 2016).

Component ``k`` has a mean ``mu_k``, a precision ``Gamma_k = A_k^T A_k`` (``A_k`` the precision
factor) and the density

    ``p_k(z) = exp(-1/2 Log_{mu_k}(z)^T Gamma_k Log_{mu_k}(z)) / Z_k``

with respect to a base measure (``base_measure``): by default the **Riemannian volume**
``sqrt(det M(z)) dz`` (the LAND papers' convention; proper on metrics that decay away from the
data), or the latent coordinates' Lebesgue measure. ``Z_k`` is estimated by Monte Carlo with
the exact Jacobian of ``Exp`` (:mod:`geometry.land_normaliser`, which explains both).
``log_prob`` reports either unit (``measure=``; by default Lebesgue, the units of a Euclidean
GMM on the same codes): the two differ by ``log sqrt(det M(z))``. The EM objective (``nll_history``)
is in the base measure.

Log maps come from :func:`geometry.log_map` (batched over all points and all means, graph starts
on the training codes), optionally refined by Newton shooting through adaptive shots of ``Exp``
(:mod:`geometry.land_log_maps`); every pair's ``converged`` flag is kept (``converged_`` after
``fit``, ``last_converged`` after ``log_prob``); nothing is replaced by straight lines.

Fit (EM), per iteration: responsibilities ``r``; weights ``R_k / n``; the mean moves by
``mu <- Exp_mu(step * (mean_n r Log_mu(z_n) - E_q[v]))`` (the Riemannian gradient of the
component's negative log-likelihood preconditioned by ``Gamma^-1``); the precision factor by a
gradient step preconditioned by ``Gamma``, ``A <- (I + step (W - E))^(-1/2) A`` with
``W = A S A^T``, ``E = A E_q[v v^T] A^T`` and ``S`` the weighted scatter of the log maps (to
first order in ``step`` this is ``A - step / 2 * A (S - E_q[v v^T]) Gamma``, the gradient of the
NLL in ``A`` times ``Gamma``; the inverse square root is the Newton step for a constant metric,
and its eigenvalues are clipped to ``[1/2, 2]`` so ``A`` stays invertible). For a constant
metric one iteration with steps 1 gives the weighted mean and covariance. An iteration whose
NLL (common random numbers) is higher than the last one (by more than ``noise_tolerance`` standard
errors of the difference, 0 by default), or whose normaliser fails (more than
``max_failed_fraction`` of its Monte Carlo shots fail; listed in ``failed_steps``), is undone and
retried with halved steps (``max_backtracks`` times; the halved steps are kept for later
iterations); an iteration that resets a component is always accepted. Stops when the NLL
changes by less than ``tol`` per point. Initialised by k-means on the codes: the means are the
clusters' latent means, the covariances the second moments of their log maps at those means.

Collapse: a component whose responsibility mass falls below ``d + 1`` points, or whose
covariance's smallest eigenvalue falls below ``1e-10`` times the data variance, raises
:class:`ComponentCollapseError` (``on_collapse="raise"``) or is reset to the data point of
highest-entropy assignment with the data covariance (``on_collapse="reset"``; its weight is
then computed from a responsibility mass of at least 1 point). A k-means cluster with fewer than
``d + 1`` points always raises.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from geometry._checks import Embed, check_points, check_positive_int
from geometry.land_checks import ComponentCollapseError, collapsed_components, warn_unconverged
from geometry.land_log_maps import mixture_log_maps
from geometry.land_normaliser import (
    base_samples,
    check_base_measure,
    estimate_normaliser,
    exp_map_or_nan,
    log_ratio_std_error,
)
from geometry.land_sampling import check_sample_method, sample_component
from geometry.metric import log_magnification_factor

__all__ = ["ComponentCollapseError", "LANDMixture"]

_DEFAULT_GEODESIC_OPTIONS: dict[str, Any] = {"num_nodes": 24, "tolerance": 1e-6, "bent_starts": 0}


class LANDMixture:
    """A mixture of ``K`` LANDs on the latent space of ``embed``.

    Args:
        embed: ``(n, d) -> (n, D')`` generator embedding (the metric is its pull-back).
        num_components: K.
        num_mc_samples: Monte Carlo samples per normaliser (even; antithetic pairs).
        max_iterations: EM iterations.
        tol: stop when the NLL changes by less than this per point.
        mean_step: step size of the mean update (1 = preconditioned Newton step).
        precision_step: step size of the precision-factor update.
        max_backtracks: halvings of both steps tried when an iteration raises the NLL.
        noise_tolerance: a candidate step is accepted when its NLL is at most this many
            standard errors of the NLL difference above the current one (the paired Monte
            Carlo error of the normalisers, :func:`geometry.land_normaliser.log_ratio_std_error`,
            times each component's responsibility mass); 0: only steps that lower the estimate.
        exp_steps: with ``exp_rtol=None``, the RK4 steps of :func:`geometry.exp_map`; else the
            first adaptive step is ``1 / exp_steps``.
        exp_rtol: tolerance of the adaptive shots of ``Exp`` (:func:`geometry.shoot_geodesics`:
            short steps across variance walls, failing rows isolated), or None for fixed-step
            RK4.
        graph_size: at most this many training codes (a seeded subset) for graph starts.
        graph_k: neighbours per node of the start graph (0: straight-line starts).
        newton_steps: Newton shooting steps refining each log map (``2 d + 1`` shots each;
            0: the boundary-value velocities, see :mod:`geometry.land_log_maps`).
        shooting_rtol: with ``newton_steps > 0``, a log map is converged when ``Exp_mu(v)``
            lands within this times ``||z - mu||`` of ``z``.
        geodesic_options: keyword arguments of :func:`geometry.connecting_geodesics` (defaults:
            ``num_nodes=24, tolerance=1e-6, bent_starts=0``, and ``max_num_nodes=num_nodes``:
            no node refinement; the velocity's direction needs a tightly converged curve).
        on_collapse: ``"raise"`` or ``"reset"`` (see module docstring).
        base_measure: ``"riemannian"`` (densities with respect to ``sqrt(det M(z)) dz``) or
            ``"lebesgue"`` (``dz``); see :mod:`geometry.land_normaliser`.
        max_failed_fraction: a normaliser estimate with more failed ``Exp`` shots than this
            fraction fails (at the start: an error; for a candidate step: the step is undone).
        oversample: tangent samples per returned sample in :meth:`sample`.
        seed: seed of k-means, the Monte Carlo base samples and :meth:`sample`.
        progress: show a tqdm bar over EM iterations.
    """

    def __init__(
        self,
        embed: Embed,
        num_components: int,
        *,
        num_mc_samples: int = 64,
        max_iterations: int = 20,
        tol: float = 1e-3,
        mean_step: float = 1.0,
        precision_step: float = 1.0,
        max_backtracks: int = 3,
        noise_tolerance: float = 0.0,
        exp_steps: int = 32,
        exp_rtol: float | None = 1e-6,
        graph_size: int = 500,
        graph_k: int = 10,
        newton_steps: int = 0,
        shooting_rtol: float = 1e-3,
        geodesic_options: dict[str, Any] | None = None,
        on_collapse: str = "raise",
        base_measure: str = "riemannian",
        max_failed_fraction: float = 0.5,
        oversample: int = 10,
        seed: int = 0,
        progress: bool = True,
    ) -> None:
        check_positive_int(num_components, "num_components")
        check_positive_int(max_iterations, "max_iterations", minimum=0)
        check_positive_int(max_backtracks, "max_backtracks", minimum=0)
        check_positive_int(exp_steps, "exp_steps")
        check_positive_int(graph_size, "graph_size", minimum=0)
        check_positive_int(oversample, "oversample")
        for name, value in (("mean_step", mean_step), ("precision_step", precision_step)):
            if not (isinstance(value, (int, float)) and 0 < value <= 1):
                raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
        if not (isinstance(tol, (int, float)) and tol >= 0):
            raise ValueError(f"tol must be a number >= 0, got {tol!r}")
        if not (isinstance(noise_tolerance, (int, float)) and noise_tolerance >= 0):
            raise ValueError(f"noise_tolerance must be a number >= 0, got {noise_tolerance!r}")
        self.noise_tolerance = float(noise_tolerance)
        if on_collapse not in ("raise", "reset"):
            raise ValueError(f"on_collapse must be 'raise' or 'reset', got {on_collapse!r}")
        self.base_measure = check_base_measure(base_measure)
        if not (isinstance(max_failed_fraction, (int, float)) and 0 <= max_failed_fraction < 1):
            raise ValueError(
                f"max_failed_fraction must be a number in [0, 1), got {max_failed_fraction!r}"
            )
        self.max_failed_fraction = float(max_failed_fraction)
        self.embed = embed
        self.num_components = num_components
        self.num_mc_samples = num_mc_samples
        self.max_iterations = max_iterations
        self.tol = float(tol)
        self.mean_step, self.precision_step = float(mean_step), float(precision_step)
        self.max_backtracks = max_backtracks
        self.exp_steps = exp_steps
        if exp_rtol is not None and not (isinstance(exp_rtol, (int, float)) and 0 < exp_rtol < 1):
            raise ValueError(f"exp_rtol must be None or a number in (0, 1), got {exp_rtol!r}")
        self.exp_rtol = None if exp_rtol is None else float(exp_rtol)
        self.graph_size = graph_size
        self.graph_k = check_positive_int(graph_k, "graph_k", minimum=0)
        self.newton_steps = check_positive_int(newton_steps, "newton_steps", minimum=0)
        if not (isinstance(shooting_rtol, (int, float)) and shooting_rtol > 0):
            raise ValueError(f"shooting_rtol must be a number > 0, got {shooting_rtol!r}")
        self.shooting_rtol = float(shooting_rtol)
        self.geodesic_options = {**_DEFAULT_GEODESIC_OPTIONS, **(geodesic_options or {})}
        self.on_collapse = on_collapse
        self.oversample = oversample
        self.seed = seed
        self.progress = progress
        self.means: Tensor | None = None  # (K, d)
        self.factors: Tensor | None = None  # (K, d, d)
        self.weights: Tensor | None = None  # (K,)
        self.log_normalisers: Tensor | None = None  # (K,)
        self.log_normaliser_std_errors: Tensor | None = None  # (K,)
        self.graph_points: Tensor | None = None  # (P, d)
        self.nll_history: list[float] = []
        #: per accepted EM iteration, the Monte Carlo SE of its NLL difference (paired shots)
        self.nll_difference_std_errors: list[float] = []
        self.converged_: Tensor | None = None  # (n, K) bool, log maps of the training codes
        self.responsibilities_: Tensor | None = None  # (n, K) of the training codes after fit
        self.last_converged: Tensor | None = None  # (n, K) bool, of the last log_prob call
        self.stop_reason = ""
        #: seconds of the last ``fit`` in the log maps, the normalisers and the M-steps (mean
        #: steps through ``Exp``), and the number of parameter evaluations (backtracks included)
        self.timings: dict[str, float] = {}
        #: errors of candidate steps whose normaliser failed (each undone, steps halved)
        self.failed_steps: list[str] = []
        self._eps: Tensor | None = None
        self._reset_rows: dict[int, tuple[Tensor, Tensor]] = {}

    # ---------------------------------------------------------------- parameters and densities

    @property
    def covariances(self) -> Tensor:
        """``(K, d, d)`` tangent covariances ``Gamma_k^-1``."""
        A = self._fitted()[1]
        inv = torch.linalg.inv(A)  # (K, d, d)
        return inv @ inv.transpose(1, 2)

    @property
    def log_normaliser(self) -> tuple[Tensor, Tensor]:
        """``(K,)`` Monte Carlo ``log Z_k`` and ``(K,)`` their standard errors."""
        self._fitted()
        assert self.log_normalisers is not None and self.log_normaliser_std_errors is not None
        return self.log_normalisers, self.log_normaliser_std_errors

    def _fitted(self) -> tuple[Tensor, Tensor, Tensor]:
        if self.means is None or self.factors is None or self.weights is None:
            raise RuntimeError("the mixture is not fitted: call fit(z) or load_state_dict first")
        return self.means, self.factors, self.weights

    def _check_z(self, z: Tensor, name: str = "z") -> Tensor:
        dim = None if self.means is None else self.means.shape[1]
        return check_points(z, name, dim=dim)

    def log_maps(self, z: Tensor, means: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``Log_{mu_k}(z_n)`` as ``(n, K, d)`` and the ``(n, K)`` ``converged`` mask
        (:func:`geometry.land_log_maps.mixture_log_maps`)."""
        means = self._fitted()[0] if means is None else means
        gp = self.graph_points if self.graph_k > 0 else None
        return mixture_log_maps(
            self.embed, z, means, graph_points=gp, graph_k=self.graph_k,
            geodesic_options=self.geodesic_options, exp_steps=self.exp_steps,
            exp_rtol=self.exp_rtol,
            newton_steps=self.newton_steps, shooting_rtol=self.shooting_rtol,
        )  # fmt: skip

    def _component_log_prob(self, V: Tensor, factors: Tensor, log_z: Tensor) -> Tensor:
        w = torch.einsum("kij,nkj->nki", factors, V)  # (n, K, d)
        return -0.5 * w.pow(2).sum(dim=2) - log_z  # (n, K)

    def component_log_prob(self, z: Tensor, measure: str = "lebesgue") -> Tensor:
        """``(n, K)`` ``log p_k(z_n)`` with respect to ``measure`` (``"lebesgue"``: latent ``dz``;
        ``"riemannian"``: ``sqrt(det M(z)) dz``); sets ``last_converged``."""
        check_base_measure(measure, "measure")
        _, A, _ = self._fitted()
        z = self._check_z(z)
        V, conv = self.log_maps(z)
        self.last_converged = conv
        warn_unconverged(conv)
        assert self.log_normalisers is not None
        lp = self._component_log_prob(V, A, self.log_normalisers)  # (n, K), base measure
        if measure != self.base_measure:
            lmf = log_magnification_factor(self.embed, z)  # (n,) log sqrt(det M(z))
            sign = 1.0 if measure == "lebesgue" else -1.0
            lp = lp + sign * lmf[:, None]
        return lp

    def log_prob(self, z: Tensor, measure: str = "lebesgue") -> Tensor:
        """``(n,)`` log density of the mixture at ``z (n, d)`` with respect to ``measure``
        (``"lebesgue"``, the default, or ``"riemannian"``; see :meth:`component_log_prob`)."""
        lp = self.component_log_prob(z, measure) + self._fitted()[2].log()  # (n, K)
        return torch.logsumexp(lp, dim=1)

    def responsibilities(self, z: Tensor) -> Tensor:
        """``(n, K)`` posterior component probabilities."""
        lp = self.component_log_prob(z, self.base_measure) + self._fitted()[2].log()
        return torch.softmax(lp, dim=1)

    def sample(
        self, num: int, seed: int | None = None, method: str = "exact"
    ) -> tuple[Tensor, Tensor]:
        """``(num, d)`` samples and their ``(num,)`` components.

        ``method="exact"``: importance resampling of ``oversample`` shots per sample (the
        mixture's density); ``"push_forward"``: ``Exp`` of tangent Gaussian samples, the LAND
        authors' sampler, which ignores the volume term
        (:func:`geometry.land_sampling.sample_component`).
        """
        check_positive_int(num, "num", minimum=0)
        check_sample_method(method)
        mu, A, pi = self._fitted()
        g = torch.Generator().manual_seed(self.seed if seed is None else seed)
        comp = torch.multinomial(pi.double().cpu(), num, replacement=True, generator=g)
        out = mu.new_zeros(num, mu.shape[1])
        for k in range(mu.shape[0]):
            rows = (comp == k).nonzero().flatten()
            out[rows] = sample_component(
                self.embed, mu[k], A[k], len(rows), oversample=self.oversample,
                num_steps=self.exp_steps, generator=g, rtol=self.exp_rtol,
                base_measure=self.base_measure, method=method,
            )  # fmt: skip
        return out, comp

    def state_dict(self) -> dict[str, Any]:
        """Fitted parameters and the settings that affect them (tensors and plain values).

        Save with ``torch.save(mixture.state_dict(), path)``; restore into a mixture built on
        the same ``embed`` with :meth:`load_state_dict` (no refit, no Monte Carlo).
        """
        mu, A, pi = self._fitted()
        assert self.log_normalisers is not None and self.log_normaliser_std_errors is not None
        return {
            "means": mu, "factors": A, "weights": pi,
            "log_normalisers": self.log_normalisers,
            "log_normaliser_std_errors": self.log_normaliser_std_errors,
            "graph_points": self.graph_points, "nll_history": list(self.nll_history),
            "nll_difference_std_errors": list(self.nll_difference_std_errors),
            "num_mc_samples": self.num_mc_samples, "exp_steps": self.exp_steps,
            "exp_rtol": self.exp_rtol, "base_measure": self.base_measure,
            "geodesic_options": dict(self.geodesic_options), "seed": self.seed,
        }  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict` (checks that ``K`` matches)."""
        num = state["means"].shape[0]
        if self.num_components != num:
            raise ValueError(f"state has {num} components, this mixture {self.num_components}")
        self.means, self.factors, self.weights = state["means"], state["factors"], state["weights"]
        self.log_normalisers = state["log_normalisers"]
        self.log_normaliser_std_errors = state["log_normaliser_std_errors"]
        self.graph_points = state["graph_points"]
        self.nll_history = list(state["nll_history"])
        self.nll_difference_std_errors = list(state.get("nll_difference_std_errors", []))
        self.num_mc_samples, self.exp_steps = state["num_mc_samples"], state["exp_steps"]
        self.exp_rtol = state.get("exp_rtol")
        self.base_measure = state.get("base_measure", "lebesgue")  # states saved before it
        self.geodesic_options, self.seed = dict(state["geodesic_options"]), state["seed"]

    # ---------------------------------------------------------------- fitting

    def fit(self, z: Tensor) -> LANDMixture:
        """Fit by EM to the codes ``z (n, d)`` (see module docstring); returns ``self``.

        Raises:
            ValueError: for malformed ``z`` (shape, non-finite values) or ``K > n``.
            ComponentCollapseError: when a component collapses and ``on_collapse="raise"``.
        """
        check_points(z, "z")
        n, d = z.shape
        K = self.num_components
        if n < K:
            raise ValueError(f"num_components={K} exceeds the number of points n={n}")
        self._eps = base_samples(self.num_mc_samples, d, self.seed, z.dtype)
        self.timings = dict.fromkeys(("log_maps", "normaliser", "m_step", "evaluations"), 0.0)
        g = torch.Generator().manual_seed(self.seed)
        keep = torch.randperm(n, generator=g)[: self.graph_size]
        self.graph_points = z[keep]
        self._data_var = float(z.var(dim=0).mean())
        self._data_cov = torch.cov(z.T).reshape(d, d)
        mu, r0 = self._kmeans_init(z)
        V0, conv0 = self._timed_log_maps(z, mu)  # (n, K, d), (n, K)
        A = self._tangent_factors(V0, r0)
        pi = r0.mean(dim=0)
        state = self._evaluate(z, mu, A, pi, log_maps=(V0, conv0))
        self.nll_history = [state[0]]
        self.nll_difference_std_errors = []
        self.failed_steps = []
        steps = (self.mean_step, self.precision_step)
        bar = tqdm(range(self.max_iterations), desc="LAND EM", disable=not self.progress)
        self.stop_reason = "max_iterations"
        for _ in bar:
            nll, V, conv, log_z, se, moments, weights = state
            r = torch.softmax(self._component_log_prob(V, A, log_z) + pi.log(), dim=1)
            for _ in range(self.max_backtracks + 1):
                start = time.perf_counter()
                cand = self._m_step(z, V, r, mu, A, moments, steps[0], steps[1])
                self.timings["m_step"] += time.perf_counter() - start
                try:
                    new = self._evaluate(z, *cand)
                except FloatingPointError as err:  # the candidate's normaliser failed
                    self.failed_steps.append(str(err))
                else:
                    diff_se = self._difference_std_error(weights, new[6], r)
                    allowed = 1e-12 * abs(nll) + self.noise_tolerance * diff_se
                    if new[0] <= nll + allowed or self._reset_rows:
                        break
                steps = (steps[0] / 2, steps[1] / 2)
            else:
                self.stop_reason = "no decrease within max_backtracks"
                break
            mu, A, pi = cand
            state = new
            self.nll_history.append(new[0])
            self.nll_difference_std_errors.append(diff_se)
            bar.set_postfix(nll=f"{new[0] / n:.4f}")
            if abs(nll - new[0]) < self.tol * n:
                self.stop_reason = "converged"
                break
        self.means, self.factors, self.weights = mu, A, pi
        self.converged_ = state[2]
        lp = self._component_log_prob(state[1], A, state[3]) + pi.log()  # (n, K)
        self.responsibilities_ = torch.softmax(lp, dim=1)
        self.log_normalisers, self.log_normaliser_std_errors = state[3], state[4]
        warn_unconverged(self.converged_)
        return self

    def _kmeans_init(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """k-means means ``(K, d)`` and one-hot assignments ``(n, K)``."""
        from sklearn.cluster import KMeans

        K = self.num_components
        labels = KMeans(K, n_init=10, random_state=self.seed).fit_predict(z.cpu().double().numpy())
        lab = torch.as_tensor(labels, dtype=torch.int64, device=z.device)
        r = torch.nn.functional.one_hot(lab, K).to(z)  # (n, K)
        self._check_collapse(z, r, None, 0)
        mu = torch.stack([z[lab == k].mean(dim=0) for k in range(K)])  # (K, d)
        return mu, r

    def _tangent_factors(self, V: Tensor, r: Tensor) -> Tensor:
        """``(K, d, d)`` precision factors of the tangent scatters ``sum_n r_nk v v^T / R_k``.

        The initial covariance is the second moment of the cluster's log maps at its k-means
        mean, not the latent covariance: with a metric that shrinks away from the data, a
        latent-covariance Gaussian in the tangent space reaches far past the cluster (its shots
        of ``Exp`` cross the variance walls), while the log maps' scatter reaches the cluster's
        own points.
        """
        w = r / r.sum(dim=0)  # (n, K)
        scatter = torch.einsum("nk,nki,nkj->kij", w, V, V)  # (K, d, d)
        return torch.stack([self._factor_of(s) for s in scatter])

    def _factor_of(self, cov: Tensor) -> Tensor:
        """Precision factor ``A`` with ``A^T A = cov^-1`` (a small ridge for stability)."""
        d = cov.shape[0]
        ridge = 1e-9 * self._data_var * torch.eye(d, dtype=cov.dtype, device=cov.device)
        return torch.linalg.inv(torch.linalg.cholesky(cov + ridge))

    def _timed_log_maps(self, z: Tensor, mu: Tensor) -> tuple[Tensor, Tensor]:
        start = time.perf_counter()
        out = self.log_maps(z, mu)  # (n, K, d), (n, K)
        self.timings["log_maps"] += time.perf_counter() - start
        return out

    def _evaluate(
        self, z: Tensor, mu: Tensor, A: Tensor, pi: Tensor,
        log_maps: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Any, ...]:  # fmt: skip
        """NLL, log maps (computed unless given), their convergence, ``log Z``, its SE, tangent
        moments, the normalisers' shot weights."""
        assert self._eps is not None
        start = time.perf_counter()
        options = (self.exp_steps, self.exp_rtol, self.base_measure, self.max_failed_fraction)
        ests = [
            estimate_normaliser(self.embed, mu[k], A[k], self._eps, *options)
            for k in range(mu.shape[0])
        ]
        self.timings["normaliser"] += time.perf_counter() - start
        log_z = torch.stack([e.log_value for e in ests])  # (K,)
        se = torch.stack([e.std_error for e in ests])
        moments = [(e.mean_v, e.second_moment) for e in ests]
        V, conv = self._timed_log_maps(z, mu) if log_maps is None else log_maps
        self.timings["evaluations"] += 1
        lp = self._component_log_prob(V, A, log_z) + pi.log()
        nll = float(-torch.logsumexp(lp, dim=1).sum())
        return nll, V, conv, log_z, se, moments, [e.weights for e in ests]

    @staticmethod
    def _difference_std_error(old: list[Tensor], new: list[Tensor], r: Tensor) -> float:
        """Monte Carlo SE of an NLL difference: ``sqrt(sum_k (R_k se_k)^2)``, ``se_k`` the
        paired SE of component ``k``'s log normaliser change, ``R_k`` its responsibility mass."""
        mass = r.sum(dim=0)  # (K,)
        terms = [float(m * log_ratio_std_error(a, b)) for m, a, b in zip(mass, old, new)]
        return math.sqrt(sum(t * t for t in terms))

    def _m_step(
        self, z: Tensor, V: Tensor, r: Tensor, mu: Tensor, A: Tensor,
        moments: list[tuple[Tensor, Tensor]], mean_step: float, precision_step: float,
    ) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
        K, d = mu.shape
        r = self._check_collapse(z, r, A, len(self.nll_history))
        mass = r.sum(dim=0)  # (K,)
        pi = mass.clamp_min(1.0) / mass.clamp_min(1.0).sum()  # a reset component keeps weight
        new_mu, new_A = mu.clone(), A.clone()
        eye = torch.eye(d, dtype=A.dtype, device=A.device)
        for k in range(K):
            if k in self._reset_rows:
                new_mu[k], new_A[k] = self._reset_rows[k]
                continue
            w = r[:, k] / mass[k]  # (n,)
            mean_v, second = moments[k]
            direction = w @ V[:, k] - mean_v  # (d,)
            step = exp_map_or_nan(
                self.embed,
                mu[k : k + 1],
                mean_step * direction[None],
                self.exp_steps,
                self.exp_rtol,
            )[0]  # (d,); NaN where the shot crossed a singular metric: the mean stays
            new_mu[k] = torch.where(torch.isfinite(step).all(), step, mu[k])
            scatter = torch.einsum("n,ni,nj->ij", w, V[:, k], V[:, k])  # (d, d)
            diff = A[k] @ (scatter - second) @ A[k].T  # (d, d), symmetric
            evals, evecs = torch.linalg.eigh(eye + precision_step * (diff + diff.T) / 2)
            U = evecs @ torch.diag(evals.clamp(0.25, 4.0).rsqrt()) @ evecs.T  # eig in [1/2, 2]
            new_A[k] = U @ A[k]
        return new_mu, new_A, pi

    def _check_collapse(self, z: Tensor, r: Tensor, A: Tensor | None, iteration: int) -> Tensor:
        """Raise or reset collapsed components; returns the responsibilities."""
        self._reset_rows = {}
        for k, reason in collapsed_components(r, A, self._data_var, z.shape[1]):
            if self.on_collapse == "raise" or A is None:
                raise ComponentCollapseError(
                    f"LAND component {k} collapsed at EM iteration {iteration}: {reason}; use "
                    "fewer components, more data, or on_collapse='reset'"
                )
            worst = int(r.max(dim=1).values.argmin())  # a point no component explains well
            self._reset_rows[k] = (z[worst].clone(), self._factor_of(self._data_cov))
        return r
