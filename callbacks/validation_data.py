"""Validation data of the epoch-end callbacks: a seeded subset of ``trainer.datamodule``'s
validation set, its items and labels, encoder means, and seeded index pairs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

__all__ = [
    "MissingValidationDataError",
    "choose_indices",
    "dataset_labels",
    "draw_pairs",
    "encode_means",
    "fetch_items",
    "validation_dataset",
]


class MissingValidationDataError(RuntimeError):
    """The callback needs ``trainer.datamodule.val_dataset`` and there is none."""


def validation_dataset(trainer: pl.Trainer, who: str) -> Any:
    """``trainer.datamodule.val_dataset``, or a clear error naming the callback ``who``."""
    dm = getattr(trainer, "datamodule", None)
    dataset = getattr(dm, "val_dataset", None) if dm is not None else None
    if dataset is None:
        raise MissingValidationDataError(
            f"{who} needs the validation latent codes: fit with a datamodule that has a "
            "`val_dataset` after setup() (e.g. datamodules.VAEDataModule), or remove the callback"
        )
    if len(dataset) < 2:
        raise MissingValidationDataError(
            f"{who} needs at least 2 validation points, "
            f"the datamodule's val_dataset has {len(dataset)}; raise data.val_fraction (or "
            "data.max_per_class / the dataset size), or disable the callback"
        )
    return dataset


def fetch_items(dataset: Any, indices: Sequence[int]) -> tuple[Tensor, Tensor | None]:
    """Stack ``dataset[i]`` for ``indices``: data ``(n, ...)`` and int64 labels ``(n,)`` or None.

    Items may be ``(x, y)`` pairs or bare ``x``; labels are None when absent or not integers.
    """
    xs, ys = [], []
    for i in indices:
        item = dataset[int(i)]
        if isinstance(item, (tuple, list)):
            xs.append(torch.as_tensor(item[0]))
            ys.append(item[1] if len(item) > 1 else None)
        else:
            xs.append(torch.as_tensor(item))
            ys.append(None)
    x = torch.stack(xs)
    labels: Tensor | None = None
    if ys and all(y is not None for y in ys):
        try:
            lab = torch.stack([torch.as_tensor(y).reshape(()) for y in ys])
            if not lab.is_floating_point() or bool((lab == lab.round()).all()):
                labels = lab.to(torch.int64)
        except (RuntimeError, TypeError, ValueError):
            labels = None
    return x, labels


@torch.no_grad()
def encode_means(pl_module: Any, x: Tensor, batch_size: int = 256) -> Tensor:
    """Encoder means ``(n, d)`` of ``x``, in the module's dtype and device (call in eval mode)."""
    param = next(pl_module.parameters())
    out = []
    for start in range(0, x.shape[0], batch_size):
        chunk = x[start : start + batch_size].to(device=param.device, dtype=param.dtype)
        out.append(pl_module.encode(chunk)[0].detach())
    return torch.cat(out)


def choose_indices(n: int, k: int, seed: int) -> list[int]:
    """``min(n, k)`` distinct indices of ``range(n)``, sorted, drawn with a private generator."""
    gen = torch.Generator().manual_seed(int(seed))
    return sorted(torch.randperm(n, generator=gen)[: min(n, k)].tolist())


def draw_pairs(
    n: int, num_pairs: int, labels: Tensor | None, within_fraction: float, seed: int
) -> list[list[int]]:
    """A seeded list of ``num_pairs`` index pairs ``[i, j]``, ``i != j``, into ``range(n)``.

    With ``labels``, ``round(within_fraction * num_pairs)`` pairs share a label (as far as the
    classes allow) and the rest have different labels (as far as there are two classes);
    otherwise pairs are uniform. Uses a private ``torch.Generator``: the global RNG is untouched.
    """
    gen = torch.Generator().manual_seed(int(seed))

    def rand(m: int) -> int:
        return int(torch.randint(m, (1,), generator=gen))

    pairs: list[list[int]] = []
    if labels is None or int(labels.unique().numel()) < 1:
        while len(pairs) < num_pairs:
            i, j = rand(n), rand(n)
            if i != j:
                pairs.append([i, j])
        return pairs
    labels = labels.cpu()
    classes = labels.unique().tolist()
    members = {c: (labels == c).nonzero().flatten().tolist() for c in classes}
    multi = [c for c in classes if len(members[c]) >= 2]
    n_within = round(within_fraction * num_pairs) if multi else 0
    if len(classes) < 2:
        n_within = num_pairs if multi else 0
    for _ in range(n_within):
        c = multi[rand(len(multi))]
        m = members[c]
        a = rand(len(m))
        b = (a + 1 + rand(len(m) - 1)) % len(m)
        pairs.append([m[a], m[b]])
    while len(pairs) < num_pairs:
        i, j = rand(n), rand(n)
        if i != j and (len(classes) < 2 or int(labels[i]) != int(labels[j])):
            pairs.append([i, j])
    return pairs


def dataset_labels(dataset: Any) -> Tensor | None:
    """Int64 labels ``(n,)`` of every item of ``dataset`` (cheap for a TensorDataset), or None."""
    tensors = getattr(dataset, "tensors", None)
    if isinstance(tensors, (tuple, list)) and len(tensors) >= 2 and len(tensors[1]) == len(dataset):
        lab = tensors[1]
        if lab.ndim == 1 and (not lab.is_floating_point() or bool((lab == lab.round()).all())):
            return lab.to(torch.int64)
        return None
    return fetch_items(dataset, range(len(dataset)))[1]
