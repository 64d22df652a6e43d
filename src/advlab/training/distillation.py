"""Defensive distillation (Papernot et al. 2016), as in Carlini's re-implementation.

``nn_robust_attacks/train_models.py::train_distillation``:

1. the teacher is trained with the loss on ``logits / T`` against the hard labels;
2. soft labels = ``softmax(teacher_logits / T)`` on the training points;
3. the student is trained with the loss on ``logits / T`` against the soft labels;
4. the student is deployed at T = 1, i.e. its raw logits are used.

Training at T and testing at 1 is the whole mechanism: the student's logits come out
about T times larger than a natural network's, so its softmax saturates and the
gradients of softmax/cross-entropy losses vanish. (Carlini also starts teacher and
student from the same one-epoch warm-up weights; here the caller builds both models,
e.g. with the same ``init_seed``.)
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .classifier import NaturalClassifier
from .datamodule import ArrayDataModule
from . import resume as _resume
from .fit import TrainResult, fit_module

__all__ = ["DistilledClassifier", "TemperatureScaled", "fit_distillation", "soft_labels"]


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not t > 0 or t == float("inf"):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    return t


class TemperatureScaled(nn.Module):
    """``model`` at temperature T: ``forward(x) = model(x) / T`` (logits out).

    The wrapped model is shared, not copied. Use it for the teacher's predictions at
    T, or to look at a distilled network the way it was trained; the distilled model
    itself is deployed unwrapped (T = 1).
    """

    def __init__(self, model: nn.Module, temperature: float) -> None:
        super().__init__()
        self.model = model
        # A plain float: no state_dict entry, no device to follow.
        self.temperature = _check_temperature(temperature)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x) / self.temperature

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}"


class DistilledClassifier(NaturalClassifier):
    """Training at temperature T: the loss is ``CE(logits / T, targets)``.

    ``targets`` are hard class indices (the teacher) or probability vectors (the
    student; cross-entropy with probabilities, ``-sum(p * log_softmax(logits / T))``).
    ``self.model`` stays the plain logits network, so the weights that come out are
    the T = 1 model, with no wrapper inside.

    Logged: ``train_loss`` and ``val_loss`` both at T (the quantity optimised, so the
    two curves are comparable; the validation targets are the hard labels), and
    ``train_acc`` / ``val_acc`` on the raw logits (the argmax is the same at any T > 0,
    so this is the deployed T = 1 accuracy).
    """

    def __init__(self, model: nn.Module, *, temperature: float = 100.0, lr: float, **options) -> None:
        super().__init__(model, lr=lr, **options)
        self.temperature = _check_temperature(temperature)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        return F.cross_entropy(logits / self.temperature, targets)

    def _evaluate(self, batch, prefix: str) -> None:
        x, y = batch[0], batch[1]
        logits = self(x)
        hard = y if y.ndim == 1 else y.argmax(dim=1)
        self.log_dict(
            {f"{prefix}_loss": self.loss(logits, y), f"{prefix}_acc": (logits.argmax(dim=1) == hard).float().mean()},
            on_step=False,
            on_epoch=True,
            batch_size=len(x),
        )


@torch.no_grad()
def soft_labels(teacher: nn.Module, x: Tensor, T: float, *, batch_size: int = 1000) -> Tensor:
    """``softmax(teacher(x) / T)``, float32 ``[N, C]`` on ``x``'s device.

    Computed in eval mode (the teacher's mode is restored), without gradients, in
    batches on the teacher's device. Ordinary tensors, not inference tensors, so they
    can serve as training targets.
    """
    T = _check_temperature(T)
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = next((t.device for t in (*teacher.parameters(), *teacher.buffers())), x.device)
    scaled = TemperatureScaled(teacher, T)
    was_training = teacher.training
    teacher.eval()
    try:
        out = [
            F.softmax(scaled(x[i : i + batch_size].to(device)).float(), dim=1).to(x.device)
            for i in range(0, len(x), batch_size)
        ]
    finally:
        teacher.train(was_training)
    if not out:
        raise ValueError("soft_labels of an empty x")
    return torch.cat(out)


class _SoftTrainDataModule(ArrayDataModule):
    """The same split as ``ArrayDataModule(x_train, y_train, **kw)``, but the training
    points carry ``soft_train`` (rows in the order of ``self.x_train``); validation and
    test keep their hard labels, so ``val_acc`` is accuracy against the true labels."""

    def __init__(self, x_train: Tensor, y_train: Tensor, soft_train: Tensor, **kw) -> None:
        super().__init__(x_train, y_train, **kw)
        if soft_train.ndim != 2 or len(soft_train) != self.n_train:
            raise ValueError(f"soft_train must be [{self.n_train}, C], got {tuple(soft_train.shape)}")
        self.y_train = soft_train


# A finished teacher, kept in the resume folder until the student has finished too.
_TEACHER_FILE = "teacher.pt"


def _save_teacher(path: Path, fingerprint: dict, result: TrainResult) -> None:
    history = {"columns": list(result.history.columns), "rows": result.history.to_dict(orient="list")}
    _resume.atomic_save({"fingerprint": fingerprint, "best_state_dict": result.best_state_dict,
                         "best_epoch": result.best_epoch, "best_val_acc": result.best_val_acc,
                         "history": history, "seconds": result.seconds}, path)


def _remove_teacher(resume_dir: Path) -> None:
    for name in (_TEACHER_FILE, _TEACHER_FILE + ".tmp"):  # .tmp: a write that was killed
        (resume_dir / name).unlink(missing_ok=True)


def _load_teacher(path: Path, fingerprint: dict) -> TrainResult | None:
    """The finished teacher saved at ``path`` if it is this fit's; else None (with a warning when
    there was one that cannot be used)."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved["fingerprint"] != fingerprint:
            raise ValueError("it is another fit's teacher")
        history = pd.DataFrame(saved["history"]["rows"], columns=saved["history"]["columns"])
        return TrainResult(saved["best_state_dict"], saved["best_epoch"], saved["best_val_acc"], history,
                           saved["seconds"])
    except Exception as exc:  # unreadable or another fit's: train the teacher again
        warnings.warn(f"finished teacher {path} cannot be used ({type(exc).__name__}: {exc}); training it again",
                      _resume.ResumeWarning, stacklevel=3)
        return None


def _fit_teacher(module: DistilledClassifier, datamodule: ArrayDataModule, *, epochs: int,
                 resume_dir: Path | None, resume: bool, fingerprint: dict | None, fit_kw: dict,
                 log_dir: Path | None) -> TrainResult:
    """The teacher's fit; with ``resume_dir``, resumable, and kept once finished so that a resumed
    distillation goes straight to the student."""
    if resume_dir is None:
        return fit_module(module, datamodule, epochs=epochs, log_dir=log_dir, **fit_kw)
    described = _resume.fit_fingerprint(module, datamodule, epochs=epochs, seed=fit_kw["seed"],
                                        accelerator=fit_kw["accelerator"], deterministic=fit_kw["deterministic"],
                                        precision="32-true", extra=fingerprint)
    done = resume_dir / _TEACHER_FILE
    saved = _load_teacher(done, described) if resume else None
    if saved is not None:
        print(f"advlab: using the finished teacher {done}", file=sys.stderr)
        module.model.load_state_dict(saved.best_state_dict)
        module.model.eval()
        return saved
    _remove_teacher(resume_dir)
    result = fit_module(module, datamodule, epochs=epochs, log_dir=log_dir, resume_dir=resume_dir / "teacher",
                        resume=resume, fingerprint=fingerprint, **fit_kw)
    _save_teacher(done, described, result)
    return result


def fit_distillation(
    teacher_model: nn.Module,
    student_model: nn.Module,
    x_train: Tensor,
    y_train: Tensor,
    *,
    temperature: float = 100.0,
    epochs: int,
    student_epochs: int | None = None,
    val_fraction: float = 0.1,
    batch_size: int = 128,
    eval_batch_size: int = 1000,
    seed: int = 0,
    accelerator: str = "auto",
    deterministic: bool = True,
    enable_progress_bar: bool = False,
    log_dir: str | Path | None = None,
    resume_dir: str | Path | None = None,
    resume: bool = False,
    fingerprint: dict | None = None,
    **optim,
) -> tuple[TrainResult, TrainResult]:
    """Defensive distillation at ``temperature``; returns ``(teacher_result, student_result)``.

    Both networks are trained with :class:`DistilledClassifier` on the same
    class-stratified train/validation split of ``(x_train, y_train)`` (hard labels,
    ``val_fraction``, ``seed``), with the same optimiser settings and the same seed.
    The teacher learns the hard labels; its soft labels at T (from its best epoch) are
    computed on the training split only; the student learns those, while its
    validation points keep their hard labels. ``student_epochs`` defaults to ``epochs``.

    On return both models hold their best epoch's weights (by ``val_acc``), in eval
    mode, as plain logits networks: the student is the T = 1 deployed model. With
    ``log_dir``, the CSV logs go to ``log_dir/teacher`` and ``log_dir/student``.

    With ``resume_dir``, both fits keep resume points (``resume_dir/teacher``, ``resume_dir/student``;
    see :func:`advlab.training.fit_module` for ``resume`` and ``fingerprint``), and the finished
    teacher is kept (``resume_dir/teacher.pt``) until the student has finished: a distillation
    killed during the student's fit resumes the student, without training the teacher again.
    """
    _check_temperature(temperature)
    dm_kw = {"val_fraction": val_fraction, "batch_size": batch_size, "seed": seed, "eval_batch_size": eval_batch_size}
    options = {"temperature": temperature, **optim}  # optim: NaturalClassifier's optimiser settings
    fit_kw = {"seed": seed, "accelerator": accelerator, "deterministic": deterministic,
              "enable_progress_bar": enable_progress_bar}

    def logs(name: str) -> Path | None:
        return None if log_dir is None else Path(log_dir) / name

    resume_dir = None if resume_dir is None else Path(resume_dir)
    teacher_dm = ArrayDataModule(x_train, y_train, **dm_kw)
    teacher_result = _fit_teacher(DistilledClassifier(teacher_model, **options), teacher_dm, epochs=epochs,
                                  resume_dir=resume_dir, resume=resume, fingerprint=fingerprint, fit_kw=fit_kw,
                                  log_dir=logs("teacher"))

    soft = soft_labels(teacher_model, teacher_dm.x_train, temperature, batch_size=eval_batch_size)
    student_dm = _SoftTrainDataModule(x_train, y_train, soft, **dm_kw)
    student_result = fit_module(
        DistilledClassifier(student_model, **options),
        student_dm,
        epochs=epochs if student_epochs is None else student_epochs,
        log_dir=logs("student"),
        resume_dir=None if resume_dir is None else resume_dir / "student",
        resume=resume,
        fingerprint=fingerprint,
        **fit_kw,
    )
    if resume_dir is not None:  # resume points are scratch: the finished teacher goes too
        _remove_teacher(resume_dir)
        _resume.clear(resume_dir)
    return teacher_result, student_result
