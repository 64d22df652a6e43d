"""Lightning training of the generative models behind PixelDefend and Defense-GAN.

``fit_pixelcnn`` maximises a :class:`~advlab.defenses.pixeldefend.GatedPixelCNN`'s likelihood (the
loss is its bits per pixel); ``fit_gan`` trains a DCGAN generator against its discriminator with the
non-saturating loss (Goodfellow et al. 2014; Radford et al. 2016's Adam settings). Both are seeded,
quiet, one-device fits (:func:`advlab.training.fit.make_trainer`) that return the model trained in
place and a per-epoch history.
"""
from __future__ import annotations

import contextlib
import math
import time

import pandas as pd
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from advlab.defenses.defensegan import DCGANDiscriminator, DCGANGenerator
from advlab.defenses.pixeldefend import GatedPixelCNN

from .datamodule import _loader
from .fit import _quiet_and_restored, make_trainer


class PixelCNNModule(pl.LightningModule):
    """Negative log-likelihood training; logs ``train_bpd`` and ``val_bpd`` (bits per pixel)."""

    def __init__(self, model: GatedPixelCNN, lr: float = 1e-3) -> None:
        super().__init__()
        self.model, self.lr = model, lr

    def _bpd(self, x: Tensor) -> Tensor:
        return self.model.nll(x).mean() / (x[0].numel() * math.log(2))

    def training_step(self, batch, batch_idx: int) -> Tensor:
        loss = self._bpd(batch[0])
        self.log("train_bpd", loss, on_step=False, on_epoch=True, batch_size=len(batch[0]))
        return loss * math.log(2)  # nats per pixel: the usual scale for Adam's learning rate

    def validation_step(self, batch, batch_idx: int) -> None:
        self.log("val_bpd", self._bpd(batch[0]), on_step=False, on_epoch=True, batch_size=len(batch[0]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.lr)


class GANModule(pl.LightningModule):
    """Alternating discriminator / generator steps; logs ``d_loss``, ``g_loss`` and ``d_real_acc``
    (share of real images the discriminator calls real). Latent codes come from a generator seeded
    with ``seed``."""

    def __init__(self, generator: DCGANGenerator, discriminator: DCGANDiscriminator, *, lr: float = 2e-4,
                 seed: int = 0) -> None:
        super().__init__()
        self.generator, self.discriminator, self.lr = generator, discriminator, lr
        self.automatic_optimization = False
        self._codes = torch.Generator().manual_seed(seed)

    def training_step(self, batch, batch_idx: int) -> None:
        real = batch[0]
        opt_d, opt_g = self.optimizers()
        z = torch.randn(len(real), self.generator.z_dim, generator=self._codes).to(real.device)
        fake = self.generator(z)
        ones, zeros = torch.ones(len(real), device=real.device), torch.zeros(len(real), device=real.device)
        d_real = self.discriminator(real)
        d_loss = (F.binary_cross_entropy_with_logits(d_real, ones)
                  + F.binary_cross_entropy_with_logits(self.discriminator(fake.detach()), zeros))
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_loss = F.binary_cross_entropy_with_logits(self.discriminator(fake), ones)  # non-saturating
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()
        self.log_dict({"d_loss": d_loss, "g_loss": g_loss, "d_real_acc": (d_real > 0).float().mean()},
                      on_step=False, on_epoch=True, batch_size=len(real))

    def configure_optimizers(self):
        betas = (0.5, 0.999)
        return (torch.optim.Adam(self.discriminator.parameters(), lr=self.lr, betas=betas),
                torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=betas))


class _History(pl.Callback):
    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys, self.rows, self._t0 = keys, [], 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        m = trainer.callback_metrics
        self.rows.append({"epoch": trainer.current_epoch, **{k: float(m[k]) if k in m else math.nan for k in self.keys},
                          "seconds": time.perf_counter() - self._t0})


def _fit(module: pl.LightningModule, train, val, *, epochs: int, seed: int, accelerator: str,
         keys: tuple[str, ...]) -> pd.DataFrame:
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    history = _History(keys)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_quiet_and_restored())
        pl.seed_everything(seed, workers=True, verbose=False)
        trainer = make_trainer(stack, epochs=epochs, accelerator=accelerator, deterministic=True,
                               callbacks=[history], log_dir=None, validate=val is not None)
        trainer.fit(module, train_dataloaders=train, val_dataloaders=val)
    return pd.DataFrame(history.rows, columns=["epoch", *keys, "seconds"])


def fit_pixelcnn(model: GatedPixelCNN, x_train: Tensor, x_val: Tensor | None = None, *, epochs: int,
                 batch_size: int = 64, lr: float = 1e-3, seed: int = 0, accelerator: str = "auto") -> pd.DataFrame:
    """Train ``model`` on images ``x_train`` (``[N, C, H, W]`` in [0, 1], C its colours); returns the history
    (``train_bpd``, ``val_bpd`` on ``x_val`` when given, ``seconds``). ``model`` is left in eval mode."""
    y = torch.zeros(len(x_train), dtype=torch.long)
    train = _loader((x_train, y), batch_size, shuffle=True, seed=seed)
    val = None if x_val is None else _loader((x_val, torch.zeros(len(x_val), dtype=torch.long)), 500, False, seed)
    history = _fit(PixelCNNModule(model, lr=lr), train, val, epochs=epochs, seed=seed, accelerator=accelerator,
                   keys=("train_bpd", "val_bpd"))
    model.cpu().eval()
    return history


def fit_gan(generator: DCGANGenerator, discriminator: DCGANDiscriminator, x_train: Tensor, *, epochs: int,
            batch_size: int = 64, lr: float = 2e-4, seed: int = 0, accelerator: str = "auto") -> pd.DataFrame:
    """Train the GAN on ``x_train`` (``[N, C, H, W]`` in [0, 1], the networks' shape); returns the history (``d_loss``,
    ``g_loss``, ``d_real_acc``, ``seconds``). Both networks are left in eval mode."""
    train = _loader((x_train, torch.zeros(len(x_train), dtype=torch.long)), batch_size, shuffle=True, seed=seed)
    history = _fit(GANModule(generator, discriminator, lr=lr, seed=seed), train, None, epochs=epochs, seed=seed,
                   accelerator=accelerator, keys=("d_loss", "g_loss", "d_real_acc"))
    generator.cpu().eval()
    discriminator.cpu().eval()
    return history
