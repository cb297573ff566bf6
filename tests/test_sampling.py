"""Per-epoch reproducible shuffling: EpochSeededSampler and Lightning's set_epoch calls."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from datamodules.sampling import EpochSeededSampler, derived_seed


def test_permutation_is_a_seeded_shuffled_dataloaders_order():
    """Epoch e's order is the one of DataLoader(shuffle=True) with a generator freshly seeded by
    derived_seed(*stream, e, "shuffle"): what the pipeline's earlier reseeding produced."""
    data = TensorDataset(torch.arange(37))
    sampler = EpochSeededSampler(37, (0, 1))
    for epoch in (0, 1, 5):
        gen = torch.Generator().manual_seed(derived_seed(0, 1, epoch, "shuffle"))
        reference = DataLoader(data, batch_size=37, shuffle=True, generator=gen)
        sampler.set_epoch(epoch)
        assert list(sampler) == next(iter(reference))[0].tolist()


def test_order_depends_on_stream_and_epoch_only():
    a, b = EpochSeededSampler(50, (3, 2)), EpochSeededSampler(50, (3, 2))
    orders = []
    for epoch in range(3):
        a.set_epoch(epoch)
        orders.append(list(a))
        assert sorted(orders[-1]) == list(range(50))
    assert orders[0] != orders[1] != orders[2]
    b.set_epoch(2)  # straight to epoch 2, as a resumed run does
    assert list(b) == orders[2]
    assert list(b) == list(b)  # iterating again in the same epoch gives the same order
    assert list(EpochSeededSampler(50, (3, 1)).permutation(2)) != orders[2]
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    list(a)
    assert torch.equal(torch.rand(1), before)  # the global RNG is untouched


class _RecordEpochs(pl.Callback):
    def __init__(self, sampler: EpochSeededSampler) -> None:
        self.sampler = sampler
        self.seen: list[tuple[int, int]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.seen.append((trainer.current_epoch, self.sampler.epoch))


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.w - batch[0].float().mean()) ** 2

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_calls_set_epoch_before_every_epoch(make_trainer, tmp_path):
    sampler = EpochSeededSampler(12, (0, 1))
    loader = DataLoader(TensorDataset(torch.arange(12)), batch_size=4, sampler=sampler)
    record = _RecordEpochs(sampler)
    trainer = make_trainer(max_epochs=3, callbacks=[record], deterministic=False)
    trainer.fit(_Tiny(), train_dataloaders=loader)
    assert record.seen == [(0, 0), (1, 1), (2, 2)]
