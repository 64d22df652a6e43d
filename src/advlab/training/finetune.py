"""Fine-tuning on a fixed set of perturbed training images (DeepFool paper, §4.2).

The perturbed images are computed once, on the network before fine-tuning; the network then
trains on them (with their true labels) for a few epochs at a reduced, constant learning rate,
and ``on_epoch`` measures it after every epoch (e.g. its rho_adv under DeepFool).
"""

from __future__ import annotations

from typing import Callable

import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from .classifier import NaturalClassifier
from .datamodule import ArrayDataModule
from .fit import TrainResult, fit_module

__all__ = ["fine_tune"]


class _EpochProbe(pl.Callback):
    def __init__(self, on_epoch: Callable[[int, nn.Module], dict]) -> None:
        self.on_epoch = on_epoch
        self.rows: list[dict] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        model = pl_module.model
        was_training = model.training
        model.eval()
        with torch.enable_grad():
            self.rows.append({"epoch": trainer.current_epoch + 1, **self.on_epoch(trainer.current_epoch + 1, model)})
        model.train(was_training)


def fine_tune(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    lr: float,
    batch_size: int = 64,
    seed: int = 0,
    on_epoch: Callable[[int, nn.Module], dict] | None = None,
    accelerator: str = "auto",
    **optim,
) -> tuple[TrainResult, list[dict]]:
    """Train ``model`` in place on ``(x, y)`` for ``epochs`` at constant ``lr`` (no validation
    split, so the last epoch is kept). ``optim``: optimizer, momentum, weight_decay as in
    :class:`NaturalClassifier`. Returns the fit result and ``on_epoch``'s rows (epochs from 1).
    """
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} items but y has {len(y)}")
    probe = _EpochProbe(on_epoch) if on_epoch is not None else None
    model.train()  # a model loaded for evaluation arrives in eval mode
    module = NaturalClassifier(model, lr=lr, lr_schedule=None, **optim)
    datamodule = ArrayDataModule(x, y, val_fraction=0.0, batch_size=batch_size, seed=seed)
    result = fit_module(module, datamodule, epochs=epochs, seed=seed, accelerator=accelerator,
                        callbacks=[probe] if probe else None)
    return result, (probe.rows if probe else [])
