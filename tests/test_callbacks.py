"""Tests of the geometry callbacks (GeodesicDistanceStats, CurvaturePlots) and their statistics.

Unit tests use analytic embeddings (linear decoder: every geodesic is the straight line; a
Gaussian bump: straight lines over the bump are longer than the geodesics around it). The ``slow``
tests train a tiny TwoStageVAE on a generated TensorDataset: offline W&B logging, bit-identical
parameters with and without the callbacks, stop/resume, and 2-process CPU DDP (``ddp_spawn``).
"""

from __future__ import annotations

import glob
import json
import math
import os
import random
from typing import Any

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from scipy.stats import spearmanr
from torch.utils.data import DataLoader, TensorDataset

from callbacks import CurvaturePlots, GeodesicDistanceStats, GeodesicResultStore
from callbacks.model_context import geometry_mode
from callbacks.pair_statistics import (
    EPOCH_END_SOLVER,
    PairStatistics,
    pair_statistics,
    summarize_pairs,
    summary,
)
from callbacks.validation_data import MissingValidationDataError, draw_pairs
from lightning_modules.two_stage_vae import TwoStageVAE
from tests.helpers.wandb_records import history_keys, wait_for_exit_record

SOLVER = {"num_nodes": 16, "max_iterations": 200, "tolerance": 1e-7}


# ---------------------------------------------------------------------------- helpers
class TinyDM(pl.LightningDataModule):
    """Three classes of 8x8 images in [0, 1]; ``val_dataset`` of (x, y) pairs like VAEDataModule."""

    def __init__(self, n_train: int = 96, n_val: int = 48, seed: int = 0, labels: bool = True):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        n = n_train + n_val
        y = torch.arange(n) % 3
        x = (torch.rand(n, 1, 8, 8, generator=g) * 0.4 + 0.3 * y[:, None, None, None]).clamp(0, 1)
        tensors = (x, y) if labels else (x,)
        self.train_dataset = TensorDataset(*(t[:n_train] for t in tensors))
        self.val_dataset = TensorDataset(*(t[n_train:] for t in tensors))
        self.class_names = ["zero", "one", "two"]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_dataset, batch_size=32, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_dataset, batch_size=48)

    def full_train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_dataset, batch_size=96)


def tiny_model(stage: int = 1, latent_dim: int = 2, dm: TinyDM | None = None) -> TwoStageVAE:
    """A small VAE; for stage 2 the RBF network is placed on the codes of ``dm``'s training set."""
    model = TwoStageVAE(
        data_shape=(1, 8, 8),
        latent_dim=latent_dim,
        hidden_dims=(16, 8),
        num_centers=6,
        kmeans_restarts=1,
        stage=1,
    )
    if stage == 2:
        dm = dm or TinyDM()
        model.set_stage(2)
        model.init_variance_net(model.encode_dataset(dm.full_train_dataloader()))
    return model


def fast_callbacks(every: int = 1, **plot_kwargs: Any) -> list[pl.Callback]:
    """A GeodesicDistanceStats and a CurvaturePlots sharing one GeodesicResultStore."""
    store = GeodesicResultStore()
    return [
        GeodesicDistanceStats(
            every_n_epochs=every, num_pairs=8, num_nodes=8, max_iterations=10, results=store
        ),
        CurvaturePlots(
            every_n_epochs=every,
            grid_resolution=12,
            num_images=4,
            max_codes=48,
            num_nodes=8,
            max_iterations=10,
            geodesics=store,
            **plot_kwargs,
        ),
    ]


def linear_embed(A: torch.Tensor, sigma: float = 0.2):
    def embed(z: torch.Tensor) -> torch.Tensor:
        mu = z @ A.T
        return torch.cat([mu, torch.full_like(mu, sigma)], dim=1)

    return embed


def bump_embed(height: float = 3.0, width: float = 0.3):
    """The graph of a Gaussian bump over the plane: z -> (z, h exp(-|z|^2 / (2 w^2)))."""

    def embed(z: torch.Tensor) -> torch.Tensor:
        bump = height * torch.exp(-(z**2).sum(1, keepdim=True) / (2 * width**2))
        return torch.cat([z, bump], dim=1)

    return embed


# ---------------------------------------------------------------------------- statistics
def test_linear_decoder_every_ratio_is_one_and_distances_are_known():
    torch.manual_seed(1)
    A = torch.randn(5, 2, dtype=torch.float64)
    z0 = torch.randn(10, 2, dtype=torch.float64)
    z1 = torch.randn(10, 2, dtype=torch.float64)
    with torch.enable_grad():
        stats = pair_statistics(linear_embed(A), lambda z: z @ A.T, z0, z1, **SOLVER)
    expected = ((z1 - z0) @ A.T).norm(dim=1)
    torch.testing.assert_close(stats.geodesic, expected, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(stats.line, expected, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(stats.euclidean, (z1 - z0).norm(dim=1))
    torch.testing.assert_close(stats.data, expected)
    r = stats.ratios()
    np.testing.assert_allclose(r["line_ratio"], 1.0, atol=1e-6)
    np.testing.assert_allclose(r["data_ratio"], 1.0, atol=1e-6)
    np.testing.assert_allclose(
        r["euclid_ratio"], (expected / (z1 - z0).norm(dim=1)).numpy(), rtol=1e-6
    )
    m = summarize_pairs(stats)
    for q in ("mean", "median", "q10", "q90"):
        assert m[f"line_ratio_{q}"] == pytest.approx(1.0, abs=1e-6)
        assert m[f"data_ratio_{q}"] == pytest.approx(1.0, abs=1e-6)
    assert m["converged_fraction"] == 1.0
    assert "class_stretch" not in m
    # a scaled isometry: geodesic / Euclidean ratio is exactly the scale
    stats2 = pair_statistics(
        linear_embed(3.0 * torch.eye(2, dtype=torch.float64)), lambda z: 3.0 * z, z0, z1, **SOLVER
    )
    assert summarize_pairs(stats2)["euclid_ratio_mean"] == pytest.approx(3.0, rel=1e-6)
    assert summarize_pairs(stats2)["spearman_geodesic_euclid"] == pytest.approx(1.0)


def test_bump_in_the_metric_gives_ratio_below_one():
    z0 = torch.tensor([[-1.0, 0.0], [0.0, -1.0], [2.0, 2.0]], dtype=torch.float64)
    z1 = torch.tensor([[1.0, 0.05], [0.05, 1.0], [3.0, 2.5]], dtype=torch.float64)
    with torch.enable_grad():
        stats = pair_statistics(bump_embed(), lambda z: z, z0, z1, num_nodes=24, max_iterations=300)
    r = stats.ratios()["line_ratio"]
    assert r[0] < 0.9 and r[1] < 0.9  # over the bump: the geodesic goes around it
    assert r[2] == pytest.approx(1.0, abs=1e-4)  # far from the bump the metric is flat
    assert (stats.geodesic <= stats.line * (1 + 1e-9)).all()
    # the straight line climbs the bump and descends: longer than sqrt(2^2 + (2 h)^2)
    assert float(stats.line[0]) > math.sqrt(4.0 + 36.0) * 0.99


def test_summary_statistics_by_hand():
    geo = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=torch.float64)
    stats = PairStatistics(
        geodesic=geo,
        line=torch.tensor([1.0, 4.0, 3.0, 8.0, 10.0], dtype=torch.float64),
        euclidean=torch.tensor([1.0, 1.0, 0.0, 2.0, 1.0], dtype=torch.float64),  # one zero
        data=torch.tensor([2.0, 2.0, 2.0, 2.0, 2.0], dtype=torch.float64),
        converged=torch.tensor([True, True, False, True, False]),
        iterations=torch.tensor([1, 2, 3, 4, 5]),
        curves=torch.zeros(5, 2, 2),
        length_errors=torch.tensor([0.0, 0.002, 0.0, 0.001, 0.001], dtype=torch.float64),
        length_rtol=torch.full((5,), 1e-3, dtype=torch.float64),
    )
    labels0 = torch.tensor([0, 0, 1, 1, 2])
    labels1 = torch.tensor([0, 1, 1, 2, 2])
    m = summarize_pairs(stats, labels0, labels1)
    line = np.array([1.0, 0.5, 1.0, 0.5, 0.5])
    euclid = np.array([1.0, 2.0, 2.0, 5.0])  # the pair with zero latent distance is left out
    assert m["line_ratio_mean"] == pytest.approx(line.mean())
    assert m["line_ratio_median"] == pytest.approx(0.5)
    assert m["line_ratio_q10"] == pytest.approx(np.quantile(line, 0.1))
    assert m["line_ratio_q90"] == pytest.approx(np.quantile(line, 0.9))
    assert m["euclid_ratio_mean"] == pytest.approx(euclid.mean())
    assert m["data_ratio_median"] == pytest.approx(1.5)
    assert m["converged_fraction"] == pytest.approx(0.6)
    assert m["mean_geodesic_length"] == pytest.approx(3.0)
    assert m["mean_line_length"] == pytest.approx(5.2)
    assert m["length_rtol"] == pytest.approx(1e-3)
    assert m["length_error_max"] == pytest.approx(0.001)  # 0.002 / 2.0
    assert m["spearman_geodesic_euclid"] == pytest.approx(
        spearmanr(geo.numpy(), stats.euclidean.numpy()).statistic
    )
    # within: pairs 0, 2, 4 (euclid ratios 1, undefined, 5); between: pairs 1, 3 (2, 2)
    assert m["within_class_pairs"] == 3 and m["between_class_pairs"] == 2
    assert m["within_class_euclid_ratio_mean"] == pytest.approx(3.0)
    assert m["between_class_euclid_ratio_mean"] == pytest.approx(2.0)
    assert m["class_stretch"] == pytest.approx(2.0 / 3.0)
    assert all(math.isnan(v) for v in summary(np.array([np.nan, np.inf])).values())


def test_draw_pairs_is_seeded_stratified_and_leaves_global_rng_alone():
    labels = torch.arange(60) % 3
    state = torch.get_rng_state()
    pairs = draw_pairs(60, 20, labels, 0.5, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    assert pairs == draw_pairs(60, 20, labels, 0.5, seed=3)
    assert pairs != draw_pairs(60, 20, labels, 0.5, seed=4)
    same = [int(labels[i]) == int(labels[j]) for i, j in pairs]
    assert sum(same) == 10 and all(i != j for i, j in pairs)
    unlabeled = draw_pairs(5, 30, None, 0.5, seed=0)
    assert len(unlabeled) == 30 and all(i != j and 0 <= i < 5 and 0 <= j < 5 for i, j in unlabeled)


def test_geometry_mode_restores_modes_rng_and_leaves_no_gradients():
    model = tiny_model()
    model.train()
    model.encoder.eval()  # a deliberately mixed state must come back as it was
    modes = {name: m.training for name, m in model.named_modules()}
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    expected = (torch.rand(3), np.random.rand(), random.random())
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    with torch.no_grad(), geometry_mode(model):
        assert torch.is_grad_enabled() and not model.training
        torch.rand(7), np.random.rand(4), random.random()  # consumed inside: forgotten afterwards
        z = torch.randn(4, 2, requires_grad=True)
        (g,) = torch.autograd.grad(model.embed(z).sum(), z)
        assert g.shape == z.shape
    assert {name: m.training for name, m in model.named_modules()} == modes
    got = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(got[0], expected[0]) and got[1:] == expected[1:]
    assert all(p.grad is None for p in model.parameters())


def test_settings_are_validated():
    with pytest.raises(ValueError, match="num_pairs"):
        GeodesicDistanceStats(num_pairs=0)
    with pytest.raises(ValueError, match="every_n_epochs"):
        GeodesicDistanceStats(every_n_epochs=-1)
    with pytest.raises(ValueError, match="grid_resolution"):
        CurvaturePlots(grid_resolution=1)
    with pytest.raises(ValueError, match="optimizer='LM' must be 'lm' or 'adam'"):
        GeodesicDistanceStats(optimizer="LM")
    with pytest.raises(ValueError, match=r"unknown keys \['n_node'\]; accepted: .*'revert_rtol'"):
        GeodesicDistanceStats(geodesic_options={"n_node": 8})
    # one route per setting: the solver settings with an argument of their own are refused here
    with pytest.raises(ValueError, match=r"sets \['num_nodes'\]: use .* \['num_nodes'\] instead"):
        GeodesicDistanceStats(geodesic_options={"num_nodes": 8})
    with pytest.raises(ValueError, match="encode_batch_size=0"):
        GeodesicDistanceStats(encode_batch_size=0)
    with pytest.raises(ValueError, match="encode_batch_size=0"):
        CurvaturePlots(encode_batch_size=0)
    GeodesicDistanceStats(geodesic_options={"sub_steps": 3, "revert_rtol": 1e-2})
    with pytest.raises(ValueError, match="go nowhere"):
        CurvaturePlots(save_png=False, log_wandb=False)


def test_without_validation_dataset_the_error_is_clear(make_trainer):
    data = TensorDataset(torch.rand(32, 1, 8, 8))
    trainer = make_trainer(max_epochs=1, callbacks=[GeodesicDistanceStats()])
    with pytest.raises(MissingValidationDataError, match="val_dataset"):
        trainer.fit(tiny_model(), train_dataloaders=DataLoader(data, batch_size=16))


# ---------------------------------------------------------------------------- training runs
def _param_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.slow
def test_callbacks_change_nothing_the_training_sees(make_trainer, tmp_path):
    """Same seed, with and without the callbacks: bit-identical parameters, in both stages."""
    results = []
    for with_callbacks in (False, True):
        finals = []
        for stage in (1, 2):
            pl.seed_everything(0)
            model = tiny_model(stage=stage)
            cbs = fast_callbacks(output_dir=str(tmp_path / "figs")) if with_callbacks else []
            trainer = make_trainer(max_epochs=2, callbacks=cbs, limit_train_batches=2)
            trainer.fit(model, datamodule=TinyDM())
            finals.append(_param_snapshot(model))
            if with_callbacks:
                assert cbs[0].history == [(stage, 0), (stage, 1)]
                assert model.training  # train mode restored
        results.append(finals)
    for stage_idx in range(2):
        a, b = results[0][stage_idx], results[1][stage_idx]
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"stage {stage_idx + 1}: {k} differs"


@pytest.mark.slow
def test_no_gradients_left_on_parameters(make_trainer, tmp_path):
    class GradProbe(pl.Callback):
        """Zero-length gradient check right after the geometry callbacks ran."""

        def __init__(self) -> None:
            self.checked = 0

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            assert all(p.grad is None for p in pl_module.parameters())
            self.checked += 1

    model = tiny_model(stage=2)
    probe = GradProbe()
    # optimizer.zero_grad(set_to_none=True) leaves None before the epoch-end hooks
    trainer = make_trainer(
        max_epochs=1,
        limit_train_batches=2,
        callbacks=[*fast_callbacks(output_dir=str(tmp_path)), probe],
    )
    trainer.fit(model, datamodule=TinyDM())
    assert probe.checked == 1


@pytest.mark.slow
def test_training_run_with_offline_wandb(make_trainer, wandb_offline_env, tmp_path):
    from pytorch_lightning.loggers import WandbLogger

    save_dir = str(tmp_path / "wb")
    os.makedirs(save_dir)
    logger = WandbLogger(offline=True, save_dir=save_dir, project="cb-test")
    dm = TinyDM()
    model = tiny_model(stage=2, dm=dm)
    stats, plots = fast_callbacks()
    trainer = make_trainer(
        max_epochs=2,
        limit_train_batches=2,
        logger=logger,
        callbacks=[stats, plots],  # the statistics first: the plots draw their geodesics
        log_every_n_steps=1,
    )
    trainer.fit(model, datamodule=dm)
    logger.experiment.finish()
    # scalars
    keys = {
        "geo/line_ratio_mean",
        "geo/line_ratio_median",
        "geo/line_ratio_q10",
        "geo/line_ratio_q90",
        "geo/euclid_ratio_mean",
        "geo/data_ratio_mean",
        "geo/spearman_geodesic_euclid",
        "geo/converged_fraction",
        "geo/seconds",
        "geo/within_class_euclid_ratio_mean",
        "geo/between_class_euclid_ratio_mean",
        "geo/class_stretch",
    }
    assert keys <= set(trainer.callback_metrics), sorted(keys - set(trainer.callback_metrics))
    q90 = float(trainer.callback_metrics["geo/line_ratio_q90"])
    assert q90 <= 1.0 + 1e-6, q90
    # media in the offline run folder: 4 images per epoch, the pair table, the histogram
    run_dirs = glob.glob(os.path.join(save_dir, "wandb", "offline-run-*"))
    assert len(run_dirs) == 1, os.listdir(os.path.join(save_dir, "wandb"))
    media = os.path.join(run_dirs[0], "files", "media")
    # the keys are in the history records of the offline run file (media and tables as nested
    # keys such as "geo/pairs/_type"), read once the writer has finished the file
    (record,) = glob.glob(os.path.join(run_dirs[0], "run-*.wandb"))
    logged = history_keys(wait_for_exit_record(record))
    for key in (
        "geo/line_ratio_mean",
        "geo/class_stretch",
        "geo/pairs",
        "geo/line_ratio_hist",
        "curvature/geodesics",
        "curvature/generator_variance",
    ):
        assert any(k == key or k.startswith(key + "/") for k in logged), (key, sorted(logged))
    pngs = glob.glob(os.path.join(media, "images", "**", "*.png"), recursive=True)
    names = {
        os.path.basename(os.path.dirname(p)) + "/" + os.path.basename(p).split("_")[0] for p in pngs
    }
    assert len(pngs) == 8, sorted(pngs)
    assert {
        "curvature/log",
        "curvature/geodesics",
        "curvature/generator",
        "curvature/interpolations",
    } <= names
    assert glob.glob(os.path.join(media, "table", "geo", "pairs*.table.json"))
    # PNG files in the run folder (trainer.default_root_dir/figures)
    figs = sorted(os.listdir(os.path.join(trainer.default_root_dir, "figures")))
    assert "geodesics_stage2_epoch0002.png" in figs and len(figs) == 8
    # the plots drew the stats callback's geodesics, handed over through the shared store
    assert plots.last_geodesic_source == "GeodesicDistanceStats pairs"
    assert plots.geodesics is not None and plots.geodesics.latest is stats.last_result
    assert stats.total_seconds > 0 and plots.total_seconds > 0

    # the same numbers by hand, from the checkpointed pairs and the public geometry API
    import geometry

    x = torch.stack([dm.val_dataset[i][0] for p in stats.pair_indices for i in p])
    y = torch.stack([dm.val_dataset[i][1] for p in stats.pair_indices for i in p])
    model.eval()
    with torch.no_grad():
        z = model.encode(x)[0]
    z0, z1 = z[0::2], z[1::2]
    with torch.enable_grad():
        res = geometry.connecting_geodesics(
            model.embed,
            z0,
            z1,
            num_nodes=8,  # geometry's name of the callbacks' num_nodes
            max_iterations=10,
            tolerance=stats.tolerance,
            init="line",
            **EPOCH_END_SOLVER,  # the callbacks' cost settings
        )
    with torch.no_grad():
        data = (model.decode(z1)[0] - model.decode(z0)[0]).flatten(1).norm(dim=1)
    geo_len = res.lengths.double()
    line_ratio = (geo_len / res.initial_lengths.double()).numpy()
    euclid_ratio = (geo_len / (z1 - z0).norm(dim=1).double()).numpy()
    assert stats.last_result is not None
    got = stats.last_result.metrics
    assert got["geo/line_ratio_mean"] == pytest.approx(line_ratio.mean(), rel=1e-5)
    assert got["geo/line_ratio_q10"] == pytest.approx(np.quantile(line_ratio, 0.1), rel=1e-5)
    assert got["geo/euclid_ratio_median"] == pytest.approx(np.median(euclid_ratio), rel=1e-5)
    assert got["geo/data_ratio_mean"] == pytest.approx(
        (geo_len / data.double()).mean().item(), rel=1e-5
    )
    assert got["geo/spearman_geodesic_euclid"] == pytest.approx(
        spearmanr(geo_len.numpy(), (z1 - z0).norm(dim=1).numpy()).statistic, abs=1e-6
    )
    within = (y[0::2] == y[1::2]).numpy()
    assert got["geo/within_class_euclid_ratio_mean"] == pytest.approx(
        euclid_ratio[within].mean(), rel=1e-5
    )
    assert float(trainer.callback_metrics["geo/line_ratio_mean"]) == pytest.approx(
        got["geo/line_ratio_mean"]
    )


@pytest.mark.slow
def test_resume_logs_each_epoch_once_with_the_same_pairs(make_trainer, tmp_path):
    from pytorch_lightning.callbacks import ModelCheckpoint

    ckpt_dir = str(tmp_path / "ckpt")

    def run(max_epochs: int, ckpt_path: str | None) -> tuple[list[pl.Callback], pl.Trainer]:
        cbs = fast_callbacks(output_dir=str(tmp_path / "figs"))
        checkpoint = ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_epochs=1)
        trainer = make_trainer(
            max_epochs=max_epochs,
            limit_train_batches=2,
            enable_checkpointing=True,
            callbacks=[*cbs, checkpoint],
        )
        pl.seed_everything(0)
        trainer.fit(tiny_model(), datamodule=TinyDM(), ckpt_path=ckpt_path)
        return cbs, trainer

    first, _ = run(2, None)
    second, _ = run(4, os.path.join(ckpt_dir, "last.ckpt"))
    for a, b in zip(first, second):
        assert a.history == [(1, 0), (1, 1)]
        assert b.history == [(1, 2), (1, 3)]  # nothing logged twice, nothing skipped
    assert first[0].pair_indices == second[0].pair_indices
    state = torch.load(os.path.join(ckpt_dir, "last.ckpt"), weights_only=True)["callbacks"]
    stats_state = state[first[0].state_key]
    assert stats_state["pair_indices"] == first[0].pair_indices
    assert stats_state["last_epoch_by_stage"] == {1: 3}
    figs = os.listdir(tmp_path / "figs")
    assert sorted(f for f in figs if f.startswith("geodesics")) == [
        f"geodesics_stage1_epoch{e:04d}.png" for e in range(1, 5)
    ]


@pytest.mark.slow
def test_schedule_every_n_epochs_and_end_of_stage(make_trainer, tmp_path):
    stats = GeodesicDistanceStats(every_n_epochs=2, num_pairs=4, num_nodes=6, max_iterations=5)
    trainer = make_trainer(
        max_epochs=5, limit_train_batches=1, limit_val_batches=0, callbacks=[stats]
    )
    trainer.fit(tiny_model(), datamodule=TinyDM())
    assert stats.history == [(1, 1), (1, 3), (1, 4)]  # epochs 2, 4 and the last one (5)
    # stopped by max_steps in the middle of an epoch: the end-of-stage run happens in on_train_end
    stats = GeodesicDistanceStats(every_n_epochs=10, num_pairs=4, num_nodes=6, max_iterations=5)
    trainer = make_trainer(max_epochs=5, max_steps=4, callbacks=[stats])
    trainer.fit(tiny_model(), datamodule=TinyDM())
    assert stats.history and stats.history[-1][0] == 1 and len(stats.history) == 1


@pytest.mark.slow
@pytest.mark.parametrize("latent_dim", [1, 3])
def test_curvature_plots_other_latent_dimensions(make_trainer, tmp_path, latent_dim):
    cbs = fast_callbacks(output_dir=str(tmp_path))
    trainer = make_trainer(max_epochs=1, limit_train_batches=1, callbacks=cbs)
    trainer.fit(tiny_model(latent_dim=latent_dim), datamodule=TinyDM(labels=False))
    figs = sorted(os.listdir(tmp_path))
    if latent_dim == 1:
        assert figs == [
            "generator_variance_stage1_epoch0001.png",
            "interpolations_stage1_epoch0001.png",
            "log_magnification_stage1_epoch0001.png",
        ]
    else:
        assert len(figs) == 4
    assert "class_stretch" not in " ".join(trainer.callback_metrics)  # no labels


# ---------------------------------------------------------------------------- DDP
class DumpMetrics(pl.Callback):
    """Writes each rank's geometry scalars and history to ``<folder>/rank<r>.json`` at the end."""

    def __init__(self, folder: str, stats: GeodesicDistanceStats, plots: CurvaturePlots) -> None:
        self.folder = folder
        self.stats = stats
        self.plots = plots

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        stats, plots = self.stats, self.plots
        assert stats.last_result is not None
        out = {
            "metrics": stats.last_result.metrics,
            "history": stats.history,
            "pairs": stats.pair_indices,
            "plot_history": plots.history,
            "logged": {
                k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("geo/")
            },
        }
        with open(os.path.join(self.folder, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump(out, f)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_ddp_two_processes_identical_scalars_images_once(tmp_path, make_trainer):
    from datetime import timedelta

    from pytorch_lightning.strategies import DDPStrategy

    figs = tmp_path / "figs"
    stats, plots = fast_callbacks(output_dir=str(figs))
    cbs = [stats, plots, DumpMetrics(str(tmp_path), stats, plots)]
    trainer = make_trainer(
        devices=2,
        strategy=DDPStrategy(start_method="spawn", timeout=timedelta(seconds=120)),
        deterministic=False,
        limit_train_batches=2,
        callbacks=cbs,
    )
    pl.seed_everything(0)
    trainer.fit(tiny_model(stage=2), datamodule=TinyDM())
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["metrics"] == ranks[1]["metrics"]  # bit-identical floats on both ranks
    assert ranks[0]["logged"] == ranks[1]["logged"] and ranks[0]["logged"]
    assert ranks[0]["pairs"] == ranks[1]["pairs"]
    assert ranks[0]["history"] == ranks[1]["history"] == [[2, 0], [2, 1]]
    assert len(os.listdir(figs)) == 8  # drawn once (rank 0): 4 figures x 2 epochs


@pytest.mark.parametrize("stats_first", [True, False])
def test_callbacks_share_results_only_through_the_store(make_trainer, tmp_path, stats_first):
    """Neither callback looks for the other or reorders ``trainer.callbacks``: the plots draw the
    statistics' geodesics when the shared store holds this epoch's (the statistics ran first),
    and solve their own otherwise."""
    calls: list[str] = []

    class Spy(pl.Callback):
        def __init__(self, name: str) -> None:
            self.name = name

        def setup(self, trainer, pl_module, stage):
            calls.append(self.name)

    stats, plots = fast_callbacks(output_dir=str(tmp_path))
    pair = [stats, plots] if stats_first else [plots, stats]
    given = [Spy("a"), pair[0], Spy("y"), pair[1]]
    trainer = make_trainer(max_epochs=1, limit_train_batches=1, callbacks=given)
    trainer.fit(tiny_model(), datamodule=TinyDM())
    assert sorted(calls) == ["a", "y"]
    assert [cb for cb in trainer.callbacks if cb in given] == given  # order untouched
    assert plots.history == stats.history == [(1, 0)]
    expected = "GeodesicDistanceStats pairs" if stats_first else "pairs of validation codes"
    assert plots.last_geodesic_source == expected


def test_reconstructions_of_a_float64_model(make_trainer, tmp_path):
    from callbacks import ReconstructionImages

    recon = ReconstructionImages(4, save_dir=str(tmp_path))
    trainer = make_trainer(
        max_epochs=1, limit_train_batches=1, precision="64-true", callbacks=[recon]
    )
    trainer.fit(tiny_model(), datamodule=TinyDM())
    assert recon.last_path is not None and os.path.isfile(recon.last_path)


# ---------------------------------------------------------------------------- pure figures
def test_figures_are_pure_functions_of_tensors():
    """The callbacks' figures are drawn by functions of tensors alone (no Trainer, no model)."""
    import io

    from matplotlib.figure import Figure

    from callbacks.figures import (
        geodesics_figure,
        interpolation_figure,
        latent_map_figure,
        profile_1d_figure,
    )

    values = torch.arange(20.0).reshape(4, 5)  # (G_b, G_a)
    extent = (0.0, 1.0, -2.0, 2.0)
    codes = torch.rand(10, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1] * 5)
    fig = latent_map_figure(
        values, extent, codes, title="map", colorbar_label="cb", labels=labels,
        class_names=["zero", "one"],
    )  # fmt: skip
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_title() == "map" and fig.axes[1].get_ylabel() == "cb"  # the color bar
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), values.numpy())
    assert tuple(ax.images[0].get_extent()) == extent
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["zero", "one"]

    curves = torch.stack([torch.linspace(0, 1, 6)[:, None].expand(6, 2) * k for k in (1, 2, 3)])
    fig = geodesics_figure(values, extent, codes, curves, title="geo", colorbar_label="cb")
    ax = fig.axes[0]
    solid = [line for line in ax.lines if line.get_linestyle() == "-" and len(line.get_xdata())]
    assert len(solid) == 3
    np.testing.assert_allclose(solid[1].get_xydata(), curves[1].numpy())
    assert ax.get_xlim() == extent[:2] and ax.get_ylim() == extent[2:]

    images = [("geodesic", torch.rand(4, 1, 8, 8)), ("straight line", torch.rand(4, 1, 8, 8))]
    fig = interpolation_figure(images, "interp")
    assert fig._suptitle.get_text() == "interp"  # noqa: SLF001 - matplotlib has no getter
    strip = np.asarray(fig.axes[0].images[0].get_array())
    assert strip.shape == (8, 4 * 9 - 1)  # 4 images with 1-pixel gaps
    assert [a.get_ylabel() for a in fig.axes] == ["geodesic", "straight line"]
    fig = interpolation_figure([("path", torch.rand(3, 5))], "vectors")
    assert len(fig.axes[0].lines) == 3  # one line per position along the path

    z = torch.linspace(-1, 1, 50)
    fig = profile_1d_figure(z, z**2, codes[:, 0], title="1d", ylabel="v")
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), (z**2).numpy())
    fig.savefig(io.BytesIO(), format="png")  # renders without pyplot


def test_reconstruction_grid_is_a_pure_function():
    from callbacks.reconstructions import reconstruction_grid

    x = torch.full((3, 1, 4, 4), 0.5)
    mu = torch.zeros(3, 1, 4, 4)
    sigma = torch.arange(48.0).reshape(3, 1, 4, 4)
    grid = reconstruction_grid(x, mu, sigma, low=0.0, high=1.0)
    assert grid.shape == (3, 3 * 6 + 2, 3 * 6 + 2)  # 3 rows x 3 images, 2-pixel padding
    cell = lambda r, c: grid[0, 2 + 6 * r : 6 + 6 * r, 2 + 6 * c : 6 + 6 * c]  # noqa: E731
    assert torch.all(cell(0, 1) == 0.5) and torch.all(cell(1, 2) == 0.0)
    assert float(cell(2, 0).min()) == 0.0 and float(cell(2, 0).max()) == 1.0  # per-image min-max


def test_reconstructions_are_class_stratified_with_labelled_rows(tmp_path):
    """The grid's images cycle through the classes of a class-sorted set; the PNG has a title
    with stage and 1-based epoch and labelled rows."""
    from callbacks.reconstructions import (
        ROW_LABELS,
        labelled_grid_figure,
        reconstruction_grid,
        stratified_indices,
    )

    labels = torch.arange(4).repeat_interleave(6)  # sorted by class, as the validation set is
    idx = stratified_indices(labels, len(labels), 10)
    assert labels[idx].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0, 1]
    assert len(set(idx)) == 10
    assert stratified_indices(None, 10, 3) == [0, 4, 9]
    x = torch.rand(3, 1, 8, 8)
    fig = labelled_grid_figure(reconstruction_grid(x, x, x, 0.0, 1.0), "stage 2, epoch 5")
    ax = fig.axes[0]
    assert ax.get_title() == "stage 2, epoch 5"
    assert [t.get_text() for t in ax.get_yticklabels()] == list(ROW_LABELS)
