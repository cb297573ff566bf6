"""The ``_ResultMetric.to`` fast path: same result as Lightning's method, taken only when safe."""

from __future__ import annotations

import copy

import pytest
import torch
from pytorch_lightning.trainer.connectors.logger_connector.result import (
    _ResultCollection,
    _ResultMetric,
)
from torchmetrics import MeanMetric

import lightning_modules  # noqa: F401  (installs the fast path)
from lightning_modules import lightning_speedups


def _logged(value: object) -> _ResultMetric:
    results = _ResultCollection(training=True)
    results.batch_idx, results.dataloader_idx = 0, None
    for _ in range(3):
        results.log("training_step", "train/x", value, on_step=False, on_epoch=True,
                    sync_dist=True, batch_size=7)
    return results["training_step.train/x"]


def test_installed_once_and_idempotent():
    assert getattr(_ResultMetric.to, lightning_speedups._MARKER)
    fast = _ResultMetric.to
    assert lightning_speedups.install() and _ResultMetric.to is fast
    assert not getattr(fast.original, lightning_speedups._MARKER, False)


def test_fast_path_gives_the_original_result():
    metric = _logged(torch.tensor(2.5))
    reference = copy.deepcopy(metric)
    meta = metric.meta
    assert metric.to(torch.device("cpu")) is metric
    assert metric.meta is meta  # fast path: nothing rebuilt
    _ResultMetric.to.original(reference, torch.device("cpu"))
    assert reference.meta is not meta and reference.meta == meta  # the original rebuilt it
    for name in ("value", "cumulated_batch_size"):
        assert torch.equal(getattr(metric, name), getattr(reference, name))
    assert float(metric.compute()) == pytest.approx(2.5)


def test_other_devices_and_metric_objects_take_the_original_path():
    metric = _logged(torch.tensor(1.0))
    meta = metric.meta
    metric.to(torch.device("meta"))  # a real move
    assert metric.value.device.type == "meta" and metric.meta is not meta
    assert metric.cumulated_batch_size.device.type == "meta"

    mean = MeanMetric()
    mean.update(torch.tensor([1.0, 3.0]))
    wrapped = _logged(mean)
    meta = wrapped.meta
    assert wrapped.to(torch.device("cpu")) is wrapped
    assert wrapped.meta is not meta  # a logged Metric object always goes to Lightning's method
