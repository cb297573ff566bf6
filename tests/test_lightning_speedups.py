"""The fast paths of ``lightning_modules/lightning_speedups.py`` (``_ResultMetric.to`` and hook
dispatch): the same results as Lightning's own code, taken only when safe."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Checkpoint
from pytorch_lightning.profilers import SimpleProfiler
from pytorch_lightning.trainer import call
from pytorch_lightning.trainer.connectors.logger_connector.result import (
    _ResultCollection,
    _ResultMetric,
)
from torch.utils.data import DataLoader, TensorDataset
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


# ------------------------------------------------------------------------------ hook dispatch
class _Recorder(pl.Callback):
    """Records each hook it implements, with the module's ``_current_fx_name`` at that time."""

    HOOKS = ("on_train_epoch_start", "on_train_batch_start", "on_before_backward",
             "on_after_backward", "on_before_optimizer_step", "on_train_batch_end",
             "on_validation_batch_end", "on_train_epoch_end", "on_fit_end")

    def __init__(self, name: str, log: list) -> None:
        self.name, self.events, self.key_reads = name, log, 0
        for hook in self.HOOKS:
            setattr(self, hook, self._make(hook))

    def _make(self, hook: str):
        def record(trainer, pl_module, *args, **kwargs):
            self.events.append((self.name, hook, pl_module._current_fx_name, trainer.global_step))
        return record

    def on_validation_epoch_end(self, trainer, pl_module):  # a hook defined on the class
        self.events.append((self.name, "on_validation_epoch_end", pl_module._current_fx_name,
                            trainer.global_step))

    @property
    def state_key(self) -> str:
        self.key_reads += 1
        return f"_Recorder[{self.name}]"


class _Silent(pl.Callback):
    """Implements no hook at all; counts how often Lightning builds its profiler name."""

    def __init__(self) -> None:
        self.key_reads = 0

    @property
    def state_key(self) -> str:
        self.key_reads += 1
        return "_Silent"


class _MonitoringRecorder(_Recorder, Checkpoint):
    """A "monitoring" callback: Lightning calls its epoch-end hook after the others'."""


class _TinyModule(pl.LightningModule):
    def __init__(self, log: list) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.log_ = log

    def training_step(self, batch, batch_idx):
        self.log_.append(("module", "training_step", self._current_fx_name, self.global_step))
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        self.log_.append(("module", "validation_step", self._current_fx_name, self.global_step))

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.log_.append(("module", "on_train_batch_end", self._current_fx_name, self.global_step))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _recorded_fit(make_trainer, profiler=None) -> tuple[list, list]:
    """A 2-epoch fit of 3 training and 2 validation batches; (hook log, callbacks)."""
    log: list = []
    torch.manual_seed(0)
    data = TensorDataset(torch.randn(12, 3))
    callbacks = [_Recorder("a", log), _Silent(), _MonitoringRecorder("m", log), _Recorder("b", log)]
    trainer = make_trainer(callbacks=callbacks, profiler=profiler, limit_val_batches=2,
                           enable_checkpointing=True)  # the Checkpoint is our recorder
    trainer.fit(_TinyModule(log), DataLoader(data, batch_size=4), DataLoader(data, batch_size=4))
    return log, callbacks


@pytest.fixture()
def lightning_dispatchers(monkeypatch):
    """Puts Lightning's own three dispatchers back for the test's duration."""
    def restore() -> None:
        for name in lightning_speedups.HOOK_DISPATCHERS:
            monkeypatch.setattr(call, name, getattr(call, name).original)
    return restore


def test_hook_fast_path_installed_once():
    fast = {name: getattr(call, name) for name in lightning_speedups.HOOK_DISPATCHERS}
    for fn in fast.values():
        assert getattr(fn, lightning_speedups._MARKER)
        assert not getattr(fn.original, lightning_speedups._MARKER, False)
    assert lightning_speedups.install_hook_fast_path()
    assert {name: getattr(call, name) for name in fast} == fast


def test_hook_fast_path_calls_the_same_hooks_in_the_same_order(make_trainer,
                                                               lightning_dispatchers):
    fast_log, fast_callbacks = _recorded_fit(make_trainer)
    lightning_dispatchers()
    reference_log, reference_callbacks = _recorded_fit(make_trainer)
    assert fast_log == reference_log
    assert len(fast_log) > 50
    hooks = [entry[1] for entry in fast_log]
    for hook in (*_Recorder.HOOKS, "on_validation_epoch_end"):
        assert hook in hooks, hook
    # the monitoring callback's epoch-end hook runs after the others', as in Lightning
    epoch_ends = [name for name, hook, *_ in fast_log if hook == "on_train_epoch_end"]
    assert epoch_ends[:3] == ["a", "b", "m"]
    # each hook sees its own name as the module's current hook
    assert all(fx == hook for _, hook, fx, _ in fast_log
               if hook not in ("training_step", "validation_step"))
    # no profiler names built: Lightning reads every callback's state_key for every hook call
    silent_fast, silent_reference = fast_callbacks[1], reference_callbacks[1]
    assert silent_reference.key_reads > 50, silent_reference.key_reads
    assert silent_fast.key_reads == 0, silent_fast.key_reads


def test_other_profilers_take_lightnings_dispatchers(make_trainer):
    profiler = SimpleProfiler()
    _, callbacks = _recorded_fit(make_trainer, profiler=profiler)
    recorded = set(profiler.recorded_durations)
    assert "[Callback]_Silent.on_train_batch_end" in recorded  # even an empty hook is profiled
    assert "[Callback]_Recorder[a].on_before_backward" in recorded
    assert "[LightningModule]_TinyModule.on_train_batch_end" in recorded
    assert "[Strategy]SingleDeviceStrategy.training_step" in recorded
    assert callbacks[1].key_reads > 50
