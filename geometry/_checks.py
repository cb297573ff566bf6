"""Input validation shared by the geometry package (internal)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Embed = Callable[[Tensor], Tensor]
"""A generator's embedding ``h: (B, d) -> (B, D')``; the metric is its Euclidean pull-back.

Rows must be independent (no batch statistics, e.g. BatchNorm in train mode) and the map
deterministic (dropout off). Outputs with trailing shape ``(B, C, H, W)`` are flattened.
"""


def check_points(z: Tensor, name: str = "z", *, dim: int | None = None) -> Tensor:
    """Check that ``z`` is a finite floating-point ``(B, d)`` tensor; return it unchanged."""
    if not isinstance(z, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if z.ndim != 2:
        raise ValueError(f"{name} must have shape (B, d), got shape {tuple(z.shape)}")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {z.dtype}")
    if z.shape[1] < 1:
        raise ValueError(f"{name} must have latent dimension d >= 1, got shape {tuple(z.shape)}")
    if dim is not None and z.shape[1] != dim:
        raise ValueError(f"{name} has latent dimension {z.shape[1]}, expected {dim}")
    if not bool(torch.isfinite(z).all()):
        bad = int((~torch.isfinite(z)).any(dim=1).sum())
        raise ValueError(f"{name} contains non-finite values (in {bad} of {z.shape[0]} rows)")
    return z


def check_curves(curves: Tensor, name: str = "curves") -> Tensor:
    """Check that ``curves`` is a finite floating-point ``(B, N, d)`` tensor with N >= 2."""
    if not isinstance(curves, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(curves).__name__}")
    if curves.ndim != 3:
        hint = " (for one curve use curves[None])" if curves.ndim == 2 else ""
        raise ValueError(f"{name} must have shape (B, N, d), got shape {tuple(curves.shape)}{hint}")
    if not curves.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {curves.dtype}")
    if curves.shape[1] < 2:
        raise ValueError(f"{name} needs at least 2 nodes per curve, got N={curves.shape[1]}")
    if curves.shape[2] < 1:
        raise ValueError(f"{name} must have latent dimension d >= 1, got {tuple(curves.shape)}")
    if not bool(torch.isfinite(curves).all()):
        raise ValueError(f"{name} contains non-finite values")
    return curves


def check_positive_int(value: int, name: str, minimum: int = 1) -> int:
    """Check that ``value`` is an int >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _parameter_dtype(embed: Embed) -> torch.dtype | None:
    """Floating dtype of the parameters of ``embed`` (a module or a bound method of one)."""
    owner = getattr(embed, "__self__", embed)
    if not isinstance(owner, torch.nn.Module):
        return None
    for p in owner.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def embed_flat(embed: Embed, z: Tensor) -> Tensor:
    """Evaluate ``embed`` on ``z (B, d)`` and flatten its output to ``(B, D')``.

    Raises:
        TypeError: when ``z``'s dtype differs from the dtype of ``embed``'s parameters (say,
            float64 points and a float32 model), naming both and the two ways out.
    """
    dtype = _parameter_dtype(embed)
    if dtype is not None and z.dtype != dtype:
        raise TypeError(
            f"the latent points are {z.dtype} but embed's parameters are {dtype}: pass points "
            f"of dtype {dtype} (e.g. z.to({dtype})) or convert the model (e.g. model.double())"
        )
    try:
        out = embed(z)
    except RuntimeError as err:
        if "dtype" in str(err) and "same dtype" in str(err):
            raise TypeError(
                f"embed failed on latent points of dtype {z.dtype} ({err}); pass points of the "
                "model's dtype or convert the model"
            ) from err
        raise
    if not isinstance(out, Tensor):
        raise TypeError(f"embed must return a torch.Tensor, got {type(out).__name__}")
    if out.ndim < 1 or out.shape[0] != z.shape[0]:
        raise ValueError(
            f"embed returned shape {tuple(out.shape)} for input of shape {tuple(z.shape)}; "
            "expected a leading batch dimension of the same size"
        )
    if out.ndim == 1:
        return out[:, None]  # (B, 1)
    return out.flatten(1)  # (B, D'); also for B = 0
