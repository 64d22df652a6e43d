"""Seeded, quiet Lightning fits that keep the best epoch's weights in memory."""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn

from . import resume as _resume
from .classifier import NaturalClassifier

HISTORY_COLUMNS = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc", "seconds", "lr"]


@dataclass
class TrainResult:
    """What a fit produced. ``best_state_dict`` is the wrapped model's (not the
    LightningModule's) state_dict on the CPU; epochs count from 0, as in Lightning."""

    best_state_dict: dict[str, torch.Tensor]
    best_epoch: int
    best_val_acc: float  # NaN when there was no validation set
    history: pd.DataFrame  # one row per epoch, HISTORY_COLUMNS
    seconds: float  # wall time of the whole fit
    world_size: int = 1  # processes that trained (DDP ranks), as Lightning counted them


class RecorderState(pl.Callback):
    """The state of a recorder callback: its ``rows``, ``best_state``, ``best_epoch`` and ``best_score``.
    Lightning keeps a callback's ``state_dict`` in checkpoints, so a resumed fit carries on the
    history and the best-epoch bookkeeping (see :func:`fit_module`'s ``resume_dir``)."""

    rows: list[dict]
    best_state: dict[str, torch.Tensor] | None
    best_epoch: int
    best_score: tuple[float, ...]

    def state_dict(self) -> dict:
        return {"rows": self.rows, "best_state": self.best_state, "best_epoch": self.best_epoch,
                "best_score": self.best_score}

    def load_state_dict(self, state_dict: dict) -> None:
        self.rows = [dict(r) for r in state_dict["rows"]]
        self.best_state, self.best_epoch = state_dict["best_state"], state_dict["best_epoch"]
        self.best_score = tuple(state_dict["best_score"])


class _EpochRecorder(RecorderState):
    """Per-epoch history and the best state by ``val_acc`` (ties: lower ``val_loss``).

    Runs at train-epoch end, after the epoch's validation, so ``seconds`` covers
    training and validation of that epoch.
    """

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = -1
        self.best_score = (-math.inf, -math.inf)
        self._t0 = 0.0
        self._lr = math.nan

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._t0 = time.perf_counter()
        self._lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else math.nan

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = trainer.callback_metrics

        def get(key: str) -> float:
            return float(metrics[key]) if key in metrics else math.nan

        row = {
            "epoch": trainer.current_epoch,
            "train_loss": get("train_loss"),
            "train_acc": get("train_acc"),
            "val_loss": get("val_loss"),
            "val_acc": get("val_acc"),
            "seconds": time.perf_counter() - self._t0,
            "lr": self._lr,
        }
        self.rows.append(row)
        # Highest val_acc; on a tie (common with small validation sets), lower val_loss.
        # Without validation, the last epoch is the one kept.
        if math.isnan(row["val_acc"]):
            score = (math.inf, math.inf)
        else:
            score = (row["val_acc"], -row["val_loss"])
        if score > self.best_score or math.isinf(score[0]):
            self.best_score = score
            self.best_epoch = row["epoch"]
            self.best_state = {k: v.detach().cpu().clone() for k, v in pl_module.model.state_dict().items()}


@contextlib.contextmanager
def _quiet_and_restored():
    """Silence Lightning's banners and tips; undo its global determinism switches."""
    loggers = [logging.getLogger(n) for n in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch")]
    levels = [lg.level for lg in loggers]
    det = torch.are_deterministic_algorithms_enabled()
    det_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
            warnings.filterwarnings("ignore", message=r".*is smaller than the logging interval.*")
            warnings.filterwarnings("ignore", message=r".*exists and is not empty.*")
            # Printed wherever SLURM's tools are installed, even outside any job.
            warnings.filterwarnings("ignore", message=r".*The `srun` command is available on your system.*")
            # DDP: every rank validates on the whole validation set with the same weights (ArrayDataModule).
            warnings.filterwarnings("ignore", message=r".*It is recommended to use `self.log\('val_.*sync_dist=True.*")
            # Lightning 2.6 still uses torch's deprecated LeafSpec internally.
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*", category=FutureWarning)
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        torch.use_deterministic_algorithms(det, warn_only=det_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn


def make_trainer(
    stack: contextlib.ExitStack,
    *,
    epochs: int,
    accelerator: str,
    deterministic: bool,
    callbacks: list[pl.Callback],
    log_dir: str | Path | None,
    enable_progress_bar: bool = False,
    validate: bool = True,
    precision: str | int = "32-true",
    plugins: list | None = None,
    devices: int = 1,
    strategy: str = "auto",
) -> pl.Trainer:
    """The one Trainer set-up of advlab's fits: ``devices`` processes (one by default; more with
    DDP, see :func:`fit_module`), no checkpoints or model summary,
    no sanity validation; with ``log_dir``, Lightning's ``CSVLogger`` writes directly into it,
    else a temporary root (closed with ``stack``) and no logger. (Resume points are written by
    a callback, :class:`advlab.training.resume.ResumePoint`, not by Lightning's checkpointing.)"""
    if log_dir is None:
        root = stack.enter_context(tempfile.TemporaryDirectory(prefix="advlab-fit-"))
        logger: CSVLogger | bool = False
    else:
        root = str(log_dir)
        logger = CSVLogger(save_dir=root, name="", version="")
    return pl.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        # Several processes: ArrayDataModule shards each batch itself (same batches as one process).
        use_distributed_sampler=devices == 1,
        precision=precision,
        deterministic=deterministic,
        logger=logger,
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=enable_progress_bar,
        num_sanity_val_steps=0,
        limit_val_batches=None if validate else 0,
        log_every_n_steps=1,
        default_root_dir=root,
        plugins=plugins,
    )


def fit_module(
    module: NaturalClassifier,
    datamodule: pl.LightningDataModule,
    *,
    epochs: int,
    seed: int = 0,
    accelerator: str = "auto",
    deterministic: bool = True,
    enable_progress_bar: bool = False,
    callbacks: list[pl.Callback] | None = None,
    log_dir: str | Path | None = None,
    precision: str | int = "32-true",
    resume_dir: str | Path | None = None,
    resume: bool = False,
    fingerprint: dict | None = None,
    devices: int = 1,
    strategy: str = "auto",
) -> TrainResult:
    """Train ``module`` (a :class:`NaturalClassifier` or subclass) for ``epochs``.

    Seeds everything with ``seed`` first. Keeps the weights of the epoch with the
    best ``val_acc`` in memory (Lightning's own checkpointing is off) and loads them back
    into ``module.model``, which is left in eval mode. With ``log_dir``, Lightning's
    ``CSVLogger`` writes ``metrics.csv`` and ``hparams.yaml`` directly into it.

    With ``resume_dir``, a resume point ``last.ckpt`` is kept there, rewritten after every epoch
    (see :mod:`advlab.training.resume`). With ``resume=True`` a fit killed earlier carries
    on from it and ends exactly as an uninterrupted fit would on the same device and thread count
    (history rows, best epoch, weights; only ``seconds`` differ), provided it is the same fit:
    ``fingerprint`` (the caller's description of it, JSON-able) and what ``fit_module`` sees
    itself (module, hyperparameters, initial weights, data, settings) must match, else the old
    point is discarded with a :class:`~advlab.training.resume.ResumeWarning`, as is an unreadable
    one. With ``resume=False`` an old resume point is deleted. The folder's files are removed
    once the fit has finished.

    ``devices`` > 1 trains data-parallel in that many processes (``strategy`` "ddp", also what
    "auto" means then; on the CPU they communicate through gloo and share the torch threads).
    Lightning starts the other ranks by running the calling command again; they leave the process
    with ``SystemExit(0)`` once the fit is done, so that only rank 0 returns and writes results.
    Each global batch is the one a single process would take, split across the ranks, so the fit
    follows the single-process one up to float rounding. The world size is checked after the fit
    (inside a one-task SLURM job Lightning would otherwise silently train in one process). Resume
    points are not kept for such fits.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if devices < 1:
        raise ValueError(f"devices must be >= 1, got {devices}")
    if strategy not in ("auto", "ddp"):
        raise ValueError(f"strategy must be 'auto' or 'ddp', got {strategy!r}")
    distributed = devices > 1
    if distributed and resume_dir is not None:
        if resume:
            warnings.warn("resume points are not kept for multi-process (DDP) fits: this fit starts afresh",
                          _resume.ResumeWarning, stacklevel=2)
        resume_dir, resume = None, False
    recorder = _EpochRecorder()
    no_val = getattr(datamodule, "n_val", 1) == 0
    all_callbacks: list[pl.Callback] = [recorder, *(callbacks or [])]
    plugins, ckpt_path = None, None
    if resume_dir is not None:
        resume_dir = Path(resume_dir)
        described = _resume.fit_fingerprint(module, datamodule, epochs=epochs, seed=seed, accelerator=accelerator,
                                            deterministic=deterministic, precision=precision, extra=fingerprint)
        ckpt_path = _resume.prepare(resume_dir, described, resume)
        # First, so that its RNG states are those before any other epoch-start hook.
        all_callbacks.insert(0, _resume.ResumePoint(resume_dir / _resume.CHECKPOINT))
        plugins = [_resume.AtomicCheckpointIO()]
    with contextlib.ExitStack() as stack:
        stack.enter_context(_quiet_and_restored())
        if distributed:
            plugins = _ddp_plugins(devices)
        pl.seed_everything(seed, workers=True, verbose=False)
        trainer = make_trainer(stack, epochs=epochs, accelerator=accelerator, deterministic=deterministic,
                               callbacks=all_callbacks, log_dir=log_dir, enable_progress_bar=enable_progress_bar,
                               validate=not no_val, precision=precision, plugins=plugins, devices=devices,
                               strategy="ddp" if distributed else "auto")
        if distributed and trainer.accelerator.__class__.__name__ == "CPUAccelerator":
            # The ranks share the cores a single process would have had.
            stack.callback(torch.set_num_threads, torch.get_num_threads())
            torch.set_num_threads(max(1, torch.get_num_threads() // devices))
        if ckpt_path is not None:
            print(f"advlab: resuming the fit from {ckpt_path}", file=sys.stderr)
        t0 = time.perf_counter()
        # weights_only: the resume point holds tensors, numbers, strings and containers only.
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
        seconds = time.perf_counter() - t0
        world_size = trainer.world_size
        if world_size != devices:
            raise RuntimeError(f"the fit ran in {trainer.world_size} process(es), not the {devices} asked for "
                               f"(cluster environment: {type(trainer.strategy.cluster_environment).__name__})")
        if trainer.global_rank != 0:
            raise SystemExit(0)  # a copy of the calling command started by Lightning: rank 0 goes on alone

    if recorder.best_state is None:
        raise RuntimeError("training ended before the first epoch completed")
    if resume_dir is not None:
        _resume.clear(resume_dir)  # scratch, not an output
    model: nn.Module = module.model
    model.load_state_dict(recorder.best_state)
    model.eval()
    history = pd.DataFrame(recorder.rows, columns=HISTORY_COLUMNS)
    best_val_acc = math.nan if no_val else recorder.best_score[0]
    return TrainResult(recorder.best_state, recorder.best_epoch, best_val_acc, history, seconds, world_size)


def _ddp_plugins(devices: int) -> list | None:
    """Inside a SLURM job whose step has fewer tasks than ``devices`` (Snakemake's SLURM executor
    runs every rule as a one-task step), Lightning would take SLURM's task count as the world and
    train in one process without a word. Then Lightning itself starts the ranks on this node."""
    from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment

    if SLURMEnvironment.detect():
        import os

        if int(os.environ.get("SLURM_NTASKS", "1")) < devices:
            return [LightningEnvironment()]
    return None


def fit_classifier(
    model: nn.Module,
    datamodule: pl.LightningDataModule,
    *,
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
) -> TrainResult:
    """Natural (clean-data, cross-entropy) training of ``model``; see :func:`fit_module`
    (also for ``resume_dir``, ``resume``, ``fingerprint``, ``devices`` and ``strategy``).

    ``optim``: the optimiser settings of :class:`NaturalClassifier` (``lr`` required;
    ``optimizer``, ``momentum``, ``weight_decay``, ``lr_schedule``, ...), its one definition.
    """
    module = NaturalClassifier(model, **optim)
    return fit_module(
        module,
        datamodule,
        epochs=epochs,
        seed=seed,
        accelerator=accelerator,
        deterministic=deterministic,
        enable_progress_bar=enable_progress_bar,
        callbacks=callbacks,
        log_dir=log_dir,
        resume_dir=resume_dir,
        resume=resume,
        fingerprint=fingerprint,
        devices=devices,
        strategy=strategy,
    )
