"""Training killed mid-epoch (SIGKILL) resumes from its last resume point when asked, and ends
bit-identical to an uninterrupted fit on the CPU: weights, best epoch, history (but `seconds`)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from advlab.data import load_dataset
from advlab.models import build_model
from advlab.training import ArrayDataModule, DistilledClassifier, fit_adversarial, fit_classifier, fit_distillation
from advlab.training.resume import CHECKPOINT, FINGERPRINT, ResumeWarning
from tests.conftest import ROOT, stage_env, tool

pytestmark = [pytest.mark.faults_interruption, pytest.mark.usefixtures("one_thread")]

EPOCHS = 4
KILL_EPOCH, KILL_BATCH = 2, 2  # 270 training images in batches of 64: 5 batches an epoch
MADRY = {"eps": 0.2, "steps": 3, "step_size": 0.1}


# -- the fits (built identically here and in the killed child) ---------------------------------------


def _data():
    return load_dataset("mnist5k", n_train=300, n_test=50, seed=0)


def _dm(ds) -> ArrayDataModule:
    return ArrayDataModule(ds.x_train, ds.y_train, val_fraction=0.1, batch_size=64, seed=0)


def _dropout_mlp() -> nn.Module:
    """Dropout draws from the global torch RNG every step: it tests that stream's restoration."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10))


def _fit(kind: str, ds, callbacks=(), accelerator: str = "cpu", **resume):
    """``natural``: an epoch-wise LR schedule (stepped after the epoch ends) and dropout;
    ``madry``: PGD training from random starts (its own generator) on fc100_100;
    ``distilled``: a teacher, then a student (two fits). ``resume``: fit_*'s resume arguments."""
    cb = list(callbacks) or None
    if kind == "natural":
        return fit_classifier(_dropout_mlp(), _dm(ds), epochs=EPOCHS, seed=0, lr=0.05, optimizer="sgd",
                              lr_schedule="step", lr_step_size=1, lr_gamma=0.7, accelerator=accelerator, callbacks=cb,
                              **resume)
    if kind == "madry":
        model = build_model("fc100_100", in_channels=1, image_size=28, init_seed=0)
        return fit_adversarial(model, _dm(ds), **MADRY, epochs=EPOCHS, seed=0, lr=1e-3,
                               accelerator=accelerator, callbacks=cb, **resume)
    if kind == "distilled":
        def mlp():
            return build_model("fc100_100", in_channels=1, image_size=28, init_seed=0)
        return fit_distillation(mlp(), mlp(), ds.x_train, ds.y_train, temperature=20, epochs=EPOCHS, batch_size=64,
                                seed=0, lr=1e-3, accelerator=accelerator, **resume)
    raise ValueError(kind)


class _Die(pl.Callback):
    """SIGKILL this process at the ``hits``-th time it reaches one batch: no cleanup, like the OOM
    killer. (Distillation reaches each batch twice: in the teacher's fit, then in the student's.)"""

    def __init__(self, epoch: int, batch: int, hits: int = 1) -> None:
        self.epoch, self.batch, self.hits = epoch, batch, hits

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            self.hits -= 1
            if self.hits == 0:
                os.kill(os.getpid(), signal.SIGKILL)


class _Crash(pl.Callback):
    """An ordinary exception at one batch (in-process stand-in for a kill: faster, same files)."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == KILL_EPOCH and batch_idx == KILL_BATCH:
            raise RuntimeError("crash")


class _Epochs(pl.Callback):
    """The epochs a fit actually trained, and whether a resume point existed as it began."""

    def __init__(self, resume_dir: Path | None = None) -> None:
        self.started: list[int] = []
        self.resume_dir = resume_dir
        self.point_at_start: bool | None = None

    def on_train_start(self, trainer, pl_module) -> None:
        if self.resume_dir is not None:
            self.point_at_start = (self.resume_dir / CHECKPOINT).exists()

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.started.append(trainer.current_epoch)


def _child(kind: str, resume_dir: str, hits: str = "1", accelerator: str = "cpu") -> None:
    """Entry point of the killed child: the same fit, with a resume point, killed at KILL_EPOCH."""
    torch.set_num_threads(1)  # as the one_thread fixture: the fingerprint holds the thread count
    ds = _data()
    die = _Die(KILL_EPOCH, KILL_BATCH, int(hits))
    if kind == "distilled":  # fit_distillation takes no callbacks: kill from its module's training step
        step = DistilledClassifier.training_step

        def training_step(self, batch, batch_idx):
            die.on_train_batch_start(self.trainer, self, batch, batch_idx)
            return step(self, batch, batch_idx)

        DistilledClassifier.training_step = training_step
        _fit(kind, ds, accelerator=accelerator, resume_dir=resume_dir)
    else:
        _fit(kind, ds, [die], accelerator=accelerator, resume_dir=resume_dir)
    raise SystemExit("the child was not killed")


def _kill_mid_fit(kind: str, resume_dir: Path, hits: int = 1, accelerator: str = "cpu") -> None:
    code = "import sys; from tests.faults.test_resume import _child; _child(*sys.argv[1:])"
    out = subprocess.run([sys.executable, "-c", code, kind, str(resume_dir), str(hits), accelerator], cwd=ROOT,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == -signal.SIGKILL, f"child ended with {out.returncode}:\n{out.stderr[-3000:]}"


# -- comparisons -------------------------------------------------------------------------------------


def _assert_same(result, reference) -> None:
    assert result.best_epoch == reference.best_epoch
    assert result.best_state_dict.keys() == reference.best_state_dict.keys()
    for name, tensor in reference.best_state_dict.items():
        assert torch.equal(result.best_state_dict[name], tensor), name
    columns = [c for c in reference.history.columns if c != "seconds"]
    pd.testing.assert_frame_equal(result.history[columns], reference.history[columns], check_exact=True)


@pytest.fixture(scope="module")
def ds():
    return _data()


@pytest.fixture(scope="module")
def reference() -> dict:
    """Uninterrupted fits without resume points (as before resume existed), each made once, when needed."""
    return {}


def _reference(reference: dict, kind: str, ds):
    if kind not in reference:
        reference[kind] = _fit(kind, ds)
    return reference[kind]


# -- killed, then resumed ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["natural", "madry"])
def test_killed_fit_resumes_bit_identical(tmp_path, ds, reference, kind):
    resume_dir = tmp_path / "resume"
    _kill_mid_fit(kind, resume_dir)
    assert (resume_dir / CHECKPOINT).exists() and (resume_dir / FINGERPRINT).exists()

    epochs = _Epochs()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeWarning)  # the point must be used, not discarded
        resumed = _fit(kind, ds, [epochs], resume_dir=resume_dir, resume=True)
    # The point was written when epoch KILL_EPOCH began: the resumed fit trains from there.
    assert epochs.started == list(range(KILL_EPOCH, EPOCHS))
    _assert_same(resumed, _reference(reference, kind, ds))
    assert list(resumed.history["epoch"]) == list(range(EPOCHS))
    assert not resume_dir.exists(), "resume points are scratch: removed after a finished fit"


@pytest.mark.gpu
@pytest.mark.parametrize("kind", ["natural", "madry"])
def test_killed_fit_resumes_bit_identical_on_gpu(tmp_path, ds, kind):
    """On CUDA with deterministic=True (the default), the CUDA RNG state travels too."""
    reference = _fit(kind, ds, accelerator="gpu")
    resume_dir = tmp_path / "resume"
    _kill_mid_fit(kind, resume_dir, accelerator="gpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeWarning)
        resumed = _fit(kind, ds, accelerator="gpu", resume_dir=resume_dir, resume=True)
    _assert_same(resumed, reference)


def test_uninterrupted_fit_with_resume_dir_is_unchanged(tmp_path, ds, reference):
    """Writing resume points (and asking to resume with none there) changes nothing in the fit."""
    result = _fit("natural", ds, resume_dir=tmp_path / "resume", resume=True)
    _assert_same(result, _reference(reference, "natural", ds))
    assert not (tmp_path / "resume").exists()


def test_resume_false_deletes_the_old_point_and_starts_over(tmp_path, ds, reference):
    resume_dir = tmp_path / "resume"
    with pytest.raises(RuntimeError, match="crash"):
        _fit("natural", ds, [_Crash()], resume_dir=resume_dir)
    assert (resume_dir / CHECKPOINT).exists()

    epochs = _Epochs(resume_dir)
    result = _fit("natural", ds, [epochs], resume_dir=resume_dir, resume=False)
    assert epochs.point_at_start is False, "the old resume point was still there when training began"
    assert epochs.started == list(range(EPOCHS))
    _assert_same(result, _reference(reference, "natural", ds))
    assert not resume_dir.exists()


def _point_of_another_fit(resume_dir: Path, ds) -> None:
    # Same module and data, another learning rate: a resume point that must not be continued.
    with pytest.raises(RuntimeError, match="crash"):
        fit_classifier(_dropout_mlp(), _dm(ds), epochs=EPOCHS, seed=0, lr=0.01, optimizer="sgd", lr_schedule="step",
                       lr_step_size=1, lr_gamma=0.7, accelerator="cpu", callbacks=[_Crash()], resume_dir=resume_dir)


def _truncated_point(resume_dir: Path, ds) -> None:
    with pytest.raises(RuntimeError, match="crash"):
        _fit("natural", ds, [_Crash()], resume_dir=resume_dir)
    ckpt = resume_dir / CHECKPOINT
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])


@pytest.mark.parametrize(("spoil", "message"), [(_point_of_another_fit, r"another fit \(differs in hparams\)"),
                                                (_truncated_point, "unreadable")])
def test_unusable_point_is_discarded_with_a_warning(tmp_path, ds, reference, spoil, message):
    resume_dir = tmp_path / "resume"
    spoil(resume_dir, ds)
    epochs = _Epochs()
    with pytest.warns(ResumeWarning, match=message) as caught:
        result = _fit("natural", ds, [epochs], resume_dir=resume_dir, resume=True)
    assert str(resume_dir / CHECKPOINT) in str(caught[0].message)
    assert epochs.started == list(range(EPOCHS))
    _assert_same(result, _reference(reference, "natural", ds))


@pytest.mark.parametrize(("hits", "trained"), [(1, "teacher from epoch 2, then the student"),
                                               (2, "only the student, from epoch 2")])
def test_killed_distillation_resumes_bit_identical(tmp_path, ds, reference, monkeypatch, hits, trained):
    """Killed in the teacher's fit (first kill point) or in the student's (second): the teacher
    resumes, or is taken finished from the resume folder; the student follows."""
    resume_dir = tmp_path / "resume"
    _kill_mid_fit("distilled", resume_dir, hits=hits)
    assert (resume_dir / ("teacher.pt" if hits == 2 else "teacher")).exists()

    started: list[tuple[int, int]] = []
    step = DistilledClassifier.on_train_epoch_start
    monkeypatch.setattr(DistilledClassifier, "on_train_epoch_start",
                        lambda self: (started.append((id(self.model), self.current_epoch)), step(self))[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResumeWarning)
        teacher, student = _fit("distilled", ds, resume_dir=resume_dir, resume=True)
    fits = list(dict.fromkeys(module for module, _ in started))
    epochs = [[e for m, e in started if m == module] for module in fits]
    expected = {1: [[2, 3], [0, 1, 2, 3]], 2: [[2, 3]]}[hits]
    assert epochs == expected, trained
    ref_teacher, ref_student = _reference(reference, "distilled", ds)
    _assert_same(teacher, ref_teacher)
    _assert_same(student, ref_student)
    assert not resume_dir.exists()


# -- the train stage, killed from outside ------------------------------------------------------------


def _stage(project: Path, *args: str, **env) -> subprocess.CompletedProcess:
    out = subprocess.run([tool("python"), "-m", "pipeline.train", *args], cwd=project, capture_output=True,
                         text=True, env=stage_env(ADVLAB_THREADS="1", **env), timeout=300)
    assert out.returncode == 0, f"{out.args} failed:\n{out.stderr[-4000:]}"
    return out


def _kill_when_exists(proc: subprocess.Popen, path: Path, timeout: float = 180) -> None:
    """SIGKILL ``proc`` as soon as ``path`` exists (it appears whole: written aside, then renamed)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"finished before the kill:\n{proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)


def test_train_stage_killed_then_rerun_with_advlab_resume(tmp_path, smoke_project):
    """`python -m pipeline.train --model lenet` SIGKILLed once its first resume point is on disk, then
    rerun with ADVLAB_RESUME=1: it carries on, and writes the metrics of an uninterrupted run."""
    import yaml

    from tests.faults.conftest import clone

    project = clone(smoke_project, tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["epochs"] = 4  # the point appears when epoch 1 begins: three epochs left to kill in
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    model, metrics = project / "models/smoke/lenet.pt", project / "metrics/smoke/train/lenet.json"
    history = project / "results/smoke/train/lenet/history.csv"
    point = project / "checkpoints/smoke/train/lenet"

    _stage(project, "--model", "lenet")  # uninterrupted, 4 epochs
    expected_metrics, expected_history = metrics.read_bytes(), pd.read_csv(history)
    assert not point.exists(), "a finished fit leaves no resume point"
    for output in (model, metrics, history):
        output.unlink()

    proc = subprocess.Popen([tool("python"), "-m", "pipeline.train", "--model", "lenet"], cwd=project,
                            env=stage_env(ADVLAB_THREADS="1"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _kill_when_exists(proc, point / CHECKPOINT)
    assert proc.returncode == -signal.SIGKILL
    assert not model.exists() and not metrics.exists()
    assert (point / CHECKPOINT).exists()
    for ignores in (["git", "check-ignore", "-q"], [tool("dvc"), "check-ignore", "-q"]):  # scratch, not data
        assert subprocess.run([*ignores, str(point / CHECKPOINT)], cwd=project).returncode == 0, ignores

    out = _stage(project, "--model", "lenet", ADVLAB_RESUME="1")
    assert "resuming the fit from" in out.stderr and str(point / CHECKPOINT) in out.stderr
    assert metrics.read_bytes() == expected_metrics
    compared = [c for c in expected_history.columns if c != "seconds"]
    pd.testing.assert_frame_equal(pd.read_csv(history)[compared], expected_history[compared], check_exact=True)
    assert not point.exists(), "the resume point is removed once the fit has finished"
