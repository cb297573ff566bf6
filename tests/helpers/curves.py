"""Curve checks shared by the geometry tests."""

from __future__ import annotations

import torch


def distance_to_segment(curves: torch.Tensor) -> torch.Tensor:
    """Distance ``(B, N)`` of every node of ``curves (B, N, d)`` to its curve's end-point chord."""
    a, b = curves[:, :1], curves[:, -1:]  # (B, 1, d)
    ab = b - a
    t = ((curves - a) * ab).sum(-1, keepdim=True) / (ab * ab).sum(-1, keepdim=True)
    return (curves - (a + t.clamp(0, 1) * ab)).norm(dim=-1)  # (B, N)
