"""Sparse-autoencoder pretraining of AE400-10's encoder (Szegedy et al. 2014).

The autoencoder's encoder *is* the classifier's ``flatten -> encoder -> sigmoid``
(the same module objects, not copies), so pretraining writes straight into the
classifier's weights; :func:`advlab.training.fit_classifier` then fine-tunes the
whole network with cross-entropy.

The objective is the classic sparse autoencoder's (Ng's UFLDL notes), per image::

    J = recon(x_hat, x) + beta * sum_j KL(rho || rho_hat_j) + weight_decay / 2 * (|W_enc|^2 + |W_dec|^2)

with ``rho_hat_j`` the mean activation of hidden unit j over the batch and the
reconstruction summed over pixels (``mse``: half the squared error; ``bce``: binary
cross-entropy). Summing over pixels, not averaging, keeps the reconstruction term
on the scale of the sparsity term, as in UFLDL, so ``beta = 3`` means what it meant
there. ``rho_hat`` is estimated on each minibatch. The weight decay (weights only,
not biases) defaults to 1e-4, smaller than UFLDL's 3e-3, which was tuned for
full-batch L-BFGS. The encoder sees the model's own normalised input; the decoder
reconstructs the [0, 1] image.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .datamodule import _loader
from .fit import _quiet_and_restored, make_trainer

__all__ = ["AUTOENCODER_HISTORY_COLUMNS", "RECON_LOSSES", "PretrainResult", "SparseAutoencoder",
           "pretrain_autoencoder"]

RECON_LOSSES = ("mse", "bce")
AUTOENCODER_HISTORY_COLUMNS = ["epoch", "loss", "recon_loss", "mse", "sparsity_loss", "mean_activation", "seconds"]
_METRICS = ("loss", "recon_loss", "mse", "sparsity_loss", "mean_activation")


def _encoder_of(model: nn.Module) -> nn.Sequential:
    """``model.net``'s layers up to and including the activation after ``encoder``, shared."""
    net = getattr(model, "net", None)
    if not hasattr(model, "normalize") or net is None:
        raise TypeError("the model must be an advlab ImageClassifier (normalize + net), e.g. build_model('ae400_10')")
    children = list(net.named_children())
    names = [n for n, _ in children]
    if "encoder" not in names or names.index("encoder") + 1 >= len(names):
        raise ValueError(f"model.net needs an 'encoder' layer followed by its activation; it has {names}")
    end = names.index("encoder") + 2
    if not isinstance(children[end - 1][1], nn.Sigmoid):
        raise ValueError(
            f"the sparsity penalty needs activations in (0, 1): 'encoder' must be followed by a Sigmoid, "
            f"got {type(children[end - 1][1]).__name__}"
        )
    return nn.Sequential(*(m for _, m in children[:end]))


def _kl_bernoulli(rho: float, rho_hat: Tensor) -> Tensor:
    """sum_j KL(Bernoulli(rho) || Bernoulli(rho_hat_j))."""
    rho_hat = rho_hat.clamp(1e-6, 1 - 1e-6)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


class SparseAutoencoder(pl.LightningModule):
    """Sparse autoencoder around ``model``'s encoder (shared) with a fresh sigmoid decoder.

    ``model`` is an :class:`~advlab.models.ImageClassifier` whose ``net`` has a layer
    named ``encoder`` followed by a ``Sigmoid`` (``ae400_10``). Only the encoder and the
    decoder are trained; the classifier's later layers are left alone.

    Logged per epoch (training images): ``loss`` (the whole objective), ``recon_loss``
    (per image, summed over pixels), ``mse`` (per pixel, for reading),
    ``sparsity_loss`` (the KL sum, before ``beta``) and ``mean_activation`` (over units
    and images; the target is ``sparsity``).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float,
        sparsity: float = 0.05,
        beta: float = 3.0,
        weight_decay: float = 1e-4,
        loss: str = "mse",
    ) -> None:
        super().__init__()
        if not 0.0 < sparsity < 1.0:
            raise ValueError(f"sparsity (the target mean activation rho) must be in (0, 1), got {sparsity}")
        if beta < 0 or weight_decay < 0:
            raise ValueError(f"beta and weight_decay must be >= 0, got {beta} and {weight_decay}")
        if loss not in RECON_LOSSES:
            raise ValueError(f"loss must be one of {RECON_LOSSES}, got {loss!r}")
        self.model = model
        self.encoder = _encoder_of(model)
        self.image_shape = tuple(model.input_shape)
        self.decoder = nn.Sequential(nn.Linear(self.encoder_linear.out_features, math.prod(self.image_shape)), nn.Sigmoid())
        self.save_hyperparameters(ignore=["model"])

    @property
    def encoder_linear(self) -> nn.Linear:
        return getattr(self.model.net, "encoder")

    def encode(self, x: Tensor) -> Tensor:
        """Hidden code of images ``x`` in [0, 1] (normalised by the model first)."""
        return self.encoder(self.model.normalize(x))

    def decode(self, h: Tensor) -> Tensor:
        """Reconstructed images in [0, 1], shaped like the model's input."""
        return self.decoder(h).view(len(h), *self.image_shape)

    def forward(self, x: Tensor) -> Tensor:
        return self.decode(self.encode(x))

    def _reconstruction(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Code ``h``, and per-image reconstruction loss and per-pixel MSE, both ``[N]``."""
        h = self.encode(x)
        x_hat = self.decode(h)
        target = x.reshape_as(x_hat)
        if self.hparams.loss == "mse":
            recon = 0.5 * (x_hat - target).pow(2).flatten(1).sum(1)
        else:
            recon = F.binary_cross_entropy(x_hat, target, reduction="none").flatten(1).sum(1)
        return h, recon, (x_hat - target).pow(2).flatten(1).mean(1)

    def losses(self, x: Tensor) -> dict[str, Tensor]:
        """Every term of the objective on the batch ``x`` (``loss`` is their weighted sum)."""
        hp = self.hparams
        h, recon, mse = self._reconstruction(x)
        rho_hat = h.mean(0)
        sparsity = _kl_bernoulli(hp.sparsity, rho_hat)
        decay = self.encoder_linear.weight.pow(2).sum() + self.decoder[0].weight.pow(2).sum()
        return {
            "loss": recon.mean() + hp.beta * sparsity + 0.5 * hp.weight_decay * decay,
            "recon_loss": recon.mean(),
            "mse": mse.mean(),
            "sparsity_loss": sparsity,
            "mean_activation": rho_hat.mean(),
        }

    @torch.no_grad()
    def evaluate(self, x: Tensor, *, batch_size: int = 1000) -> dict[str, float]:
        """The logged metrics on ``x`` (eval mode, no gradients; the KL uses the mean
        activation over all of ``x``). Every submodule's train/eval mode is restored
        (the shared model's included)."""
        if len(x) == 0:
            raise ValueError("evaluate needs at least one image")
        modes = [(m, m.training) for m in self.modules()]
        self.eval()
        device = self.decoder[0].weight.device
        recon_sum = mse_sum = 0.0
        act_sum = torch.zeros((), device=device)
        try:
            for i in range(0, len(x), batch_size):
                h, recon, mse = self._reconstruction(x[i : i + batch_size].to(device))
                recon_sum += float(recon.sum())
                mse_sum += float(mse.sum())
                act_sum = act_sum + h.sum(0)
        finally:
            for m, mode in modes:
                m.training = mode
        rho_hat = act_sum / len(x)
        return {
            "recon_loss": recon_sum / len(x),
            "mse": mse_sum / len(x),
            "sparsity_loss": float(_kl_bernoulli(self.hparams.sparsity, rho_hat)),
            "mean_activation": float(rho_hat.mean()),
        }

    # -- Lightning --------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> Tensor:
        x = batch[0]
        m = self.losses(x)
        self.log_dict(m, on_step=False, on_epoch=True, batch_size=len(x))
        return m["loss"]

    def configure_optimizers(self):
        # The weight decay is in the loss (weights only, not biases, as in UFLDL).
        params = [*self.encoder.parameters(), *self.decoder.parameters()]
        return torch.optim.Adam(params, lr=self.hparams.lr)


@dataclass
class PretrainResult:
    """What a pretraining produced. ``autoencoder`` holds the trained decoder (for
    reconstructions and filters); its encoder is the model's own. Epochs count from 0."""

    history: pd.DataFrame  # one row per epoch, AUTOENCODER_HISTORY_COLUMNS
    seconds: float  # wall time of the whole pretraining
    autoencoder: SparseAutoencoder


class _AutoencoderRecorder(pl.Callback):
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self._t0 = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics
        row = {"epoch": trainer.current_epoch}
        row.update({k: float(metrics[k]) if k in metrics else math.nan for k in _METRICS})
        row["seconds"] = time.perf_counter() - self._t0
        self.rows.append(row)


def pretrain_autoencoder(
    model: nn.Module,
    x_train: Tensor,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    sparsity: float = 0.05,
    beta: float = 3.0,
    weight_decay: float = 1e-4,
    loss: str = "mse",
    accelerator: str = "auto",
    deterministic: bool = True,
    enable_progress_bar: bool = False,
    log_dir: str | Path | None = None,
) -> PretrainResult:
    """Pretrain ``model``'s encoder (in place) as a sparse autoencoder on ``x_train``.

    ``x_train`` are images in [0, 1] (labels are not used). Seeds everything with
    ``seed`` first (the decoder's initial weights and the batch order follow from it).
    Adam on the encoder and decoder; the parameters of :class:`SparseAutoencoder`.
    No checkpoints are written; with ``log_dir``, Lightning's ``CSVLogger`` writes
    ``metrics.csv`` and ``hparams.yaml`` into it. ``model`` keeps its train/eval mode;
    the returned autoencoder is in eval mode.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if len(x_train) == 0:
        raise ValueError("x_train is empty")
    recorder = _AutoencoderRecorder()
    with contextlib.ExitStack() as stack:
        stack.enter_context(_quiet_and_restored())
        pl.seed_everything(seed, workers=True, verbose=False)
        module = SparseAutoencoder(model, lr=lr, sparsity=sparsity, beta=beta, weight_decay=weight_decay, loss=loss)
        trainer = make_trainer(stack, epochs=epochs, accelerator=accelerator, deterministic=deterministic,
                               callbacks=[recorder], log_dir=log_dir, enable_progress_bar=enable_progress_bar,
                               validate=False)
        loader = _loader((x_train,), batch_size, shuffle=True, seed=seed)
        # Lightning keeps each submodule's train/eval mode: make it train, then give the
        # model back in the mode it came in (ready for fit_classifier).
        was_training = model.training
        module.train()
        t0 = time.perf_counter()
        try:
            trainer.fit(module, train_dataloaders=loader)
        finally:
            module.eval()
            model.train(was_training)
        seconds = time.perf_counter() - t0

    if not recorder.rows:
        raise RuntimeError("pretraining ended before the first epoch completed")
    history = pd.DataFrame(recorder.rows, columns=AUTOENCODER_HISTORY_COLUMNS)
    return PretrainResult(history, seconds, module)
