"""Resume semantics (README "Resume"): what may change on resume is applied, the learning rate
included (it reaches the restored optimizer), and the NaN remedy the error suggests works; the
state files are right after a crash. Real training on the debug config (marked slow)."""

from __future__ import annotations

import json
import os

import pytest
import torch

from lightning_modules import TwoStageVAE
from pipeline import cli

pytestmark = pytest.mark.slow

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEBUG = os.path.join(REPO, "configs", "debug.yaml")
SUPPORT = "tests.helpers.callbacks"


def _argv(root, *extra: str) -> list[str]:
    return [
        "--config",
        DEBUG,
        "--run.root",
        str(root),
        "--run.name",
        "r",
        "--run.progress_bar",
        "none",
        "--run.logger",
        "none",
        "--geodesic_stats.enabled",
        "false",
        "--curvature_plots.enabled",
        "false",
        *extra,
    ]


def _callbacks(*specs: tuple[str, dict]) -> list[str]:
    items = [{"class_path": f"{SUPPORT}.{cls}", "init_args": args} for cls, args in specs]
    return ["--callbacks", json.dumps(items)]


def _learning_rates(folder) -> list[tuple[int, int, float]]:
    """(stage, epoch, lr) of every recorded training batch (one param group per stage)."""
    with open(os.path.join(folder, "learning_rates.txt")) as fh:
        rows = [line.split() for line in fh]
    os.remove(os.path.join(folder, "learning_rates.txt"))
    return [(int(s), int(e), float(lr)) for s, e, lr in rows]


def _read(path):
    with open(path) as fh:
        return json.load(fh)


def test_nan_remedy_lower_the_learning_rate_and_resume(tmp_path, capsys):
    """Crash after 2 stage-1 epochs; resume with lr=1e8 (the new rate takes effect: NaN, and the
    message says the checkpoint is there); resume again with a lower rate: the stage finishes
    from the same checkpoint with that rate."""
    run_dir = tmp_path / "r"
    rec = str(tmp_path / "rec")
    base = _argv(tmp_path, "--run.stages", "[1]", "--trainer.stage1.max_epochs", "4")
    crash = _callbacks(("CrashAtEpoch", {"stage": 1, "epoch": 2}))
    with pytest.raises(Exception, match="simulated crash"):
        cli.main(base + crash)
    last = run_dir / "checkpoints" / "stage1" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1  # epochs 1 and 2 (1-based) done
    capsys.readouterr()

    record = _callbacks(("RecordLearningRates", {"out_dir": rec}))
    assert cli.main(base + ["--model.lr", "1e8"] + record) == 3
    err = capsys.readouterr().err
    assert "non-finite training loss" in err and "stage 1 at epoch 3" in err
    assert f"The stage-1 checkpoint {last} (end of epoch 2) was written before" in err
    lrs = _learning_rates(rec)
    assert lrs and all(lr == 1e8 for _, _, lr in lrs) and lrs[0][1] == 2  # resumed at epoch 3

    assert cli.main(base + ["--model.lr", "1e-3"] + record) == 0
    lrs = _learning_rates(rec)
    assert {e for _, e, _ in lrs} == {2, 3} and all(lr == 1e-3 for _, _, lr in lrs)
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["epoch"] == 3
    assert [g["lr"] for g in ckpt["optimizer_states"][0]["param_groups"]] == [1e-3]
    model = TwoStageVAE.load_from_checkpoint(last)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert model.hparams.lr == 1e-3
    summary = _read(run_dir / "summary.json")
    assert summary["stage1"]["status"] == "done" and summary["stage1"]["epochs"] == 4


def test_nan_before_any_checkpoint_says_so(tmp_path, capsys):
    argv = _argv(tmp_path, "--run.stages", "[1]", "--model.lr", "1e8")
    assert cli.main(argv) == 3
    err = capsys.readouterr().err
    assert "No stage-1 checkpoint was written before the failure" in err
    assert "is intact" not in err and "(end of epoch" not in err and "resumes from" not in err


def test_stage2_resume_takes_the_new_stage2_lr(tmp_path, capsys):
    rec = str(tmp_path / "rec")
    base = _argv(tmp_path, "--trainer.stage1.max_epochs", "1", "--trainer.stage2.max_epochs", "3")
    crash = _callbacks(("CrashAtEpoch", {"stage": 2, "epoch": 1}))
    with pytest.raises(Exception, match="simulated crash"):
        cli.main(base + crash)
    record = _callbacks(("RecordLearningRates", {"out_dir": rec}))
    assert cli.main(base + ["--model.stage2_lr", "0.05"] + record) == 0
    lrs = _learning_rates(rec)
    assert {(s, e) for s, e, _ in lrs} == {(2, 1), (2, 2)}
    assert all(lr == 0.05 for _, _, lr in lrs)
    last = tmp_path / "r" / "checkpoints" / "stage2" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["hyper_parameters"]["stage2_lr"] == 0.05
    assert ckpt["hyper_parameters"]["num_centers"] == 8  # the structure is the checkpoint's


def test_state_files_after_a_crash(tmp_path, capsys):
    """wall_seconds counts the crashed attempt; a stale checkpoint temporary is removed."""
    run_dir = tmp_path / "r"
    base = _argv(tmp_path, "--run.stages", "[1]", "--trainer.stage1.max_epochs", "3")
    with pytest.raises(Exception, match="simulated crash"):
        cli.main(base + _callbacks(("CrashAtEpoch", {"stage": 1, "epoch": 2})))
    state = _read(run_dir / "run_state.json")
    first = state["invocations"][0]["wall_seconds"]
    assert first > 0  # recorded at the checkpoint writes, before the crash
    stale = run_dir / "checkpoints" / "stage1" / ".last.ckpt.k1ll3d.tmp"
    stale.write_bytes(b"half a checkpoint")
    capsys.readouterr()
    assert cli.main(base) == 0
    assert not stale.exists()
    assert f"removed {stale}" in capsys.readouterr().out
    summary = _read(run_dir / "summary.json")
    this = summary["wall_seconds_this_invocation"]
    assert summary["wall_seconds"] == pytest.approx(first + this)


def test_kill_after_the_last_checkpoint_keeps_the_stage_metrics(tmp_path):
    """A kill between the stage's final checkpoint and the state update: the rerun has nothing
    to train, and summary.json still holds the stage's final metrics (from the checkpoint)."""
    run_dir = tmp_path / "r"
    base = _argv(tmp_path, "--run.stages", "[1]", "--trainer.stage1.max_epochs", "2")
    assert cli.main(base) == 0
    done = _read(run_dir / "summary.json")["stage1"]["metrics"]
    assert "val/elbo" in done and "train/elbo" in done
    state = _read(run_dir / "run_state.json")
    state["stage1"] = {"status": "running", "checkpoint": state["stage1"]["checkpoint"]}
    with open(run_dir / "run_state.json", "w") as fh:
        json.dump(state, fh)
    os.remove(run_dir / "summary.json")
    assert cli.main(base) == 0
    again = _read(run_dir / "summary.json")["stage1"]
    assert again["status"] == "done"
    assert again["metrics"]["val/elbo"] == pytest.approx(done["val/elbo"])
    assert again["metrics"]["train/elbo"] == pytest.approx(done["train/elbo"])
