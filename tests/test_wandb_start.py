"""``pipeline.wandb_resume.wandb_start``: the ``wandb.init`` identity arguments of an
invocation and the history records it logs again, offline and online, first start and resume.

An online run cannot be started here (no network): what W&B's server does with ``resume_from``
is not tested, only which arguments the pipeline passes (README "W&B").
"""

from __future__ import annotations

import pytest
import wandb

from pipeline.wandb_resume import WandbStart, wandb_start


def _records(*online: bool) -> list[dict]:
    return [{"step": i, "metrics": {"x": float(i)}, "online": o} for i, o in enumerate(online)]


@pytest.mark.parametrize("mode", ["offline", "disabled"])
def test_offline_logs_every_kept_record_again_into_a_new_run_file(mode):
    for kept in ([], _records(True, True, False)):
        assert wandb_start("abc123", mode, kept, online_before=True) == WandbStart(
            {"id": "abc123", "resume": "allow"}, 0
        )


def test_online_first_start():
    assert wandb_start("abc123", "online", [], online_before=False) == WandbStart(
        {"id": "abc123", "resume": "allow"}, 0
    )


def test_online_after_offline_invocations_only_logs_the_history_again():
    kept = _records(False, False, False)
    start = wandb_start("abc123", "online", kept, online_before=False)
    assert start == WandbStart({"id": "abc123", "resume": "allow"}, 0)


def test_online_resume_rewinds_to_the_rows_the_checkpoint_covers():
    kept = _records(True, True, True, True)  # 4 rows on the server that the checkpoint covers
    start = wandb_start("abc123", "online", kept, online_before=True)
    assert start.init == {"id": "abc123", "resume": None, "resume_from": "abc123?_step=4"}
    assert start.replay_from == 4  # nothing to log again


def test_online_resume_logs_again_what_the_server_lacks():
    # rows 0-2 logged online; then an offline invocation; then the rebuilt epoch-end record
    kept = _records(True, True, True, False, False)
    start = wandb_start("abc123", "online", kept, online_before=True)
    assert start.init["resume_from"] == "abc123?_step=3" and start.replay_from == 3


def test_online_restart_of_a_stage_killed_before_its_first_checkpoint():
    # an online attempt logged rows, no checkpoint covers them: the run is rewound to its start
    start = wandb_start("abc123", "online", [], online_before=True)
    assert start == WandbStart({"id": "abc123", "resume": None, "resume_from": "abc123?_step=0"}, 0)


def test_the_arguments_are_accepted_by_wandb_settings():
    """W&B's own validation of the arguments (no run is started): ``resume_from`` parses as a
    run moment of the same id, and ``resume=None`` keeps it from clashing with ``resume``."""
    start = wandb_start("abc123", "online", _records(True, True), online_before=True)
    settings = wandb.Settings(
        run_id=start.init["id"], resume=start.init["resume"], resume_from=start.init["resume_from"]
    )
    assert (settings.resume_from.run, settings.resume_from.value) == ("abc123", 2)
    assert settings.resume_from.metric == "_step"
    with pytest.raises(ValueError, match="mutually exclusive"):
        wandb.Settings(run_id="abc123", resume="allow", resume_from=start.init["resume_from"])
