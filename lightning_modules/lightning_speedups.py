"""Speed fixes for Lightning internals that dominate the loop of a small model.

Two fast paths, each taken only where it computes exactly what Lightning computes, with every
other case left to Lightning's own code. Both are installed once per process when
:mod:`lightning_modules` is imported (:func:`install`), are idempotent, and do nothing where the
Lightning internal is missing (another Lightning version).

``self.log``: every ``LightningModule.log`` call ends in ``_ResultCollection.log``, which calls
``_ResultMetric.to(value.device)``. In pytorch-lightning 2.6 that method rebuilds the metric's whole
``__dict__`` through ``apply_to_collection``, walking about 70 objects and deep-copying its
``_Metadata`` dataclass, even when every tensor already sits on that device: about 0.4 ms per
call on this project's 2-core CI machine, longer than a training step of the paper's MLP. The fast
path: when the target is a single ``torch.device`` and every tensor the metric holds is already
on it (and it holds no nested torchmetrics ``Metric``), it returns the metric unchanged, which is
what the original computes (it moves nothing; the fresh ``_Metadata`` copy compares equal).

Hook dispatch: the loops call every hook through ``pytorch_lightning.trainer.call``
(``_call_callback_hooks``, ``_call_lightning_module_hook``, ``_call_strategy_hook``). Each call
enters a profiler context named by an f-string, and the callback dispatcher does so for every
callback and every hook, including the many hooks a callback does not implement (the base
``Callback`` methods are empty): ``state_key`` (for ``ModelCheckpoint`` a ``repr`` of its
settings), the string, the context manager and an empty call, for 5 hooks per training step of
this project's manual optimisation and 2 per validation step, for each callback. With the
default ``PassThroughProfiler``, which records nothing, the fast path calls the same hooks in the
same order with the same ``_current_fx_name`` bookkeeping, without the profiler context, and
skips a callback's hook that is ``Callback``'s own empty method. With any other profiler every
call goes to Lightning's function, so profiles keep all their entries.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

import torch
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import Checkpoint, EarlyStopping
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.trainer import call as _call
from torch import Tensor

_MARKER = "_latent_oddity_fast_path"


def _already_on(state: dict[str, Any], device: torch.device) -> bool:
    """True when moving a ``_ResultMetric`` with this ``__dict__`` to ``device`` would move
    nothing: every tensor it holds (directly, or one level down in a dict, list or tuple) is on
    ``device``, and it holds no module (a logged torchmetrics ``Metric``) and no dataclass other
    than its tensor-free ``_Metadata``. Anything else is left to the original method."""
    if state.get("_modules"):
        return False
    for value in state.values():
        if isinstance(value, Tensor):
            if value.device != device:
                return False
        elif isinstance(value, (dict, list, tuple)):
            items = value.values() if isinstance(value, dict) else value
            for item in items:
                if isinstance(item, Tensor):
                    if item.device != device:
                        return False
                elif isinstance(item, (dict, list, tuple, torch.nn.Module)):
                    return False
        elif isinstance(value, torch.nn.Module) or (
                dataclasses.is_dataclass(value) and type(value).__name__ != "_Metadata"):
            return False
    return True


def _replace(owner: Any, name: str, make_fast: Callable[[Any], Any]) -> bool:
    """Replace ``owner.name`` with ``make_fast(original)``, marked as ours and keeping the
    original as ``.original``; idempotent.

    Returns:
        True when the fast version is in place, False when ``owner`` has no ``name``.
    """
    original = vars(owner).get(name)  # a class's or a module's own attribute
    if original is None:  # pragma: no cover - another Lightning version
        return False
    if getattr(original, _MARKER, False):
        return True
    fast = functools.wraps(original)(make_fast(original))
    setattr(fast, _MARKER, True)
    fast.original = original
    setattr(owner, name, fast)
    return True


def _fast_result_metric_to(original: Callable[..., Any]) -> Callable[..., Any]:
    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        if (len(args) == 1 and not kwargs and isinstance(args[0], torch.device)
                and _already_on(self.__dict__, args[0])):
            return self
        return original(self, *args, **kwargs)

    return to


def install_log_fast_path() -> bool:
    """Wrap ``_ResultMetric.to`` with the ``self.log`` fast path (idempotent).

    Returns:
        True when the fast path is active, False when this Lightning version lacks the internal.
    """
    try:
        from pytorch_lightning.trainer.connectors.logger_connector.result import _ResultMetric
    except ImportError:  # pragma: no cover - another Lightning layout
        return False
    return _replace(_ResultMetric, "to", _fast_result_metric_to)


def _recording(trainer: Any) -> bool:
    """Whether the trainer's profiler records anything (only ``PassThroughProfiler`` does not)."""
    return type(trainer.profiler) is not PassThroughProfiler


_LOG = getattr(_call, "log", logging.getLogger(_call.__name__))


def _debug(trainer: Any, what: str, hook_name: str) -> None:
    if _LOG.isEnabledFor(logging.DEBUG):  # the same line as Lightning's dispatchers
        _LOG.debug(f"{trainer.__class__.__name__}: calling {what} hook: {hook_name}")


def _fast_callback_hooks(original: Callable[..., Any]) -> Callable[..., Any]:
    def dispatch(trainer: Any, hook_name: str, *args: Any,
                 monitoring_callbacks: bool | None = None, **kwargs: Any) -> None:
        if _recording(trainer):
            return original(trainer, hook_name, *args,
                            monitoring_callbacks=monitoring_callbacks, **kwargs)
        _debug(trainer, "callback", hook_name)
        pl_module = trainer.lightning_module
        if pl_module:
            prev_fx_name = pl_module._current_fx_name
            pl_module._current_fx_name = hook_name
        callbacks = trainer.callbacks
        if monitoring_callbacks is True:
            callbacks = [cb for cb in callbacks if isinstance(cb, (EarlyStopping, Checkpoint))]
        elif monitoring_callbacks is False:
            callbacks = [cb for cb in callbacks if not isinstance(cb, (EarlyStopping, Checkpoint))]
        empty = getattr(Callback, hook_name, None)  # the base class's empty method
        for callback in callbacks:
            fn = getattr(callback, hook_name)
            if callable(fn) and getattr(fn, "__func__", None) is not empty:
                fn(trainer, trainer.lightning_module, *args, **kwargs)
        if pl_module:
            pl_module._current_fx_name = prev_fx_name
        return None

    return dispatch


def _fast_module_hook(original: Callable[..., Any]) -> Callable[..., Any]:
    def dispatch(trainer: Any, hook_name: str, *args: Any, pl_module: Any = None,
                 **kwargs: Any) -> Any:
        if _recording(trainer):
            return original(trainer, hook_name, *args, pl_module=pl_module, **kwargs)
        _debug(trainer, "lightning module", hook_name)
        pl_module = pl_module or trainer.lightning_module
        if pl_module is None:
            raise TypeError("No `LightningModule` is available to call hooks on.")
        fn = getattr(pl_module, hook_name)
        if not callable(fn):
            return None
        prev_fx_name = pl_module._current_fx_name
        pl_module._current_fx_name = hook_name
        output = fn(*args, **kwargs)
        pl_module._current_fx_name = prev_fx_name
        return output

    return dispatch


def _fast_strategy_hook(original: Callable[..., Any]) -> Callable[..., Any]:
    def dispatch(trainer: Any, hook_name: str, *args: Any, **kwargs: Any) -> Any:
        if _recording(trainer):
            return original(trainer, hook_name, *args, **kwargs)
        _debug(trainer, "strategy", hook_name)
        pl_module = trainer.lightning_module
        prev_fx_name = pl_module._current_fx_name
        pl_module._current_fx_name = hook_name
        fn = getattr(trainer.strategy, hook_name)
        if not callable(fn):
            return None
        output = fn(*args, **kwargs)
        pl_module._current_fx_name = prev_fx_name
        return output

    return dispatch


#: the dispatchers of ``pytorch_lightning.trainer.call`` that the loops call every hook through,
#: and the fast version of each
_HOOK_FAST_PATHS = {
    "_call_callback_hooks": _fast_callback_hooks,
    "_call_lightning_module_hook": _fast_module_hook,
    "_call_strategy_hook": _fast_strategy_hook,
}
HOOK_DISPATCHERS = tuple(_HOOK_FAST_PATHS)


def install_hook_fast_path() -> bool:
    """Replace the three hook dispatchers of ``pytorch_lightning.trainer.call`` with their fast
    versions (idempotent; each keeps Lightning's function as ``.original``).

    Returns:
        True when the fast path is active, False when this Lightning version lacks a dispatcher.
    """
    if not all(callable(vars(_call).get(name)) for name in HOOK_DISPATCHERS):
        return False  # pragma: no cover - another Lightning version: replace none of them
    for name, make_fast in _HOOK_FAST_PATHS.items():
        _replace(_call, name, make_fast)
    return True


def install() -> bool:
    """Install both fast paths (idempotent).

    Returns:
        True when both are active.
    """
    log_path = install_log_fast_path()
    hook_path = install_hook_fast_path()
    return log_path and hook_path
