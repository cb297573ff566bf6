"""The experiments :mod:`scripts.reproduce` can run, by name.

An experiment is a function ``run(settings: ReproduceSettings, **options) -> dict`` that writes
its report folder, plus an optional ``check(settings, **options)`` that raises
:class:`~pipeline.UserError` before any training. Add one with :func:`register_experiment`
(e.g. in :mod:`experiments` for a built-in one)::

    from experiments.land import run_land_experiment
    register_experiment("land", run_land_experiment, description="LAND mixture (Sec. 5)")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline import UserError

__all__ = [
    "Experiment",
    "EXPERIMENTS",
    "get_experiment",
    "register_experiment",
    "selected_experiments",
]


@dataclass(frozen=True)
class Experiment:
    """A named experiment.

    Attributes:
        name: its name on the command line and its report folder.
        run: ``run(settings, **options) -> results``.
        check: ``check(settings, **options)``, raising ``UserError`` before any work (or None).
        description: one line for ``--help``.
        in_all: whether ``all`` runs it (False for an experiment that takes hours at its
            default sizes; it then runs only when named).
    """

    name: str
    run: Callable[..., dict[str, Any]]
    check: Callable[..., None] | None = None
    description: str = ""
    in_all: bool = True


#: name -> experiment, in the order ``all`` runs them
EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(
    name: str,
    run: Callable[..., dict[str, Any]],
    check: Callable[..., None] | None = None,
    description: str = "",
    in_all: bool = True,
) -> Experiment:
    """Add (or replace) an experiment in :data:`EXPERIMENTS` (see :class:`Experiment`)."""
    if not name or name == "all" or not name.replace("_", "").isalnum():
        raise ValueError(f"experiment name {name!r} must be alphanumeric/underscores, not 'all'")
    exp = Experiment(name=name, run=run, check=check, description=description, in_all=in_all)
    EXPERIMENTS[name] = exp
    return exp


def get_experiment(name: str) -> Experiment:
    """The experiment called ``name``.

    Raises:
        UserError: naming the unknown name and the accepted ones.
    """
    if name not in EXPERIMENTS:
        raise UserError(
            f"unknown experiment {name!r}; accepted: {', '.join([*EXPERIMENTS, 'all'])}"
        )
    return EXPERIMENTS[name]


def selected_experiments(names: Sequence[str]) -> list[str]:
    """The experiments that ``--experiment`` arguments select, in order, each once.

    ``all`` stands for every experiment registered with ``in_all=True``; the others run only
    when named (e.g. ``["all", "land"]``).

    Raises:
        UserError: an unknown name (naming the accepted ones).
    """
    out: list[str] = []
    for name in names:
        if name == "all":
            picked = [n for n, e in EXPERIMENTS.items() if e.in_all]
        else:
            picked = [get_experiment(name).name]
        out += [n for n in picked if n not in out]
    return out
