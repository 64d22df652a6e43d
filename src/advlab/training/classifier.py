"""Supervised training of an image classifier as a LightningModule."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCHEDULES = (None, "cosine", "onecycle", "step", "multistep")


class NaturalClassifier(pl.LightningModule):
    """Cross-entropy training of ``model`` (logits out) on natural examples.

    Subclasses change what is trained on by overriding two hooks:

    * :meth:`training_batch` maps a loader batch to ``(inputs, targets)``; e.g.
      adversarial training replaces the inputs by attacked ones;
    * :meth:`loss` maps ``(logits, targets)`` to a scalar; e.g. distillation uses
      soft targets and a temperature.

    Logged per epoch: ``train_loss``, ``train_acc`` (on the inputs trained on,
    against the hard labels), ``val_loss``, ``val_acc``, and ``test_*`` under ``test``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float,
        optimizer: str = "adam",
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        lr_schedule: str | None = None,
        lr_step_size: int | None = None,
        lr_gamma: float = 0.1,
        lr_milestones: list[int] | None = None,
    ) -> None:
        super().__init__()
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {lr_schedule!r}")
        if lr_schedule == "multistep" and not lr_milestones:
            raise ValueError("lr_schedule='multistep' needs lr_milestones (epochs)")
        self.model = model
        self.save_hyperparameters(ignore=["model"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # -- hooks for subclasses -------------------------------------------------
    def training_batch(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The inputs and targets to take a gradient step on."""
        return batch[0], batch[1]

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy; ``targets`` are class indices or class probabilities."""
        return F.cross_entropy(logits, targets)

    # -- Lightning --------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        x, targets = self.training_batch(batch)
        logits = self(x)
        loss = self.loss(logits, targets)
        acc = (logits.argmax(dim=1) == _hard(batch[1])).float().mean()
        self.log_dict({"train_loss": loss, "train_acc": acc}, on_step=False, on_epoch=True, batch_size=len(x),
                      sync_dist=self.several_ranks())
        return loss

    def several_ranks(self) -> bool:
        """Whether this is a multi-process (DDP) fit: each rank trains on its share of every batch,
        so training metrics are averaged over the ranks. (Every rank validates on the whole
        validation set, with the same weights: no averaging needed there.)"""
        trainer = self._trainer
        return trainer is not None and trainer.world_size > 1

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def _evaluate(self, batch, prefix: str) -> None:
        x, y = batch[0], batch[1]
        logits = self(x)
        self.log_dict(
            {
                f"{prefix}_loss": F.cross_entropy(logits, y),
                f"{prefix}_acc": (logits.argmax(dim=1) == _hard(y)).float().mean(),
            },
            on_step=False,
            on_epoch=True,
            batch_size=len(x),
        )

    def configure_optimizers(self):
        hp = self.hparams
        params = self.model.parameters()
        if hp.optimizer == "sgd":
            opt = torch.optim.SGD(
                params, lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov, weight_decay=hp.weight_decay
            )
        elif hp.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            opt = torch.optim.Adam(params, lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.lr_schedule is None:
            return opt
        epochs = self.trainer.max_epochs
        steps = int(self.trainer.estimated_stepping_batches)
        if hp.lr_schedule == "cosine":
            sched, interval = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps), "step"
        elif hp.lr_schedule == "onecycle":
            sched, interval = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=hp.lr, total_steps=steps), "step"
        elif hp.lr_schedule == "step":
            step_size = hp.lr_step_size or max(1, epochs // 3)
            sched, interval = torch.optim.lr_scheduler.StepLR(opt, step_size, gamma=hp.lr_gamma), "epoch"
        else:
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, list(hp.lr_milestones), gamma=hp.lr_gamma)
            interval = "epoch"
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": interval}}


def _hard(y: torch.Tensor) -> torch.Tensor:
    return y if y.ndim == 1 else y.argmax(dim=1)
