"""The two-stage VAE of Arvanitidis, Hansen & Hauberg (ICLR 2018), as one LightningModule.

Stage 1 trains the encoder and the generator mean mu(z) with a constant generator standard
deviation. Stage 2 freezes both and fits only the generator's variance: by default the paper's RBF
precision network beta(z) = W v(z) + zeta (k-means centers on the encoder means of the whole
training set, eq.-12 bandwidths, W >= 0 by projection), or a standard MLP variance head (the
paper's baseline). Each stage is a separate ``Trainer.fit`` on a new Trainer (see
``pipeline.train``); the stage is fixed at construction or checkpoint load, before DDP wraps the
model, and the optimizer only ever sees the stage's trainable parameters.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from lightning_modules.checkpoints import (
    FORMAT_VERSION,
    MARKER_KEY,
    MODEL_NAME,
    CheckpointError,
    check_checkpoint_dict,
    read_checkpoint,
)
from lightning_modules.finite_loss import (
    FirstNonFiniteLoss,
    finite_check_interval,
    nonfinite_loss_error,
)
from lightning_modules.networks import (
    ConvEncoder,
    ConvMeanDecoder,
    MLPEncoder,
    MLPMeanDecoder,
    MLPStdHead,
    make_activation,
    make_output_activation,
)
from lightning_modules.rbf import RBFPrecision

ARCHITECTURES = ("mlp", "conv")
VARIANCE_HEADS = ("rbf", "mlp")
#: default stage-2 learning rate of each variance head (``stage2_lr=None``)
STAGE2_LR = {"rbf": 0.1, "mlp": 1e-3}
LOG_2PI = math.log(2 * math.pi)
#: the loss terms logged per split, in this order
LOSS_TERMS = ("rec", "kl", "elbo")


#: hyper-parameters that may change between stage 1 and stage 2 (``stage2_from_stage1``)
#: state-dict keys renamed since checkpoints were first written (old -> new); checkpoints with
#: the old names still load
RENAMED_STATE_KEYS = {"variance_net.initialised": "variance_net.initialized"}


def upgrade_state_dict(state: dict[str, Any]) -> dict[str, Any]:
    """Rename, in place, the keys of ``state`` listed in :data:`RENAMED_STATE_KEYS`."""
    for old, new in RENAMED_STATE_KEYS.items():
        if old in state and new not in state:
            state[new] = state.pop(old)
    return state


STAGE2_HPARAMS = (
    "variance_head",
    "num_centers",
    "bandwidth_scale",
    "zeta",
    "mlp_head_activation",
    "kmeans_seed",
    "kmeans_restarts",
    "stage2_lr",
)
#: hyper-parameters a resumed stage may change (applied to the restored optimizer in
#: ``on_train_start``); every other hyper-parameter must equal the checkpoint's
RESUME_HPARAMS = (
    "lr",
    "stage2_lr",
    "weight_decay",
    "kl_warmup_epochs",
    "gradient_clip_val",
    "finite_check_every_n_steps",
)
#: hyper-parameters fixed by the stage-1 checkpoint (the networks of the encoder and the mean)
ARCHITECTURE_HPARAMS = (
    "data_shape",
    "latent_dim",
    "architecture",
    "hidden_dims",
    "conv_channels",
    "conv_hidden_dim",
    "activation",
    "output_activation",
)


class TwoStageVAE(pl.LightningModule):
    """Gaussian VAE with a two-stage generator: mean first, then an RBF (or MLP) variance.

    Args:
        data_shape: shape of one data point, e.g. ``[1, 28, 28]`` (the datamodule provides it).
        latent_dim: d >= 1 (the paper: 2).
        architecture: ``"mlp"`` (paper, Appendix D) or ``"conv"`` (28x28-style images).
        hidden_dims: MLP hidden widths of the encoder (decoder mirrored); paper: ``[64, 32]``.
        conv_channels: the two convolution widths for ``architecture="conv"``.
        conv_hidden_dim: width of the dense layer of the convolutional networks.
        activation: hidden activation; twice differentiable by default (``tanh``).
        output_activation: generator mean output, ``sigmoid`` for data in [0, 1], ``tanh`` for
            [-1, 1], ``identity`` for unbounded data.
        stage1_std: the constant generator standard deviation used in stage 1 (paper: not stated).
        variance_head: stage-2 variance model, ``"rbf"`` (paper) or ``"mlp"`` (baseline).
        num_centers: K, RBF centers (paper: 64 for MNIST).
        bandwidth_scale: a of eq. 12 (paper: 2 for MNIST).
        zeta: precision floor zeta > 0; far from the data sigma^2 -> 1 / zeta.
        mlp_head_activation: hidden activation of the MLP variance head.
        kmeans_seed: seed of the k-means restarts.
        kmeans_restarts: number of k-means restarts.
        lr: Adam learning rate in stage 1.
        stage2_lr: Adam learning rate in stage 2; ``None``: ``STAGE2_LR[variance_head]``, i.e.
            0.1 for the RBF weights (on the default job 0.1 reached a validation ELBO of 991 in
            30 epochs, 0.01 reached 821) and 1e-3 for the MLP head (0.1 and 0.01 made its
            validation ELBO worse than 1e-3 there: -1915 and -2882 against -578).
        weight_decay: L2 regularization of stage-1 weights (paper: 1e-5).
        kl_warmup_epochs: linear KL warm-up over this many stage-1 epochs (0 = off).
        gradient_clip_val: clip the gradient norm of each step to this value (``None``: off).
        finite_check_every_n_steps: how often a non-finite training loss is looked for on the
            host. 1: before every optimizer step (one device sync per step). k > 1: each step
            records the first non-finite loss on the device without a sync; the host checks
            every k steps, at the last step of every epoch (before any epoch-end checkpoint), at
            ``max_steps`` and when a stop is requested, and the error names the first bad step.
            ``None`` (default): 1 when the loss is on the CPU (a sync costs nothing there),
            ``finite_loss.DEFERRED_FINITE_CHECK_STEPS`` (50) on an accelerator.
        stage: 1 or 2.

    Optimization is manual (``automatic_optimization = False``): ``training_step`` runs
    zero-grad, ``manual_backward``, the optimizer step (clipping in
    ``on_before_optimizer_step``) and, in stage 2, the RBF projection W >= 0. Lightning's
    automatic-optimization closure cost about 0.06 of a plain PyTorch epoch on the default job:
    the ratio of ``scripts/benchmark_training.py``'s ``quiet`` variant was 1.17 with an
    automatic-optimization copy of the model and 1.11 with this one (60 paired epochs each).
    Precision plugins, DDP gradient synchronization and the optimizer hooks work the same
    through ``manual_backward`` and ``LightningOptimizer.step``.
    """

    #: what stage 2 may change (:data:`STAGE2_HPARAMS`) and what the stage-1 weights fix
    STAGE2_HPARAMS = STAGE2_HPARAMS
    ARCHITECTURE_HPARAMS = ARCHITECTURE_HPARAMS
    RESUME_HPARAMS = RESUME_HPARAMS

    def __init__(
        self,
        data_shape: Sequence[int] = (1, 28, 28),
        latent_dim: int = 2,
        architecture: str = "mlp",
        hidden_dims: Sequence[int] = (64, 32),
        conv_channels: Sequence[int] = (32, 64),
        conv_hidden_dim: int = 128,
        activation: str = "tanh",
        output_activation: str = "sigmoid",
        stage1_std: float = 0.1,
        variance_head: str = "rbf",
        num_centers: int = 64,
        bandwidth_scale: float = 2.0,
        zeta: float = 1e-3,
        mlp_head_activation: str = "softplus",
        kmeans_seed: int = 0,
        kmeans_restarts: int = 10,
        lr: float = 3e-3,
        stage2_lr: float | None = None,
        weight_decay: float = 1e-5,
        kl_warmup_epochs: int = 0,
        gradient_clip_val: float | None = None,
        finite_check_every_n_steps: int | None = None,
        stage: int = 1,
    ):
        super().__init__()
        data_shape = tuple(int(s) for s in data_shape)
        hidden_dims = tuple(int(h) for h in hidden_dims)
        conv_channels = tuple(int(c) for c in conv_channels)
        _validate_hparams(
            data_shape=data_shape,
            latent_dim=latent_dim,
            architecture=architecture,
            hidden_dims=hidden_dims,
            conv_channels=conv_channels,
            activation=activation,
            output_activation=output_activation,
            stage1_std=stage1_std,
            variance_head=variance_head,
            num_centers=num_centers,
            bandwidth_scale=bandwidth_scale,
            zeta=zeta,
            kmeans_restarts=kmeans_restarts,
            lr=lr,
            stage2_lr=stage2_lr,
            weight_decay=weight_decay,
            kl_warmup_epochs=kl_warmup_epochs,
            gradient_clip_val=gradient_clip_val,
            finite_check_every_n_steps=finite_check_every_n_steps,
            stage=stage,
        )
        self.save_hyperparameters(
            {
                **{k: v for k, v in locals().items() if k not in ("self", "__class__")},
                "data_shape": list(data_shape),
                "hidden_dims": list(hidden_dims),
                "conv_channels": list(conv_channels),
            }
        )
        self.automatic_optimization = False
        self.data_shape = data_shape
        self.data_dim = math.prod(data_shape)
        self.latent_dim = latent_dim

        if architecture == "mlp":
            self.encoder: nn.Module = MLPEncoder(self.data_dim, latent_dim, hidden_dims, activation)
            self.mean_decoder: nn.Module = MLPMeanDecoder(
                data_shape, latent_dim, hidden_dims, activation, output_activation
            )
        else:
            self.encoder = ConvEncoder(
                data_shape, latent_dim, conv_channels, conv_hidden_dim, activation
            )
            self.mean_decoder = ConvMeanDecoder(
                data_shape,
                latent_dim,
                conv_channels,
                conv_hidden_dim,
                activation,
                output_activation,
            )
        if variance_head == "rbf":
            self.variance_net: nn.Module = RBFPrecision(data_shape, latent_dim, num_centers, zeta)
        else:
            self.variance_net = MLPStdHead(
                data_shape, latent_dim, hidden_dims, mlp_head_activation, init_std=stage1_std
            )
        #: per split: (sums of the LOSS_TERMS weighted by batch size, number of points)
        self._epoch_sums: dict[str, tuple[Tensor, int]] = {}
        self._train_batch_idx = -1  # the current or last training batch of the epoch
        # finiteness checks of the current fit (set in on_train_start): 1 = before every step
        self._finite_every = 1
        self._first_nonfinite = FirstNonFiniteLoss()
        self._stage = 0
        self.set_stage(stage)

    # ------------------------------------------------------------------ stage logic
    @property
    def stage(self) -> int:
        """The training stage, 1 (encoder + mean) or 2 (variance only)."""
        return self._stage

    def set_stage(self, stage: int) -> None:
        """Fix which parameters train. Call before the Trainer wraps the model (never mid-fit).

        Stage 1: encoder and generator mean train; the variance network is frozen and unused.
        Stage 2: only the variance network trains (RBF: only W).
        """
        if stage not in (1, 2):
            raise ValueError(f"stage={stage!r} must be 1 or 2")
        self._stage = int(stage)
        self.hparams["stage"] = self._stage
        for p in self.encoder.parameters():
            p.requires_grad_(stage == 1)
        for p in self.mean_decoder.parameters():
            p.requires_grad_(stage == 1)
        for p in self.variance_net.parameters():
            p.requires_grad_(stage == 2)

    @property
    def variance_ready(self) -> bool:
        """Whether the stage-2 variance network has been initialized (RBF centers placed)."""
        if isinstance(self.variance_net, RBFPrecision):
            return bool(self.variance_net.initialized)
        return True

    # ------------------------------------------------------------------ public model API
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z|x): x (B, *data_shape) -> mu (B, d), logvar (B, d)."""
        return self.encoder(x)

    def generator_std(self, z: Tensor) -> Tensor:
        """sigma(z): (B, d) -> (B, *data_shape). Constant ``stage1_std`` in stage 1."""
        if self._stage == 1:
            return z.new_full((z.shape[0], *self.data_shape), self.hparams.stage1_std)
        return self.variance_net(z)

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """p(x|z) = N(mu(z), diag sigma^2(z)): z (B, d) -> mu_x, sigma_x, each (B, *data_shape)."""
        return self.mean_decoder(z), self.generator_std(z)

    def embed(self, z: Tensor) -> Tensor:
        """h(z) = [mu(z), sigma(z)] flattened: (B, d) -> (B, 2 D).

        The Euclidean pull-back of h is the paper's expected metric
        M(z) = J_mu^T J_mu + J_sigma^T J_sigma (Theorem 1); pass this to ``geometry``.
        """
        mu, sigma = self.decode(z)
        return torch.cat([mu.flatten(1), sigma.flatten(1)], dim=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Reconstruction through the encoder mean: x -> (mu_x, sigma_x)."""
        mu_z, _ = self.encode(x)
        return self.decode(mu_z)

    # ------------------------------------------------------------------ losses
    def kl_weight(self) -> float:
        """KL warm-up factor in [0, 1] (stage 1 only; 1 in stage 2)."""
        warm = self.hparams.kl_warmup_epochs
        if self._stage == 2 or warm <= 0 or not self.in_trainer:
            return 1.0
        trainer = self.trainer
        # batches of this epoch so far, the current one included (1.0 after the epoch's last)
        done = self._train_batch_idx + 1
        progress = trainer.current_epoch + done / max(1, trainer.num_training_batches)
        return float(min(1.0, progress / warm))

    @property
    def in_trainer(self) -> bool:
        """Whether the module is attached to a Trainer (Lightning's public ``trainer`` property
        raises when it is not)."""
        try:
            self.trainer  # noqa: B018 - the property raises outside a Trainer
        except RuntimeError:
            return False
        return True

    def loss_terms(self, x: Tensor, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """One-sample ELBO terms, averaged over the batch (nats per data point).

        Returns:
            ``rec`` = -E_q log p(x|z), ``kl`` = KL(q(z|x) || N(0, I)), ``elbo`` = -(rec + kl).
        """
        mu_z, logvar_z = self.encode(x)  # (B, d) each
        eps = torch.randn(mu_z.shape, generator=generator, device=mu_z.device, dtype=mu_z.dtype)
        z = mu_z + (0.5 * logvar_z).exp() * eps  # (B, d)
        mu_x, sigma_x = self.decode(z)  # (B, *data_shape)
        nll = 0.5 * (((x - mu_x) / sigma_x) ** 2 + LOG_2PI) + sigma_x.log()
        rec = nll.flatten(1).sum(1)  # (B,)
        kl = 0.5 * (mu_z**2 + logvar_z.exp() - 1.0 - logvar_z).sum(1)  # (B,)
        return {"rec": rec.mean(), "kl": kl.mean(), "elbo": -(rec + kl).mean()}

    def training_loss(self, terms: dict[str, Tensor]) -> Tensor:
        """The minimized objective from :meth:`loss_terms`: ``rec + kl_weight() * kl`` (the
        negative ELBO once the KL warm-up is over)."""
        return terms["rec"] + self.kl_weight() * terms["kl"]

    def _step(self, batch: Any, split: str, batch_idx: int = 0) -> Tensor:
        """Loss of one batch; adds its terms to the split's epoch sums (logged at epoch end).

        The training means are logged in the epoch's last training step, so that callbacks'
        ``on_train_epoch_end`` (progress lines, checkpoints) already see them;
        ``on_train_epoch_end`` logs them when an epoch ends early (``max_steps``).

        Per-step values (``train/elbo_step``, ``train/loss``) are passed to ``self.log`` only on
        the steps the loggers write (``log_every_n_steps``): every ``self.log`` call costs about
        a millisecond in Lightning 2.6, more than a training step of the paper's MLP.
        """
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        terms = self.loss_terms(x)
        loss = self.training_loss(terms)
        if split == "train":
            self._check_finite(loss)
        values = torch.stack([terms[name] for name in LOSS_TERMS]).detach()  # (3,)
        if split in self._epoch_sums:
            sums, count = self._epoch_sums[split]
            self._epoch_sums[split] = (sums.add_(values, alpha=x.shape[0]), count + x.shape[0])
        else:
            self._epoch_sums[split] = (values * x.shape[0], x.shape[0])
        if split != "train" or not self.in_trainer:
            return loss
        if self._logs_this_step():
            self.log_dict(
                {"train/elbo_step": terms["elbo"].detach(), "train/loss": loss.detach()},
                on_step=True,
                on_epoch=False,
                prog_bar=False,
                batch_size=x.shape[0],
            )
        if batch_idx + 1 >= self.trainer.num_training_batches:
            self._log_epoch("train")
        return loss

    def _logs_this_step(self) -> bool:
        """Whether the loggers write the current training step (public API only): every
        ``log_every_n_steps`` optimizer steps, counted across epochs, and when a stop is
        requested. One optimizer step per batch (manual optimization), so the step about to be
        taken is ``global_step + 1``."""
        t = self.trainer
        return (t.global_step + 1) % t.log_every_n_steps == 0 or t.should_stop

    def _log_epoch(self, split: str) -> None:
        """Log the epoch means of ``split`` (``{split}/rec``, ``/kl``, ``/elbo``), averaged over
        ranks; called on every rank at the split's epoch end."""
        if split not in self._epoch_sums:
            return
        sums, count = self._epoch_sums.pop(split)
        means = sums / max(count, 1)  # (3,)
        for name, value in zip(LOSS_TERMS, means):
            self.log(
                f"{split}/{name}",
                value,
                on_step=False,
                on_epoch=True,
                sync_dist=True,
                prog_bar=name == "elbo",
            )
        if split == "train":
            self.log("stage", float(self._stage), on_step=False, on_epoch=True)

    def on_train_epoch_start(self) -> None:
        self._epoch_sums.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self._epoch_sums.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._epoch_sums.pop("test", None)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def finite_check_interval(self, device: torch.device) -> int:
        """Steps between two host-side finiteness checks for a loss on ``device``."""
        # .get: absent from older checkpoints' hparams
        return finite_check_interval(self.hparams.get("finite_check_every_n_steps"), device)

    def on_train_start(self) -> None:
        self._finite_every = self.finite_check_interval(self.device)
        self._first_nonfinite = FirstNonFiniteLoss()
        self.apply_optimizer_hparams()

    def optimizer_hparams(self) -> dict[str, float]:
        """The stage's learning rate and weight decay from the current hyper-parameters."""
        if self._stage == 1:
            return {"lr": self.hparams.lr, "weight_decay": self.hparams.weight_decay}
        lr = self.hparams.stage2_lr
        return {"lr": STAGE2_LR[self.hparams.variance_head] if lr is None else lr}

    def apply_optimizer_hparams(self) -> None:
        """Set every param group of the fit's optimizer to :meth:`optimizer_hparams`.

        Runs in ``on_train_start``, after Lightning restored a resumed fit's optimizer state
        (which carries the checkpoint's learning rate): a resume with a new ``lr`` /
        ``stage2_lr`` trains with the new one. Adam's moment estimates are kept.
        """
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                group.update(self.optimizer_hparams())

    def _check_finite(self, loss: Tensor) -> None:
        """Stop on a non-finite training loss: at once (interval 1, or outside a Trainer), or
        record it on the device for the next due check (``on_train_batch_end``)."""
        if self._finite_every > 1 and self.in_trainer:
            self._first_nonfinite.record(loss, self.trainer.global_step)
            return
        if not self._all_ranks_agree(bool(torch.isfinite(loss))):
            where = ""
            if self.in_trainer:
                t = self.trainer
                where = f" at epoch {t.current_epoch + 1}, global step {t.global_step}"
            raise nonfinite_loss_error(f"({float(loss.detach())}) in stage {self._stage}{where}")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """The deferred finiteness check, when due (runs after the callbacks' batch-end hooks, so
        it sees their stop requests)."""
        every = self._finite_every
        if every == 1:
            return
        t = self.trainer
        due = (
            t.global_step % every == 0
            or batch_idx + 1 >= t.num_training_batches
            or 0 < (t.max_steps or -1) <= t.global_step
            or t.should_stop
        )
        if not due:
            return
        first = self._first_nonfinite.read()
        if self._all_ranks_agree(first is None):
            return
        where = f"in stage {self._stage} at epoch {t.current_epoch + 1}"
        if first is None:
            raise nonfinite_loss_error(f"on another rank {where}")
        step, value = first
        raise nonfinite_loss_error(
            f"({value}) {where}, global step {step} (found by the check after global step "
            f"{t.global_step}; checks run every {every} steps)"
        )

    def _all_ranks_agree(self, ok: bool) -> bool:
        """``ok`` on every rank (a collective under DDP: every rank must stop together, or the
        others hang in the next all-reduce)."""
        if self.in_trainer and self.trainer.world_size > 1:
            return bool(self.trainer.strategy.reduce_boolean_decision(ok, all=True))
        return ok

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """One optimizer step on ``batch``; returns the detached loss."""
        self._train_batch_idx = batch_idx  # the KL warm-up's position in the epoch
        loss = self._step(batch, "train", batch_idx)  # raises first if the loss is not finite
        self.optimize(loss)
        return loss.detach()

    def optimize(self, loss: Tensor) -> None:
        """One optimizer step on ``loss`` (inside a Trainer's fit): zero-grad, backward, step
        (gradient-norm clipping happens in ``on_before_optimizer_step``), and in stage 2 the RBF
        projection W >= 0."""
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        if self._stage == 2 and isinstance(self.variance_net, RBFPrecision):
            self.variance_net.project_()  # W >= 0 after every step

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # here, unlike right after manual_backward, mixed-precision gradients are unscaled: the
        # same place where Lightning clips under automatic optimization
        clip = self.hparams.get("gradient_clip_val")  # absent from older checkpoints' hparams
        if clip is not None:
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        return self._step(batch, "test")

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self) -> torch.optim.Optimizer:
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.Adam(params, **self.optimizer_hparams())

    # ------------------------------------------------------------------ stage-2 initialization
    @torch.no_grad()
    def encode_dataset(self, dataloader: Any) -> Tensor:
        """Encoder means of every batch of ``dataloader``: (n, d), on the encoder's device.

        That is the device of the parameters, not ``self.device``: in ``setup`` Lightning
        already reports the target device (e.g. ``cuda:0``) while the weights are still on the CPU.
        """
        was_training = self.training
        self.eval()
        device = next(self.encoder.parameters()).device
        codes = []
        for batch in dataloader:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            codes.append(self.encode(x.to(device))[0])
        self.train(was_training)
        return torch.cat(codes)

    def init_variance_net(self, codes: Tensor) -> None:
        """Initialize the stage-2 RBF network from codes (k-means + eq. 12); no-op for MLP."""
        if isinstance(self.variance_net, RBFPrecision):
            self.variance_net.fit(
                codes,
                a=self.hparams.bandwidth_scale,
                init_std=self.hparams.stage1_std,
                seed=self.hparams.kmeans_seed,
                n_init=self.hparams.kmeans_restarts,
            )

    def setup(self, stage: str) -> None:
        """Before stage-2 fitting: place RBF centers on the encoder means of the whole training set.

        Runs on every rank before DDP wraps the model; rank 0's centers are broadcast so all ranks
        hold bit-identical buffers.
        """
        if stage != "fit" or self._stage != 2 or self.variance_ready:
            return
        dm = self.trainer.datamodule
        if dm is None or not hasattr(dm, "full_train_dataloader"):
            raise RuntimeError(
                "stage 2 with an uninitialized RBF network needs a datamodule with "
                "full_train_dataloader() (or call model.init_variance_net(codes) before fit)"
            )
        codes = self.encode_dataset(dm.full_train_dataloader())
        self.init_variance_net(codes)
        rbf = self.variance_net
        strategy = self.trainer.strategy
        for name in ("centers", "bandwidths", "weight_scale"):
            buf = getattr(rbf, name)
            buf.copy_(strategy.broadcast(buf.detach().clone(), src=0))

    def validate_data(self, n_train: int, data_shape: Sequence[int]) -> None:
        """Raise a clear error before training when the data cannot fit this model's settings."""
        if tuple(data_shape) != self.data_shape:
            raise ValueError(
                f"model data_shape={list(self.data_shape)} does not match the data's "
                f"{list(data_shape)}; set --model.data_shape or use the CLI's automatic link"
            )
        K = self.hparams.num_centers
        if self.hparams.variance_head == "rbf" and n_train < K:
            raise ValueError(
                f"num_centers={K} exceeds the number of training points ({n_train}); "
                f"choose num_centers <= {n_train}"
            )

    # ------------------------------------------------------------------ checkpoints
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[MARKER_KEY] = {
            "model": MODEL_NAME,
            "format": FORMAT_VERSION,
            "stage": self._stage,
            "variance_ready": self.variance_ready,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        marker = check_checkpoint_dict(checkpoint)
        upgrade_state_dict(checkpoint.get("state_dict", {}))
        self.set_stage(int(marker["stage"]))

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls, checkpoint_path: str | os.PathLike, map_location: Any = None, **kwargs: Any
    ) -> TwoStageVAE:
        """Lightning's loader, preceded by a check that names a missing, corrupt or foreign file."""
        read_checkpoint(checkpoint_path)
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location, **kwargs)

    @staticmethod
    def stage2_overrides(hparams: dict[str, Any]) -> dict[str, Any]:
        """The entries of ``hparams`` that stage 2 may change (:data:`STAGE2_HPARAMS`)."""
        return {k: v for k, v in hparams.items() if k in STAGE2_HPARAMS}

    @classmethod
    def stage2_from_stage1(
        cls, checkpoint_path: str | os.PathLike, **overrides: Any
    ) -> TwoStageVAE:
        """A stage-2 model carrying the encoder and generator mean of any stage-1 checkpoint.

        Args:
            checkpoint_path: a TwoStageVAE checkpoint (stage 1, or stage 2 to refit the variance).
            **overrides: hyper-parameters to change for stage 2, any of :data:`STAGE2_HPARAMS`
                (``variance_head``, ``num_centers``, ``bandwidth_scale``, ``zeta``,
                ``stage2_lr``, ...); the others come from the checkpoint.

        Raises:
            ValueError: for an override outside :data:`STAGE2_HPARAMS`.
            CheckpointError: for a missing, corrupt or foreign checkpoint.

        Returns:
            A model in stage 2 whose variance network is not yet initialized (its centers are
            placed by :meth:`setup` at the start of ``fit``, or by :meth:`init_variance_net`).
        """
        fixed = sorted(set(overrides) - set(STAGE2_HPARAMS))
        if fixed:
            raise ValueError(
                f"stage 2 cannot change {fixed} (they come from the stage-1 checkpoint); "
                f"it may change {list(STAGE2_HPARAMS)}"
            )
        ckpt = read_checkpoint(checkpoint_path)
        hparams = {**ckpt.get("hyper_parameters", {}), **overrides, "stage": 2}
        model = cls(**hparams)
        keep = ("encoder.", "mean_decoder.")
        state = {k: v for k, v in ckpt["state_dict"].items() if k.startswith(keep)}
        expected = {k for k in model.state_dict() if k.startswith(keep)}
        if set(state) != expected:
            raise CheckpointError(
                f"checkpoint {os.fspath(checkpoint_path)!r} does not match the architecture "
                f"(missing {sorted(expected - set(state))[:3]}, unexpected "
                f"{sorted(set(state) - expected)[:3]})"
            )
        try:
            model.load_state_dict(state, strict=False)
        except RuntimeError as err:
            raise CheckpointError(
                f"checkpoint {os.fspath(checkpoint_path)!r} does not match the model's shapes: "
                f"{err}"
            ) from err
        return model


def _validate_hparams(**h: Any) -> None:
    """Clear errors for bad hyper-parameters, raised before any network is built."""
    if not isinstance(h["latent_dim"], int) or h["latent_dim"] < 1:
        raise ValueError(f"latent_dim={h['latent_dim']!r} must be an integer >= 1")
    if len(h["data_shape"]) < 1 or any(s < 1 for s in h["data_shape"]):
        raise ValueError(
            f"data_shape={list(h['data_shape'])} must be a non-empty list of positive sizes"
        )
    if h["architecture"] not in ARCHITECTURES:
        raise ValueError(f"architecture={h['architecture']!r} must be one of {ARCHITECTURES}")
    if not h["hidden_dims"] or any(w < 1 for w in h["hidden_dims"]):
        raise ValueError(
            f"hidden_dims={list(h['hidden_dims'])} must be a non-empty list of widths >= 1"
        )
    if len(h["conv_channels"]) != 2 or any(c < 1 for c in h["conv_channels"]):
        raise ValueError(f"conv_channels={list(h['conv_channels'])} must be two widths >= 1")
    make_activation(h["activation"])
    make_output_activation(h["output_activation"])
    if h["variance_head"] not in VARIANCE_HEADS:
        raise ValueError(f"variance_head={h['variance_head']!r} must be one of {VARIANCE_HEADS}")
    for name in ("stage1_std", "bandwidth_scale", "zeta", "lr", "stage2_lr"):
        if name == "stage2_lr" and h[name] is None:
            continue
        if not (isinstance(h[name], (int, float)) and math.isfinite(h[name]) and h[name] > 0):
            label = "a (bandwidth_scale)" if name == "bandwidth_scale" else name
            raise ValueError(f"{label}={h[name]!r} must be a finite number > 0")
    if not h["weight_decay"] >= 0:
        raise ValueError(f"weight_decay={h['weight_decay']!r} must be >= 0")
    if not isinstance(h["kmeans_restarts"], int) or h["kmeans_restarts"] < 1:
        raise ValueError(f"kmeans_restarts={h['kmeans_restarts']!r} must be an integer >= 1")
    if not isinstance(h["num_centers"], int) or h["num_centers"] < 1:
        raise ValueError(f"num_centers={h['num_centers']!r} must be an integer >= 1")
    if h["kl_warmup_epochs"] < 0:
        raise ValueError(f"kl_warmup_epochs={h['kl_warmup_epochs']!r} must be >= 0")
    clip = h["gradient_clip_val"]
    if clip is not None and not (
        isinstance(clip, (int, float)) and math.isfinite(clip) and clip > 0
    ):
        raise ValueError(f"gradient_clip_val={clip!r} must be a finite number > 0 or None (off)")
    every = h["finite_check_every_n_steps"]
    if every is not None and not (isinstance(every, int) and every >= 1):
        raise ValueError(
            f"finite_check_every_n_steps={every!r} must be an integer >= 1 or None "
            "(1 on the CPU, a deferred check on accelerators)"
        )
    if h["stage"] not in (1, 2):
        raise ValueError(f"stage={h['stage']!r} must be 1 or 2")
