"""Appendix C: the standard MLP variance head versus the RBF precision, by test likelihood.

Setup (paper, Appendix C): digits 0 and 1, a 90/10 train/test split, pixels in [-1, 1], softplus
hidden layers, tanh mean output. Stage 1 (encoder and mean) is trained once; stage 2 is trained
twice from the same stage-1 checkpoint, once with the MLP head and once with the RBF precision
(K = 32, a = 1), so only the variance model differs.

Test log marginal likelihood ``log p(x)`` (nats per image, the sum over its 784 pixel densities):

* prior estimator (the paper's): ``log (1/S) sum_s p(x | z_s)``, ``z_s ~ N(0, I)``, S = 10,000;
* importance-sampled estimator: ``log (1/S) sum_s p(x | z_s) p(z_s) / q(z_s | x)``, ``z_s ~
  q(z | x)`` (the encoder).

The standard error of each per-image estimate is the delta-method one, ``sd(w) / (sqrt(S)
mean(w))`` for the weights ``w_s``; the table gives the mean over test images and the standard
error of that mean.

The variance far from the data is measured as the mean over pixels of ``sigma^2(z)`` on a ring
at twice the largest distance of any training code from their mean, relative to the same on the
test codes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from experiments.common import ReproduceSettings, check_digits_available, encode_codes, train_model
from experiments.report import ExperimentReport
from pipeline import UserError

__all__ = [
    "PAPER_LOG_LIKELIHOOD",
    "check_variance",
    "importance_log_marginal",
    "prior_log_marginal",
    "run_variance",
]

#: the paper's test log marginal likelihoods (Appendix C)
PAPER_LOG_LIKELIHOOD = {"mlp": -68.25, "rbf": -50.34}
LOG_2PI = math.log(2 * math.pi)

Decode = Callable[[Tensor], tuple[Tensor, Tensor]]
Encode = Callable[[Tensor], tuple[Tensor, Tensor]]


def _log_gaussian_pairs(x: Tensor, mu: Tensor, sigma: Tensor) -> Tensor:
    """``log N(x_i; mu_j, diag sigma_j^2)`` for all pairs: x (N, D), mu/sigma (S, D) -> (N, S)."""
    prec = sigma.pow(-2)  # (S, D)
    quad = x.pow(2) @ prec.T - 2 * x @ (mu * prec).T + (mu.pow(2) * prec).sum(1)  # (N, S)
    norm = -sigma.log().sum(1) - 0.5 * x.shape[1] * LOG_2PI  # (S,)
    return norm - 0.5 * quad


def _log_mean_exp_and_se(logw: Tensor) -> tuple[Tensor, Tensor]:
    """``log mean exp`` over the last axis and its delta-method standard error."""
    S = logw.shape[-1]
    m = logw.max(dim=-1, keepdim=True).values
    w = (logw - m).exp()  # (..., S)
    mean = w.mean(-1)
    est = m.squeeze(-1) + mean.log()
    se = w.std(-1) / (math.sqrt(S) * mean)
    return est, se


@torch.no_grad()
def prior_log_marginal(
    decode: Decode,
    x: Tensor,
    latent_dim: int,
    num_samples: int = 10_000,
    generator: torch.Generator | None = None,
    chunk: int = 1000,
) -> tuple[Tensor, Tensor]:
    """The prior-sample estimate of ``log p(x)`` (the same prior samples for every ``x``).

    Args:
        decode: ``z (S, d) -> (mu, sigma)``, each ``(S, *shape)``.
        x: ``(N, *shape)`` data.
        latent_dim: d.
        num_samples: S.
        generator: seeds the prior samples.
        chunk: prior samples decoded at once.

    Returns:
        ``estimate (N,)`` and its standard error ``(N,)``.
    """
    xf = x.flatten(1).double()  # (N, D)
    parts = []
    for start in range(0, num_samples, chunk):
        n = min(chunk, num_samples - start)
        z = torch.randn(n, latent_dim, generator=generator)  # (n, d)
        mu, sigma = decode(z.to(x.dtype))
        parts.append(_log_gaussian_pairs(xf, mu.flatten(1).double(), sigma.flatten(1).double()))
    est, se = _log_mean_exp_and_se(torch.cat(parts, dim=1))  # (N, S) -> (N,)
    return est, se


@torch.no_grad()
def importance_log_marginal(
    decode: Decode,
    encode: Encode,
    x: Tensor,
    num_samples: int = 1000,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """The importance-sampled estimate of ``log p(x)`` with proposal ``q(z | x)``.

    Args:
        decode: ``z (S, d) -> (mu, sigma)``, each ``(S, *shape)``.
        encode: ``x (N, *shape) -> (mu_z, logvar_z)``, each ``(N, d)``.
        x: ``(N, *shape)`` data.
        num_samples: S per data point.
        generator: seeds the proposal samples.

    Returns:
        ``estimate (N,)`` and its standard error ``(N,)``.
    """
    mu_z, logvar_z = (t.double() for t in encode(x))  # (N, d)
    std_z = (0.5 * logvar_z).exp()
    N, d = mu_z.shape
    est, se = torch.empty(N, dtype=torch.float64), torch.empty(N, dtype=torch.float64)
    for i in range(N):
        eps = torch.randn(num_samples, d, generator=generator, dtype=torch.float64)
        z = mu_z[i] + std_z[i] * eps  # (S, d)
        mu, sigma = decode(z.to(x.dtype))
        mu, sigma = mu.flatten(1).double(), sigma.flatten(1).double()
        xi = x[i].flatten().double()
        log_lik = (-0.5 * ((xi - mu) / sigma).pow(2) - sigma.log() - 0.5 * LOG_2PI).sum(1)
        log_prior = (-0.5 * z.pow(2) - 0.5 * LOG_2PI).sum(1)
        log_q = (-0.5 * eps.pow(2) - std_z[i].log() - 0.5 * LOG_2PI).sum(1)
        est[i], se[i] = _log_mean_exp_and_se(log_lik + log_prior - log_q)
    return est, se


def check_variance(
    settings: ReproduceSettings, digits: tuple[int, ...] | list[int] = (0, 1), num_test: int = 100
) -> None:
    """Up-front checks (no training). Raises :class:`~pipeline.UserError`."""
    if num_test < 1:
        raise UserError(f"variance: num_test={num_test} must be >= 1")
    check_digits_available(settings, digits, 10, "variance")


@torch.no_grad()
def _mean_variance(model: Any, z: Tensor) -> Tensor:
    return model.decode(z)[1].flatten(1).pow(2).mean(1)  # (B,)


def _variance_figure(path: str, models: dict[str, Any], codes: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lo, hi = codes.min(0), codes.max(0)
    pad = 0.5 * (hi - lo)
    gx = np.linspace(lo[0] - pad[0], hi[0] + pad[0], 80)
    gy = np.linspace(lo[1] - pad[1], hi[1] + pad[1], 80)
    Z = torch.tensor(np.stack(np.meshgrid(gx, gy), -1).reshape(-1, 2), dtype=torch.float32)
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.5))
    for ax, (name, m) in zip(np.atleast_1d(axes), models.items()):
        v = _mean_variance(m, Z).log10().reshape(80, 80).numpy()
        im = ax.imshow(v, origin="lower", extent=(gx[0], gx[-1], gy[0], gy[-1]), cmap="viridis")
        ax.scatter(codes[:, 0], codes[:, 1], s=2, c="w", alpha=0.5)
        ax.set_title(f"{name}: log10 mean sigma^2(z)")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _estimate_cell(r: dict[str, float]) -> str:
    return (
        f"{r['mean']:.1f} ({r['se_of_mean']:.1f}; {r['mean_estimator_se']:.2g}), "
        f"median {r['median']:.1f}"
    )


def run_variance(
    settings: ReproduceSettings,
    digits: tuple[int, ...] | list[int] = (0, 1),
    num_test: int = 100,
    prior_samples: int = 10_000,
    importance_samples: int = 1000,
    num_centers: int = 32,
    bandwidth_scale: float = 1.0,
    max_per_class: int | None = None,
) -> dict[str, Any]:
    """Run Appendix C and write its report (``<out_dir>/variance``).

    Args:
        settings: shared settings (the first seed trains the models).
        digits: digit set (paper: 0 and 1).
        num_test: test images evaluated (at most the test split).
        prior_samples: S of the prior estimator (paper: 10,000).
        importance_samples: S per image of the importance-sampled estimator.
        num_centers: RBF K (paper: 32).
        bandwidth_scale: RBF a (paper: 1).
        max_per_class: images per digit (None: all).
    """
    digits = tuple(int(d) for d in digits)
    check_variance(settings, digits, num_test)
    report = ExperimentReport("variance", settings)
    seed = settings.seeds[0]
    data = {
        "scale": "symmetric",
        "val_fraction": 0.05,
        "test_fraction": 0.1,
        "max_per_class": max_per_class,
    }
    base = {
        "activation": "softplus",
        "num_centers": num_centers,
        "bandwidth_scale": bandwidth_scale,
    }
    t0 = time.perf_counter()
    rbf = train_model(settings, "variance-rbf", digits, seed, model=base, data=data)
    stage1 = os.path.join(rbf.run_dir, "checkpoints", "stage1", "last.ckpt")
    mlp = train_model(
        settings,
        "variance-mlp",
        digits,
        seed,
        model={**base, "variance_head": "mlp"},
        data=data,
        stage1_checkpoint=stage1,
    )
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    test = rbf.datamodule.test_dataset
    x = test.tensors[0][:num_test]
    train_codes, _, _ = encode_codes(rbf.model, [rbf.datamodule.train_dataset])
    test_codes = rbf.model.encode(x)[0].detach()
    center = train_codes.mean(0)
    radius = 2 * float((train_codes - center).norm(dim=1).max())
    angles = torch.linspace(0, 2 * math.pi, 65)[:-1]
    ring = center + radius * torch.stack([angles.cos(), angles.sin()], 1)
    models = {"mlp": mlp.model, "rbf": rbf.model}
    results: dict[str, Any] = {}
    for name, m in tqdm(models.items(), desc="likelihoods", disable=not settings.progress):
        g = torch.Generator().manual_seed(seed)
        pe, pse = prior_log_marginal(m.decode, x, m.latent_dim, prior_samples, g)
        ie, ise = importance_log_marginal(m.decode, m.encode, x, importance_samples, g)
        far = float(_mean_variance(m, ring).mean() / _mean_variance(m, test_codes).mean())
        results[name] = {
            "prior": {
                "mean": float(pe.mean()),
                "median": float(pe.median()),
                "se_of_mean": float(pe.std() / math.sqrt(len(pe))),
                "mean_estimator_se": float(pse.mean()),
            },
            "importance": {
                "mean": float(ie.mean()),
                "median": float(ie.median()),
                "se_of_mean": float(ie.std() / math.sqrt(len(ie))),
                "mean_estimator_se": float(ise.mean()),
            },
            "far_variance_ratio": far,
            "data_mean_variance": float(_mean_variance(m, test_codes).mean()),
            "run_dir": mlp.run_dir if name == "mlp" else rbf.run_dir,
        }
    t_eval = time.perf_counter() - t0
    rows = []
    for name, r in results.items():
        rows.append(
            [
                name,
                *(_estimate_cell(r[e]) for e in ("prior", "importance")),
                f"{r['far_variance_ratio']:.3g}",
                f"{PAPER_LOG_LIKELIHOOD[name]:.2f}",
            ]
        )
    report.add_text(
        f"Digits {list(digits)}, seed {seed}, pixels in [-1, 1]; {len(x)} test images; stage 1 "
        f"{settings.stage1_epochs} epochs, each head {settings.stage2_epochs} epochs from the "
        f"same stage-1 checkpoint; RBF K={num_centers}, a={bandwidth_scale}. Log p(x) in nats "
        "per image (sum of 784 pixel densities): mean over test images (in brackets its SE over "
        "test images; the mean per-image estimator SE) and the median over test images. "
        f"Prior estimator: S={prior_samples}; importance: S="
        f"{importance_samples} per image from q(z|x). Far/data: mean sigma^2 on a ring at twice "
        "the codes' radius over the same at the test codes. The paper does not state the unit "
        "of its numbers (-68.25 / -50.34); they are not on the scale of a sum of 784 "
        "continuous pixel densities, so compare the order (RBF above MLP), not the values."
    )
    report.add_table(
        "log_likelihood",
        ["head", "log p(x), prior", "log p(x), importance", "far/data sigma^2", "paper (prior)"],
        rows,
    )
    _variance_figure(report.figure_path("variance_maps"), models, train_codes.numpy())
    report.add_text(f"Time: training {t_train:.0f} s, evaluation {t_eval:.0f} s.")
    summary = {}
    for name, r in results.items():
        summary[f"variance/{name}/log_px_prior"] = r["prior"]["mean"]
        summary[f"variance/{name}/log_px_importance"] = r["importance"]["mean"]
        summary[f"variance/{name}/far_variance_ratio"] = r["far_variance_ratio"]
    return report.write(
        {"heads": results, "timing": {"train_seconds": t_train, "eval_seconds": t_eval}}, summary
    )
