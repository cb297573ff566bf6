"""End-to-end runs of the training pipeline on small real data (marked slow).

In-process through the CLI's ``main`` and through :func:`pipeline.train` with Python objects:
resume, W&B offline, NaN handling, stage 2 from an external checkpoint; the real ``ddp``
launcher (2 processes) through ``scripts/train.py`` in a subprocess.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import pytest
import torch

from lightning_modules import TwoStageVAE
from pipeline import cli as train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow

DEBUG = os.path.join(REPO, "configs", "debug.yaml")
SUPPORT = "tests.helpers.callbacks"


def _argv(root, name: str, *extra: str, logger: str = "csv") -> list[str]:
    return [
        "--config",
        DEBUG,
        "--run.root",
        str(root),
        "--run.name",
        name,
        "--run.progress_bar",
        "none",
        "--run.logger",
        logger,
        *extra,
    ]


def _callbacks(*specs: tuple[str, dict]) -> list[str]:
    items = [{"class_path": f"{SUPPORT}.{cls}", "init_args": args} for cls, args in specs]
    return ["--callbacks", json.dumps(items)]


def _state(path: str) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


LENGTH = ["--trainer.stage1.max_epochs", "3", "--trainer.stage2.max_epochs", "3"]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> str:
    """An uninterrupted run (3 + 3 epochs) that the resumed runs must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    assert train.main(_argv(root, "ref", *LENGTH)) == 0
    return os.path.join(root, "ref")


def test_summary_and_checkpoints(reference_run):
    with open(os.path.join(reference_run, "summary.json")) as fh:
        summary = json.load(fh)
    for key in (
        "stage1",
        "stage2",
        "checkpoints",
        "wall_seconds",
        "callback_seconds",
        "wandb",
        "run_dir",
        "config",
    ):
        assert key in summary, key
    assert summary["stage1"]["status"] == summary["stage2"]["status"] == "done"
    assert summary["stage1"]["epochs"] == 3 and summary["stage2"]["epochs"] == 3
    assert "val/elbo" in summary["stage1"]["metrics"] and "val/elbo" in summary["stage2"]["metrics"]
    assert summary["wall_seconds"] > 0 and summary["callback_seconds"] > 0
    assert os.path.isfile(os.path.join(reference_run, "config.yaml"))
    assert os.path.isfile(os.path.join(reference_run, "figures", "reconstructions_stage2.png"))
    x = torch.rand(4, 1, 28, 28)
    for stage in (1, 2):
        path = summary["checkpoints"][f"stage{stage}"]
        assert path == os.path.join(reference_run, "checkpoints", f"stage{stage}", "last.ckpt")
        model = TwoStageVAE.load_from_checkpoint(path)
        assert model.stage == stage
        mu, sigma = model.decode(model.encode(x)[0])
        assert mu.shape == sigma.shape == x.shape
        assert torch.isfinite(mu).all() and (sigma > 0).all()
    assert TwoStageVAE.load_from_checkpoint(summary["checkpoints"]["stage2"]).variance_ready
    # both geometry callbacks ran by default, in both stages
    for stage in (1, 2):
        metrics = summary[f"stage{stage}"]["metrics"]
        assert 0 < metrics["geo/line_ratio_median"] <= 1 + 1e-6, metrics
        assert metrics["geo/converged_fraction"] > 0
        figures = os.listdir(os.path.join(reference_run, "figures"))
        for kind in ("log_magnification", "geodesics", "generator_variance", "interpolations"):
            assert f"{kind}_stage{stage}_epoch0003.png" in figures, (kind, figures)


def test_train_from_python_objects_trains_what_the_cli_trains(tmp_path, reference_run):
    """pipeline.train with settings objects and a datamodule instance, in-process: the same
    weights as the CLI's reference run of the same settings."""
    import yaml

    from datamodules import VAEDataModule
    from pipeline import RunSettings, StageSettings, TrainerSettings
    from pipeline import train as train_fn

    with open(DEBUG) as fh:
        cfg = yaml.safe_load(fh)
    summary = train_fn(
        model=cfg["model"],
        data=VAEDataModule(**cfg["data"]),
        trainer=TrainerSettings(
            accelerator="cpu",
            log_every_n_steps=1,
            stage1=StageSettings(max_epochs=3),
            stage2=StageSettings(max_epochs=3),
        ),
        run=RunSettings(
            root=str(tmp_path), name="python", logger="csv", progress_bar="none",
            reconstructions=cfg["run"]["reconstructions"], checkpoint_every_n_seconds=0,
        ),
        geodesic_stats=cfg["geodesic_stats"],
        curvature_plots=cfg["curvature_plots"],
    )  # fmt: skip
    assert summary["stage1"]["status"] == summary["stage2"]["status"] == "done"
    assert 0 < summary["stage2"]["metrics"]["geo/line_ratio_median"] <= 1 + 1e-6
    for stage in (1, 2):
        ckpt = os.path.join("checkpoints", f"stage{stage}", "last.ckpt")
        _assert_same_state(
            _state(summary["checkpoints"][f"stage{stage}"]),
            _state(os.path.join(reference_run, ckpt)),
        )


def test_geometry_callbacks_change_nothing_the_training_sees(tmp_path, reference_run):
    off = ["--geodesic_stats.enabled", "false", "--curvature_plots.enabled", "false"]
    assert train.main(_argv(tmp_path, "plain", *LENGTH, *off)) == 0
    for stage in (1, 2):
        ckpt = os.path.join("checkpoints", f"stage{stage}", "last.ckpt")
        _assert_same_state(
            _state(os.path.join(tmp_path, "plain", ckpt)), _state(os.path.join(reference_run, ckpt))
        )
    with open(os.path.join(tmp_path, "plain", "summary.json")) as fh:
        summary = json.load(fh)
    assert "geo/line_ratio_median" not in summary["stage1"]["metrics"]
    assert not any(
        f.startswith("log_magnification")
        for f in os.listdir(os.path.join(tmp_path, "plain", "figures"))
    )


def test_rerun_of_a_finished_run_trains_nothing(reference_run, capsys):
    before = os.path.getmtime(os.path.join(reference_run, "checkpoints", "stage2", "last.ckpt"))
    root, name = os.path.split(reference_run)
    assert train.main(_argv(root, name, *LENGTH)) == 0
    assert "already done" in capsys.readouterr().out
    after = os.path.getmtime(os.path.join(reference_run, "checkpoints", "stage2", "last.ckpt"))
    assert before == after


def test_elbo_improves_over_a_few_epochs(tmp_path):
    argv = _argv(
        tmp_path,
        "elbo",
        "--data.max_per_class",
        "60",
        "--trainer.stage1.max_epochs",
        "5",
        "--run.stages",
        "[1]",
        "--run.reconstructions",
        "0",
    )
    assert train.main(argv) == 0
    with open(os.path.join(tmp_path, "elbo", "csv", "metrics.csv")) as fh:
        all_rows = list(csv.DictReader(fh))
    rows = [r for r in all_rows if r.get("val/elbo")]
    elbos = [float(r["val/elbo"]) for r in rows]
    # per-step values on the logging steps (debug config: every step), epoch means once an epoch
    assert sum(bool(r.get("train/elbo_step")) for r in all_rows) >= 5
    assert sum(bool(r.get("train/elbo")) for r in all_rows) == 5
    assert len(elbos) == 5
    assert elbos[-1] > elbos[0] + 100, elbos  # nats per image


@pytest.mark.parametrize("stage", [1, 2])
def test_resume_after_crash_matches_uninterrupted_run(
    tmp_path, reference_run, stage, wandb_offline_env
):
    argv = _argv(tmp_path, "crashed", *LENGTH, logger="wandb")
    with pytest.raises(Exception, match="simulated crash"):
        train.main(argv + _callbacks(("CrashAtEpoch", {"stage": stage, "epoch": 2})))
    run_dir = os.path.join(tmp_path, "crashed")
    with open(os.path.join(run_dir, "run_state.json")) as fh:
        state = json.load(fh)
    wandb_id = state["wandb_id"]
    assert state[f"stage{stage}"]["status"] == "running"
    last = os.path.join(run_dir, "checkpoints", f"stage{stage}", "last.ckpt")
    assert torch.load(last, weights_only=True)["epoch"] == 1  # epochs 0 and 1 were completed

    assert train.main(argv) == 0  # the same command resumes
    with open(os.path.join(run_dir, "run_state.json")) as fh:
        state = json.load(fh)
    assert state["wandb_id"] == wandb_id
    assert state["stage1"]["status"] == state["stage2"]["status"] == "done"
    for s in (1, 2):
        ckpt = torch.load(
            os.path.join(run_dir, "checkpoints", f"stage{s}", "last.ckpt"), weights_only=True
        )
        assert ckpt["callbacks"]["RunInfo"]["wandb_id"] == wandb_id
        ref = _state(os.path.join(reference_run, "checkpoints", f"stage{s}", "last.ckpt"))
        _assert_same_state(ckpt["state_dict"], ref)
    offline_runs = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*"))
    # W&B names a folder offline-run-<time>-<id>, adding "-<n>" when two starts share a second
    assert offline_runs and all(re.search(rf"-{wandb_id}(-\d+)?$", r) for r in offline_runs)


def test_offline_wandb_run_logs_images(tmp_path, wandb_offline_env, capsys):
    argv = _argv(
        tmp_path,
        "wb",
        "--trainer.stage1.max_epochs",
        "1",
        "--trainer.stage2.max_epochs",
        "1",
        logger="wandb",
    )
    assert train.main(argv) == 0
    assert "wandb sync" in capsys.readouterr().out
    media = glob.glob(
        os.path.join(
            tmp_path, "wb", "wandb", "offline-run-*", "files", "media", "images", "**", "*.png"
        ),
        recursive=True,
    )
    assert any("stage1" in m for m in media) and any("stage2" in m for m in media), media
    from PIL import Image

    recon = [m for m in media if "reconstructions" in m]
    assert recon, media
    for path in recon:  # real pixels, not a float grid cast to 0/1 (a black image)
        assert max(Image.open(path).convert("L").getextrema()) > 128, path


def test_nan_loss_stops_with_message_and_last_checkpoint_stays_usable(tmp_path, capsys):
    argv = _argv(tmp_path, "nan", "--trainer.stage1.max_epochs", "3")
    argv += _callbacks(("NaNWeightAtEpoch", {"stage": 1, "epoch": 1}))
    assert train.main(argv) == 3
    err = capsys.readouterr().err
    assert "non-finite training loss" in err and "stage 1" in err and "global step" in err
    last = os.path.join(tmp_path, "nan", "checkpoints", "stage1", "last.ckpt")
    assert torch.load(last, weights_only=True)["epoch"] == 0
    model = TwoStageVAE.load_from_checkpoint(last)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(model.loss_terms(torch.rand(8, 1, 28, 28))["elbo"])


def test_stage2_from_an_external_stage1_checkpoint(tmp_path, reference_run):
    stage1 = os.path.join(reference_run, "checkpoints", "stage1", "last.ckpt")
    argv = _argv(
        tmp_path,
        "refit",
        "--run.stage1_checkpoint",
        stage1,
        "--model.num_centers",
        "4",
        "--trainer.stage2.max_epochs",
        "1",
    )
    assert train.main(argv) == 0
    with open(os.path.join(tmp_path, "refit", "summary.json")) as fh:
        summary = json.load(fh)
    assert summary["stage1"]["status"] == "external"
    assert summary["checkpoints"]["stage1"] == stage1
    model = TwoStageVAE.load_from_checkpoint(summary["checkpoints"]["stage2"])
    assert model.stage == 2 and model.hparams.num_centers == 4
    ref = _state(stage1)
    for key, value in model.state_dict().items():
        if key.startswith(("encoder.", "mean_decoder.")):
            assert torch.equal(value, ref[key]), key


@pytest.mark.timeout(600)
def test_ddp_two_processes_both_stages(tmp_path):
    dump = tmp_path / "dump"
    cmd = [
        sys.executable,
        os.path.join(REPO, "scripts", "train.py"),
        *_argv(tmp_path, "ddp", logger="none"),
        "--config",
        os.path.join(REPO, "configs", "ddp.yaml"),
        "--run.name",
        "ddp",
        "--run.progress_bar",
        "none",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "2",
        "--trainer.ddp_timeout",
        "120",
        # a time-gated checkpoint: rank 0's decision is broadcast at every epoch end, so the
        # ranks must agree both when a write is skipped and when it is due (the last epoch)
        "--run.checkpoint_every_n_seconds",
        "1",
        *_callbacks(("DumpRankState", {"out_dir": str(dump)})),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "LOCAL_RANK"))}
    # the project is installed; the test-only callbacks under tests/helpers/ are not
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=480, cwd=str(tmp_path), env=env
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for stage in (1, 2):
        r0 = torch.load(dump / f"stage{stage}_rank0.pt", weights_only=True)
        r1 = torch.load(dump / f"stage{stage}_rank1.pt", weights_only=True)
        _assert_same_state(r0, r1)
        _assert_same_state(
            r0, _state(str(tmp_path / "ddp" / "checkpoints" / f"stage{stage}" / "last.ckpt"))
        )
    r0 = torch.load(dump / "stage2_rank0.pt", weights_only=True)
    assert bool(r0["variance_net.initialized"]) and r0["variance_net.centers"].abs().sum() > 0
    with open(tmp_path / "ddp" / "summary.json") as fh:
        assert json.load(fh)["stage2"]["status"] == "done"


def test_benchmark_scripts_run_end_to_end(tmp_path, reference_run, capsys, monkeypatch):
    """Smoke runs of the benchmarks on tiny settings (they time nothing here; they must work)."""
    from benchmarks import geodesics_cli, training_cli

    assert (
        training_cli.main(
            [
                "--epochs",
                "3",
                "--repeats",
                "1",
                "--max_per_class",
                "10",
                "--variants",
                "lean",
                "quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    row = r"\s+2\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+[\d.]+-[\d.]+\s+[\d.]+$"  # 2 pairs
    for stage in (1, 2):
        for variant in ("lean", "quiet"):
            assert re.search(rf"^\s+{stage}\s+{variant}{row}", out, re.M), out
    report = tmp_path / "geo.json"
    ckpt = os.path.join(reference_run, "checkpoints", "stage2", "last.ckpt")
    scratch = str(tmp_path / "scratch")
    os.makedirs(scratch)
    monkeypatch.setattr(tempfile, "tempdir", scratch)  # where the benchmark's scratch goes
    assert (
        geodesics_cli.main(
            [
                "--checkpoint",
                ckpt,
                "--pairs",
                "6",
                "--points",
                "60",
                "--ref-pairs",
                "8",
                "--no-stochman",
                "--no-adam",
                "--repeats",
                "1",
                "--json",
                str(report),
            ]
        )
        == 0
    )
    result = json.loads(report.read_text())
    assert result["matrix"]["points"] == 60 and result["matrix"]["finite"]
    assert 0 <= result["matrix"]["median_rel_error"] < 1
    assert os.listdir(scratch) == []  # its scratch folder (matrix child's files) is removed


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_gpu_benchmark_without_cuda_is_a_clear_error(capsys):
    from benchmarks import training_cli

    with pytest.raises(SystemExit) as info:
        training_cli.main(["--accelerator", "gpu"])
    assert info.value.code == 2
    assert "--accelerator gpu: no CUDA device is available here" in capsys.readouterr().err
