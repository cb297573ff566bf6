"""CUDA checks: mixed-precision manual optimization, and the geometry on the GPU against the CPU.

These need a CUDA device and are skipped without one (CI has none); run them on a GPU machine
with ``python -m pytest -m gpu``.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from geometry import connecting_geodesics, metric_tensor
from geometry.toy_models import SphereEmbed, ToyRBFDecoder
from lightning_modules import TwoStageVAE

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CLIP = 5.0


class _StepGradNorms(pl.Callback):
    """Gradient norm that ``optimizer.step`` used, i.e. after the GradScaler's unscaling and the
    model's clipping, recorded by a step post-hook (Lightning runs the closure, and with it the
    clipping, inside ``step`` for full precision; steps the scaler skips record nothing)."""

    def __init__(self) -> None:
        self.norms: list[float] = []
        self.scales: list[float] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        def hook(optimizer: torch.optim.Optimizer, *_: object) -> None:
            from tests.test_model import total_grad_norm

            self.norms.append(
                total_grad_norm(p for g in optimizer.param_groups for p in g["params"])
            )

        trainer.optimizers[0].register_step_post_hook(hook)

    def on_train_batch_end(self, trainer: pl.Trainer, *_: object) -> None:
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.scales.append(float(scaler.get_scale()) if scaler is not None else float("nan"))


def _digits(batch_size: int = 100) -> pl.LightningDataModule:
    from tests.test_model import _DigitsData

    return _DigitsData(batch_size)


def _cuda_trainer(tmp_path, **kwargs) -> pl.Trainer:
    return pl.Trainer(
        accelerator="gpu",
        devices=1,
        precision="16-mixed",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
        **kwargs,
    )


def test_16_mixed_manual_optimization_both_stages(tmp_path):
    """Stage 1 and stage 2 on CUDA under 16-mixed: the GradScaler is active, the clipped norm is
    applied to unscaled gradients, the ELBO improves, and stage 2 changes only W (kept >= 0)."""
    torch.manual_seed(0)
    data = _digits()
    model = TwoStageVAE(num_centers=16, gradient_clip_val=CLIP)
    x = data.val_dataset.tensors[0]
    with torch.no_grad():
        before = model.loss_terms(x, generator=torch.Generator().manual_seed(0))["elbo"]
    norms = _StepGradNorms()
    trainer = _cuda_trainer(tmp_path, max_epochs=4, callbacks=[norms])
    trainer.fit(model, datamodule=data)
    assert trainer.precision_plugin.scaler is not None  # a real GradScaler took part
    # the scaler skips the steps whose scaled gradients overflow while it lowers its scale
    assert trainer.global_step // 2 <= len(norms.norms) < trainer.global_step
    assert max(norms.norms) <= CLIP * (1 + 1e-3), max(norms.norms)
    # the unscaled norms are of the model's order, not the scale's (65536 at the start)
    assert min(norms.scales) >= 1.0 and max(norms.norms) > 1.0
    model = model.cpu()
    with torch.no_grad():
        after = model.loss_terms(x, generator=torch.Generator().manual_seed(0))["elbo"]
    assert torch.isfinite(after) and after > before + 100, (float(before), float(after))

    ckpt = tmp_path / "stage1.ckpt"
    trainer.save_checkpoint(ckpt)
    stage2 = TwoStageVAE.stage2_from_stage1(str(ckpt), num_centers=16)
    trainer = _cuda_trainer(tmp_path, max_epochs=1, limit_train_batches=1)
    trainer.fit(stage2, datamodule=data)  # places the centers (k-means on CUDA codes)
    start = {k: v.detach().cpu().clone() for k, v in stage2.state_dict().items()}
    trainer = _cuda_trainer(tmp_path, max_epochs=3)
    trainer.fit(stage2, datamodule=data)
    end = {k: v.detach().cpu() for k, v in stage2.state_dict().items()}
    changed = {k for k in start if not torch.equal(start[k], end[k])}
    assert changed == {"variance_net.raw_weight"}
    assert (stage2.variance_net.weight >= 0).all()

    ckpt2 = tmp_path / "stage2.ckpt"
    trainer.save_checkpoint(ckpt2)
    loaded = TwoStageVAE.load_from_checkpoint(str(ckpt2), map_location="cpu")
    assert loaded.stage == 2 and loaded.device.type == "cpu"
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, end[key]), key


def test_metric_on_cuda_matches_cpu():
    decoder = ToyRBFDecoder(data_dim=64, num_centers=6, seed=3).double()
    z = torch.randn(500, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    on_cpu = metric_tensor(decoder.embed, z)
    on_gpu = metric_tensor(decoder.cuda().embed, z.cuda())
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), on_cpu, rtol=1e-9, atol=1e-12)


def test_geodesics_on_cuda_match_cpu_and_great_circles():
    g = torch.Generator().manual_seed(1)
    theta = 0.6 + (torch.pi - 1.2) * torch.rand(2, 64, generator=g, dtype=torch.float64)
    phi = -1.2 + 2.4 * torch.rand(2, 64, generator=g, dtype=torch.float64)
    z0, z1 = torch.stack([theta[0], phi[0]], 1), torch.stack([theta[1], phi[1]], 1)  # (B, 2)
    sphere = SphereEmbed(radius=2.0)
    exact = sphere.great_circle(z0, z1)
    on_cpu = connecting_geodesics(sphere, z0, z1, num_nodes=32)
    on_gpu = connecting_geodesics(sphere, z0.cuda(), z1.cuda(), num_nodes=32)
    assert on_gpu.lengths.device.type == "cuda" and on_gpu.converged.all()
    # the same solver decisions up to float64 rounding: equal within the solver's tolerance
    torch.testing.assert_close(on_gpu.lengths.cpu(), on_cpu.lengths, rtol=1e-3, atol=0)
    assert ((on_gpu.lengths.cpu() - exact).abs() / exact < 0.01).all()
    assert (on_gpu.lengths <= on_gpu.initial_lengths * (1 + 1e-9)).all()


def test_deferred_finite_check_is_the_cuda_default(tmp_path):
    """On CUDA the loss is checked on the host at the epoch's last step (no sync per step); the
    error still names the step where the loss first turned non-finite."""
    from lightning_modules import NonFiniteLossError
    from tests.test_model import _PoisonAtStep

    data = _digits()
    steps_per_epoch = len(data.train_dataloader())
    model = TwoStageVAE(num_centers=16)
    assert model.finite_check_interval(torch.device("cuda")) > steps_per_epoch
    poison = _PoisonAtStep(3)
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
        callbacks=[poison],
    )
    with pytest.raises(
        NonFiniteLossError,
        match=f"global step 3 .found by the check after global step {steps_per_epoch};",
    ):
        trainer.fit(model, datamodule=data)
    assert poison.steps_run == steps_per_epoch
