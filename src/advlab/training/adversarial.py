"""Adversarial training: Madry et al. 2018 (PGD) and Wong, Rice & Kolter 2020 (FGSM
with a random start, "fast is better than free").

Every training batch is replaced by adversarial examples crafted against the current
weights, and the loss is taken on them (optionally mixed with the clean loss).

* ``method="pgd"``: :func:`advlab.attacks.pgd` with ``steps`` steps of ``step_size``
  from a uniform random start in the eps-ball, as in MadryLab/mnist_challenge.
* ``method="fgsm_rs"``: one step of size ``alpha = step_size`` (default ``1.25 * eps``)
  from a uniform random start in the eps-ball, projected onto the eps-ball and
  [0, 1]. That is exactly ``pgd(steps=1, step_size=alpha, random_start=True)``:
  start ``clip(x + U(-eps, eps), 0, 1)``, signed step, projection, clipping.

The attack runs with the network in eval mode, then the mode is restored: BatchNorm
uses (and does not update) its running statistics while crafting, and dropout is off,
so the attack targets the deterministic network that will be evaluated. (Madry's TF
code crafted in train mode and so let the attack's forward passes update the BN
statistics; we record the other choice.) The loss's forward passes run in train mode;
with ``mix_clean > 0`` the adversarial and the clean batch are two separate passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from advlab.attacks import pgd

from .classifier import NaturalClassifier
from .fit import RecorderState, TrainResult, fit_module

__all__ = ["METHODS", "AdversarialClassifier", "AdversarialTrainResult", "fit_adversarial"]

METHODS = ("pgd", "fgsm_rs")

# The validation attack draws its random starts from a generator reseeded with
# seed + _VAL_SEED_OFFSET at every validation, so val_adv_acc is comparable across epochs.
_VAL_SEED_OFFSET = 1


class AdversarialClassifier(NaturalClassifier):
    """Trains ``model`` on adversarial examples: ``loss = (1 - m) CE(adv) + m CE(clean)``
    with ``m = mix_clean`` (0: Madry's pure adversarial training; 1: natural training,
    the attack still runs so that ``train_adv_acc`` is logged).

    ``step_size`` defaults to ``1.25 * eps`` for ``fgsm_rs`` (Wong et al.'s alpha) and to
    ``2.5 * eps / steps`` for ``pgd`` (Madry's rule of thumb); ``steps`` is ignored by
    ``fgsm_rs`` (always 1), which also requires ``random_start=True``. Random starts come
    from a ``torch.Generator`` seeded with ``seed`` when fitting starts and advanced by
    every batch, so a fit is reproducible.

    Logged per epoch, in addition to :class:`NaturalClassifier`'s metrics:

    * ``train_loss``: the (mixed) loss trained on; ``train_acc``: clean accuracy of
      the training batch, measured in eval mode just before the batch is attacked;
      ``train_adv_acc``: accuracy on the adversarial examples trained on;
    * ``val_adv_acc`` (and ``test_adv_acc``) with ``val_attack=True``: accuracy under the
      same attack as in training (same method, eps, steps, step size); ``val_loss`` and
      ``val_acc`` stay clean.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        lr: float,
        method: str = "pgd",
        norm: str = "linf",
        eps: float = 0.3,
        steps: int = 40,
        step_size: float | None = None,
        random_start: bool = True,
        mix_clean: float = 0.0,
        seed: int = 0,
        val_attack: bool = True,
        eps_warmup_epochs: float = 0.0,
        **options,
    ) -> None:
        if not (math.isfinite(eps_warmup_epochs) and eps_warmup_epochs >= 0):
            raise ValueError(f"eps_warmup_epochs must be a finite number >= 0, got {eps_warmup_epochs}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
        if not (math.isfinite(eps) and eps >= 0):
            raise ValueError(f"eps must be a finite number >= 0, got {eps}")
        if not 0.0 <= mix_clean <= 1.0:
            raise ValueError(f"mix_clean must be in [0, 1], got {mix_clean}")
        if method == "fgsm_rs":
            if not random_start:
                raise ValueError("fgsm_rs is FGSM from a random start; it needs random_start=True")
            steps = 1
        elif steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if step_size is None:
            step_size = 1.25 * eps if method == "fgsm_rs" else 2.5 * eps / steps
        super().__init__(model, lr=lr, **options)
        # Record what was actually used (defaults resolved).
        self.hparams.update({"steps": int(steps), "step_size": float(step_size)})
        self.method, self.norm, self.eps = method, norm, float(eps)
        self.steps, self.step_size, self.random_start = int(steps), float(step_size), bool(random_start)
        self.mix_clean, self.seed, self.val_attack = float(mix_clean), int(seed), bool(val_attack)
        self.eps_warmup_epochs = float(eps_warmup_epochs)
        self._train_generator = torch.Generator().manual_seed(self.seed)
        self._eval_generator = torch.Generator().manual_seed(self.seed + _VAL_SEED_OFFSET)
        self._restored_train_generator: Tensor | None = None

    # -- crafting ---------------------------------------------------------------
    def eps_scale(self) -> float:
        """Training eps as a fraction of ``eps``: a linear ramp from 0 over the first
        ``eps_warmup_epochs`` epochs (per batch), then 1. Small nets trained at the full
        MNIST eps 0.3 from the first step can collapse to a constant prediction; the ramp
        lets them learn the clean task first. Validation always uses the full eps."""
        if self.eps_warmup_epochs <= 0 or self._trainer is None:
            return 1.0
        per_epoch = max(int(self.trainer.num_training_batches), 1)
        return min(1.0, (self.trainer.global_step + 1) / (self.eps_warmup_epochs * per_epoch))

    def attack(self, x: Tensor, y: Tensor, generator: torch.Generator, scale: float = 1.0) -> Tensor:
        """Adversarial examples for ``(x, y)`` against the current weights, crafted in
        eval mode (the mode is restored afterwards); detached, in [0, 1]. ``scale``
        multiplies eps and the step size (the warm-up)."""
        was_training = self.model.training
        self.model.eval()
        try:
            result = pgd(
                self.model,
                x,
                y,
                self.eps * scale,
                norm=self.norm,
                steps=self.steps,
                step_size=self.step_size * scale,
                random_start=self.random_start,
                generator=generator,
            )
        finally:
            self.model.train(was_training)
        return result.x_adv

    def training_batch(self, batch) -> tuple[Tensor, Tensor]:
        x, y = batch[0], batch[1]
        return self.attack(x, y, self._train_generator, self.eps_scale()), y

    # -- Lightning --------------------------------------------------------------
    def on_fit_start(self) -> None:
        self._train_generator = torch.Generator().manual_seed(self.seed)
        if self._restored_train_generator is not None:
            # Resumed from a checkpoint (restored before this hook): continue the random starts' stream.
            self._train_generator.set_state(self._restored_train_generator)
            self._restored_train_generator = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["advlab_train_generator"] = self._train_generator.get_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._restored_train_generator = checkpoint.get("advlab_train_generator")

    def training_step(self, batch, batch_idx: int) -> Tensor:
        x, y = batch[0], batch[1]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                clean_pred = self(x).argmax(dim=1)
        finally:
            self.model.train(was_training)
        x_adv, targets = self.training_batch(batch)
        logits_adv = self(x_adv)
        loss = self.loss(logits_adv, targets)
        if self.mix_clean > 0:
            loss = (1.0 - self.mix_clean) * loss + self.mix_clean * self.loss(self(x), targets)
        self.log_dict(
            {
                "train_loss": loss,
                "train_acc": (clean_pred == y).float().mean(),
                "train_adv_acc": (logits_adv.argmax(dim=1) == y).float().mean(),
            },
            on_step=False,
            on_epoch=True,
            batch_size=len(x),
            sync_dist=self.several_ranks(),
        )
        return loss

    def on_validation_epoch_start(self) -> None:
        self._eval_generator = torch.Generator().manual_seed(self.seed + _VAL_SEED_OFFSET)

    def on_test_epoch_start(self) -> None:
        self._eval_generator = torch.Generator().manual_seed(self.seed + _VAL_SEED_OFFSET)

    def _evaluate(self, batch, prefix: str) -> None:
        super()._evaluate(batch, prefix)
        if not self.val_attack:
            return
        # Lightning evaluates under inference_mode, where autograd is unavailable;
        # leave it and copy the batch out of inference tensors to take input gradients.
        with torch.inference_mode(False), torch.enable_grad():
            x, y = batch[0].clone(), batch[1].clone()
            x_adv = self.attack(x, y, self._eval_generator)
        with torch.no_grad():
            adv_acc = (self(x_adv).argmax(dim=1) == y).float().mean()
        self.log(f"{prefix}_adv_acc", adv_acc, on_step=False, on_epoch=True, batch_size=len(x))


@dataclass
class AdversarialTrainResult(TrainResult):
    """:class:`TrainResult` plus the robust validation accuracy of the kept epoch.

    ``history`` has two more columns, ``train_adv_acc`` and ``val_adv_acc``;
    ``best_val_acc`` is the clean ``val_acc`` of the kept epoch."""

    best_val_adv_acc: float = math.nan


class _RobustRecorder(RecorderState):
    """Per-epoch adversarial metrics, and the best state by ``val_adv_acc`` (ties:
    higher ``val_acc``, then lower ``val_loss``)."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.best_state: dict[str, Tensor] | None = None
        self.best_epoch = -1
        self.best_score = (-math.inf, -math.inf, -math.inf)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics

        def get(key: str) -> float:
            return float(metrics[key]) if key in metrics else math.nan

        row = {"epoch": trainer.current_epoch, "train_adv_acc": get("train_adv_acc"), "val_adv_acc": get("val_adv_acc")}
        self.rows.append(row)
        if math.isnan(row["val_adv_acc"]):
            return
        score = (row["val_adv_acc"], get("val_acc"), -get("val_loss"))
        if score > self.best_score:
            self.best_score = score
            self.best_epoch = row["epoch"]
            self.best_state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}


def fit_adversarial(
    model: nn.Module,
    datamodule: pl.LightningDataModule,
    *,
    method: str = "pgd",
    eps: float = 0.3,
    steps: int = 40,
    step_size: float | None = None,
    norm: str = "linf",
    random_start: bool = True,
    mix_clean: float = 0.0,
    val_attack: bool = True,
    eps_warmup_epochs: float = 0.0,
    epochs: int,
    seed: int = 0,
    accelerator: str = "auto",
    deterministic: bool = True,
    enable_progress_bar: bool = False,
    callbacks: list[pl.Callback] | None = None,
    log_dir: str | Path | None = None,
    resume_dir: str | Path | None = None,
    resume: bool = False,
    fingerprint: dict | None = None,
    devices: int = 1,
    strategy: str = "auto",
    **optim,
) -> AdversarialTrainResult:
    """Adversarial training of ``model`` with :class:`AdversarialClassifier`; see
    :func:`advlab.training.fit_module` for seeding, logging and the returned weights.

    The kept epoch is the one with the best ``val_adv_acc`` (robust accuracy under
    the training attack on the validation set; ties: higher clean ``val_acc``, then
    lower ``val_loss``). With ``val_attack=False`` it is the best clean ``val_acc``;
    without a validation set, the last epoch. ``model`` is left holding the kept
    weights, in eval mode. ``optim``: the optimiser settings of :class:`NaturalClassifier`
    (``lr`` required). ``resume_dir``, ``resume``, ``fingerprint``: resume points, as in
    :func:`advlab.training.fit_module` (the random starts' generator is in them too); ``devices``,
    ``strategy``: data-parallel training, as there.
    """
    module = AdversarialClassifier(
        model,
        method=method,
        norm=norm,
        eps=eps,
        steps=steps,
        step_size=step_size,
        random_start=random_start,
        mix_clean=mix_clean,
        seed=seed,
        val_attack=val_attack,
        eps_warmup_epochs=eps_warmup_epochs,
        **optim,
    )
    recorder = _RobustRecorder()
    result = fit_module(
        module,
        datamodule,
        epochs=epochs,
        seed=seed,
        accelerator=accelerator,
        deterministic=deterministic,
        enable_progress_bar=enable_progress_bar,
        callbacks=[recorder, *(callbacks or [])],
        log_dir=log_dir,
        resume_dir=resume_dir,
        resume=resume,
        fingerprint=fingerprint,
        devices=devices,
        strategy=strategy,
    )
    # Both recorders write one row per epoch, at the same hook.
    robust = pd.DataFrame(recorder.rows, columns=["epoch", "train_adv_acc", "val_adv_acc"])
    history = result.history.merge(robust, on="epoch", how="left")

    best_state, best_epoch, best_val_acc = result.best_state_dict, result.best_epoch, result.best_val_acc
    if recorder.best_state is not None:  # val_adv_acc was measured: it decides
        best_state, best_epoch = recorder.best_state, recorder.best_epoch
        model.load_state_dict(best_state)
        model.eval()
        best_val_acc = float(history.loc[history["epoch"] == best_epoch, "val_acc"].iloc[0])
    best_val_adv_acc = float(history.loc[history["epoch"] == best_epoch, "val_adv_acc"].iloc[0])
    return AdversarialTrainResult(best_state, best_epoch, best_val_acc, history, result.seconds,
                                  world_size=result.world_size, best_val_adv_acc=best_val_adv_acc)
