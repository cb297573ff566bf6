"""Per-epoch reproducible shuffling through Lightning's public ``set_epoch`` mechanism.

:class:`EpochSeededSampler` draws the permutation of epoch ``e`` from a generator seeded with
``derived_seed(*stream, e, "shuffle")``; Lightning calls ``set_epoch`` on a training sampler
before every epoch (also the first epoch of a resumed fit), as it does for
``DistributedSampler``. The order of epoch ``e`` therefore depends only on the stream and ``e``,
never on what ran before: a run resumed from an epoch-end checkpoint replays the same batches.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochSeededSampler", "derived_seed"]


def derived_seed(*parts: int | str) -> int:
    """A 63-bit seed from any parts (stable across processes, platforms and Python versions)."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class EpochSeededSampler(Sampler[int]):
    """A random permutation of ``range(num_items)`` per epoch, a function of (stream, epoch) only.

    The permutation of epoch ``e`` is the one that ``DataLoader(shuffle=True, generator=g)``
    yields with ``g`` freshly seeded by ``derived_seed(*stream, e, "shuffle")``: the DataLoader's
    iterator draws one 64-bit worker base seed from ``g`` before the sampler's ``randperm``, so
    that draw is made (and discarded) here too.

    Args:
        num_items: size of the dataset.
        stream: the seed parts the epoch seeds derive from (e.g. ``(run_seed, stage)``).
    """

    def __init__(self, num_items: int, stream: tuple[int | str, ...]) -> None:
        if isinstance(num_items, bool) or not isinstance(num_items, int) or num_items < 0:
            raise ValueError(f"num_items={num_items!r} must be an integer >= 0")
        self.num_items = num_items
        self.stream = tuple(stream)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (Lightning calls this before each epoch)."""
        self.epoch = int(epoch)

    def permutation(self, epoch: int) -> list[int]:
        """The order of ``epoch``."""
        gen = torch.Generator().manual_seed(derived_seed(*self.stream, epoch, "shuffle"))
        torch.empty((), dtype=torch.int64).random_(generator=gen)  # the DataLoader's base seed
        return torch.randperm(self.num_items, generator=gen).tolist()

    def __iter__(self) -> Iterator[int]:
        return iter(self.permutation(self.epoch))

    def __len__(self) -> int:
        return self.num_items
