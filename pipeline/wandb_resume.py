"""How the W&B run of an invocation starts: the ``wandb.init`` arguments and which records of
the run's history (``history.jsonl``) it logs again (README "W&B").

Every call that logs to W&B is one row of the run's history (``_step`` 0, 1, ...) and one record
of ``history.jsonl``, tagged ``online`` when an online invocation logged it. A resume keeps the
records its checkpoint covers (``RunHistory.rewind``) and then:

* offline: a new offline run file with the run's id, into which every kept record is logged
  again (the earlier files are superseded), so the file holds the whole history;
* online, when an earlier invocation logged online: W&B's rewind,
  ``wandb.init(resume_from=f"{id}?_step={n}")``, with ``n`` the number of leading kept records
  that an online invocation logged (the rows the server holds and the checkpoint covers). The
  server drops its rows from ``_step`` ``n`` on (those after the checkpoint, which the resumed
  training logs again), and the kept records from ``n`` on are logged again;
* online otherwise (a first start, or earlier invocations offline only):
  ``resume="allow"`` and every kept record logged again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["WandbStart", "wandb_start"]


@dataclass(frozen=True)
class WandbStart:
    """How one invocation's W&B run starts.

    Attributes:
        init: ``wandb.init`` arguments about the run's identity (``id``, ``resume`` or
            ``resume_from``), passed through ``WandbLogger``.
        replay_from: index of the first kept record to log again (all before it are in the run).
    """

    init: dict[str, Any] = field(default_factory=dict)
    replay_from: int = 0


def wandb_start(
    run_id: str, mode: str, kept: Sequence[Mapping[str, Any]], *, online_before: bool
) -> WandbStart:
    """The W&B start of an invocation (see the module docstring).

    Args:
        run_id: the run's W&B id.
        mode: ``online``, ``offline`` or ``disabled``.
        kept: the history records the checkpoints cover, in order (empty for a first start).
        online_before: an earlier invocation of the run logged online (a record of the history,
            before it was rewound, is tagged ``online``).

    Returns:
        The ``wandb.init`` arguments and the first record to log again.
    """
    if mode != "online" or not online_before:
        return WandbStart({"id": run_id, "resume": "allow"}, 0)
    on_server = 0
    for record in kept:
        if not record.get("online"):
            break
        on_server += 1
    # resume_from excludes resume (W&B raises when both are set); WandbLogger sets
    # resume="allow" unless told otherwise
    return WandbStart(
        {"id": run_id, "resume": None, "resume_from": f"{run_id}?_step={on_server}"}, on_server
    )
