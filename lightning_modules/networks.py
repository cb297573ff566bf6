"""Plain ``nn.Module`` networks injected into :class:`~lightning_modules.TwoStageVAE`.

Every network here is a pure function of its input (no batch statistics, no in-place ops, no
data-dependent control flow), so ``torch.func`` transforms (``jvp``, ``vmap``) apply to it: the
geometry package differentiates the generator through them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import Tensor, nn

#: Activations with continuous second derivatives (the expected-metric theorem needs C2 maps).
SMOOTH_ACTIVATIONS = ("tanh", "softplus", "sigmoid", "silu", "gelu")
#: Accepted but not twice differentiable: a warning is issued.
NONSMOOTH_ACTIVATIONS = ("relu", "elu")
OUTPUT_ACTIVATIONS = ("sigmoid", "tanh", "identity")


def make_activation(name: str) -> nn.Module:
    """Build a hidden-layer activation by name.

    Args:
        name: one of ``SMOOTH_ACTIVATIONS`` or ``NONSMOOTH_ACTIVATIONS``.

    Raises:
        ValueError: for an unknown name.
    """
    table = {
        "tanh": nn.Tanh,
        "softplus": nn.Softplus,
        "sigmoid": nn.Sigmoid,
        "silu": nn.SiLU,
        "gelu": nn.GELU,
        "relu": nn.ReLU,
        "elu": nn.ELU,
    }
    if name not in table:
        raise ValueError(
            f"activation={name!r} is not supported; choose one of "
            f"{SMOOTH_ACTIVATIONS} (twice differentiable) or {NONSMOOTH_ACTIVATIONS}"
        )
    if name in NONSMOOTH_ACTIVATIONS:
        warnings.warn(
            f"activation={name!r} is not twice differentiable: the expected pull-back metric "
            "and its geodesics assume a C2 generator (use tanh, softplus, sigmoid, silu or gelu)",
            stacklevel=2,
        )
    return table[name]()


def make_output_activation(name: str) -> nn.Module:
    """Output activation of the generator mean: sigmoid for data in [0, 1], tanh for [-1, 1]."""
    table = {"sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "identity": nn.Identity}
    if name not in table:
        raise ValueError(
            f"output_activation={name!r} is not supported; choose one of {OUTPUT_ACTIVATIONS}"
        )
    return table[name]()


def mlp(
    sizes: Sequence[int], activation: str, final_activation: nn.Module | None = None
) -> nn.Module:
    """A fully connected network ``sizes[0] -> ... -> sizes[-1]``, ``activation`` between layers.

    Args:
        sizes: layer widths, input first, output last (at least two entries).
        activation: hidden activation name (see :func:`make_activation`).
        final_activation: module applied to the output, or ``None`` for a linear output.
    """
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(make_activation(activation))
    if final_activation is not None:
        layers.append(final_activation)
    return nn.Sequential(*layers)


class MLPEncoder(nn.Module):
    """Gaussian encoder q(z|x) = N(mu(x), diag exp(logvar(x))) as an MLP on flattened data.

    Args:
        data_dim: D, the number of data dimensions (28 * 28 for MNIST).
        latent_dim: d.
        hidden_dims: hidden widths (paper, Appendix D: 64 and 32).
        activation: hidden activation name.
    """

    def __init__(self, data_dim: int, latent_dim: int, hidden_dims: Sequence[int], activation: str):
        super().__init__()
        self.net = mlp([data_dim, *hidden_dims, 2 * latent_dim], activation)
        self.latent_dim = latent_dim

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, *data_shape) -> mu, logvar: (B, d) each."""
        h = self.net(x.flatten(1))  # (B, 2d)
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar


class MLPMeanDecoder(nn.Module):
    """Generator mean mu(z): an MLP mirroring the encoder, reshaped to ``data_shape``."""

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        hidden_dims: Sequence[int],
        activation: str,
        output_activation: str,
    ):
        super().__init__()
        self.data_shape = tuple(data_shape)
        data_dim = math.prod(self.data_shape)
        self.net = mlp(
            [latent_dim, *reversed(list(hidden_dims)), data_dim],
            activation,
            make_output_activation(output_activation),
        )

    def forward(self, z: Tensor) -> Tensor:
        """z: (B, d) -> mu: (B, *data_shape)."""
        return self.net(z).reshape(z.shape[0], *self.data_shape)


def _check_conv_shape(data_shape: Sequence[int]) -> None:
    if len(data_shape) != 3 or data_shape[1] % 4 or data_shape[2] % 4:
        raise ValueError(
            f"architecture='conv' needs image data of shape (C, H, W) with H and W divisible by 4 "
            f"(e.g. (1, 28, 28)); got data_shape={tuple(data_shape)}. Use architecture='mlp'."
        )


class ConvEncoder(nn.Module):
    """Convolutional Gaussian encoder for (C, H, W) images (two stride-2 convolutions + MLP)."""

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        channels: Sequence[int],
        hidden_dim: int,
        activation: str,
    ):
        super().__init__()
        _check_conv_shape(data_shape)
        c, h, w = data_shape
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 4, stride=2, padding=1),
            make_activation(activation),
            nn.Conv2d(c1, c2, 4, stride=2, padding=1),
            make_activation(activation),
        )
        self.head = mlp([c2 * (h // 4) * (w // 4), hidden_dim, 2 * latent_dim], activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, C, H, W) -> mu, logvar: (B, d) each."""
        h = self.head(self.features(x).flatten(1))  # (B, 2d)
        mu, logvar = h.chunk(2, dim=-1)
        return mu, logvar


class ConvMeanDecoder(nn.Module):
    """Convolutional generator mean: MLP to a (c2, H/4, W/4) map, two transposed convolutions."""

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        channels: Sequence[int],
        hidden_dim: int,
        activation: str,
        output_activation: str,
    ):
        super().__init__()
        _check_conv_shape(data_shape)
        c, h, w = data_shape
        c1, c2 = channels
        self.map_shape = (c2, h // 4, w // 4)
        self.head = mlp([latent_dim, hidden_dim, math.prod(self.map_shape)], activation)
        self.act = make_activation(activation)
        self.up = nn.Sequential(
            nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1),
            make_activation(activation),
            nn.ConvTranspose2d(c1, c, 4, stride=2, padding=1),
            make_output_activation(output_activation),
        )

    def forward(self, z: Tensor) -> Tensor:
        """z: (B, d) -> mu: (B, C, H, W)."""
        h = self.act(self.head(z)).reshape(z.shape[0], *self.map_shape)
        return self.up(h)


class MLPStdHead(nn.Module):
    """The standard variance network (the paper's baseline): sigma(z) = softplus(MLP(z)) + min_std.

    The softplus acts on the standard deviation itself, not on a log-variance (a known reproduction
    bug forced sigma^2 >= 1 that way). Far from the data it extrapolates arbitrarily: that is the
    paper's "poor variance estimates" finding.

    The output layer starts with weights scaled by 0.01 and the bias that gives
    ``sigma = init_std`` everywhere, so stage 2 starts from stage 1's constant variance, like the
    RBF network (a default initialization starts near sigma = 0.69 and trains far more slowly).

    Args:
        data_shape: shape of one data point.
        latent_dim: d.
        hidden_dims: hidden widths (used in reverse order, like the mean decoder).
        activation: hidden activation.
        min_std: lower bound added to the softplus.
        init_std: the initial standard deviation (> ``min_std``).
    """

    def __init__(
        self,
        data_shape: Sequence[int],
        latent_dim: int,
        hidden_dims: Sequence[int],
        activation: str = "softplus",
        min_std: float = 1e-3,
        init_std: float = 0.1,
    ):
        super().__init__()
        if not init_std > min_std:
            raise ValueError(f"init_std={init_std} must be larger than min_std={min_std}")
        self.data_shape = tuple(data_shape)
        self.net = mlp(
            [latent_dim, *reversed(list(hidden_dims)), math.prod(self.data_shape)], activation
        )
        self.min_std = min_std
        last = self.net[-1]
        with torch.no_grad():
            last.weight.mul_(0.01)
            last.bias.fill_(math.log(math.expm1(init_std - min_std)))  # inverse softplus

    def forward(self, z: Tensor) -> Tensor:
        """z: (B, d) -> sigma: (B, *data_shape), strictly positive."""
        sigma = nn.functional.softplus(self.net(z)) + self.min_std  # (B, D)
        return sigma.reshape(z.shape[0], *self.data_shape)
