"""scripts/distance_matrix.py (:mod:`pipeline.distance_matrix_cli`): a real checkpoint, single
process and torchrun with 2 gloo ranks (the script by path)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

import geometry as G
from lightning_modules import TwoStageVAE
from pipeline import distance_matrix_cli as distance_matrix

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "distance_matrix.py")

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    """A stage-1 TwoStageVAE after a few optimizer steps on random images, saved by Lightning."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    model = TwoStageVAE(data_shape=(1, 8, 8), hidden_dims=[16, 8], num_centers=4)
    data = DataLoader(TensorDataset(torch.rand(64, 1, 8, 8)), batch_size=16)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, train_dataloaders=data)
    trainer.save_checkpoint(path)
    return str(path)


@pytest.fixture()
def codes(tmp_path) -> str:
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "codes.npy"
    np.save(path, torch.randn(90, 2, generator=g).numpy())
    return str(path)


def _argv(checkpoint: str, codes: str, out: str, *extra: str) -> list[str]:
    return ["--checkpoint", checkpoint, "--codes", codes, "--out", out, "--k", "8",
            "--block-size", "16", "--no-progress", *extra]  # fmt: skip


def test_cli_writes_the_library_result_and_resumes(checkpoint, codes, tmp_path, capsys) -> None:
    out = str(tmp_path / "d.npy")
    assert distance_matrix.main(_argv(checkpoint, codes, out)) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["n"] == 90 and info["computed"] == 6 and info["world_size"] == 1
    model = TwoStageVAE.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    z = torch.from_numpy(np.load(codes))
    with torch.no_grad():
        expected = G.geodesic_distances(model.embed, z, k=8).numpy().astype(np.float32)
    assert np.array_equal(G.open_distance_matrix(out), expected)
    assert distance_matrix.main(_argv(checkpoint, codes, out)) == 0  # finished: nothing redone
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["computed"] == 0


def test_cli_user_errors_exit_2_with_a_message(checkpoint, codes, tmp_path, capsys) -> None:
    out = str(tmp_path / "d.npy")
    wrong_d = str(tmp_path / "wrong.npy")
    np.save(wrong_d, np.zeros((10, 3), dtype=np.float32))
    assert distance_matrix.main(_argv(checkpoint, wrong_d, out)) == 2
    assert "has d = 3, the model's latent_dim is 2" in capsys.readouterr().err
    nan = str(tmp_path / "nan.npy")
    arr = np.load(codes)
    arr[5, 0] = np.nan
    np.save(nan, arr)
    assert distance_matrix.main(_argv(checkpoint, nan, out)) == 2
    assert "z contains non-finite values (in 1 of 90 rows)" in capsys.readouterr().err
    foreign = str(tmp_path / "foreign.npy")
    np.save(foreign, np.zeros(3))
    assert distance_matrix.main(_argv(checkpoint, codes, foreign)) == 2
    assert "is not a resumable distance-matrix run" in capsys.readouterr().err
    assert distance_matrix.main(_argv(checkpoint, codes, out, "--k", "1")) == 2
    assert "connected components" in capsys.readouterr().err
    assert not os.path.exists(out)


@pytest.mark.slow
def test_torchrun_two_gloo_ranks_equal_one_process(checkpoint, codes, tmp_path) -> None:
    single, sharded = str(tmp_path / "one.npy"), str(tmp_path / "two.npy")
    assert distance_matrix.main(_argv(checkpoint, codes, single)) == 0
    env = {**os.environ, "PYTHONPATH": REPO, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", SCRIPT, *_argv(checkpoint, codes, sharded), "--accelerator", "cpu"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    assert info["world_size"] == 2 and info["computed"] == 3  # rank 0's half of 6 blocks
    with open(single, "rb") as a, open(sharded, "rb") as b:
        assert a.read() == b.read()
