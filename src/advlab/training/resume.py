"""Resume points for fits killed mid-epoch: one ``last.ckpt`` per fit, bit-identical continuation.

A resume point is written at the start of every epoch after the first, i.e. once the previous
epoch is completely over (validation, history row, best-state bookkeeping and the epoch's
LR-scheduler step all done). It holds Lightning's usual checkpoint (weights, optimiser,
schedulers, loop counters, callback and datamodule state, the data sampler's and the random
starts' generators) plus the global RNG states at that point; a resumed fit restores them at
the same point, so it draws the same random numbers (shuffles, dropout, random starts) as an
uninterrupted one.

``fingerprint.json`` beside it describes the fit; a resume point of any other fit (other data,
settings, initial weights, thread count...) is discarded with a :class:`ResumeWarning`, as is an
unreadable one: a stale resume folder must never block a run. Resume points are scratch, not
outputs: :func:`clear` removes them once the fit has finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins import TorchCheckpointIO

CHECKPOINT = "last.ckpt"
FINGERPRINT = "fingerprint.json"
# What this module may write into a resume folder, and so what it may delete there.
_OWN_FILES = (CHECKPOINT, CHECKPOINT + ".tmp", FINGERPRINT, FINGERPRINT + ".tmp")


class ResumeWarning(UserWarning):
    """A resume point was discarded (another fit's, or unreadable): the fit starts from scratch."""


# -- writing ----------------------------------------------------------------------------------------


def atomic_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename over it: a process killed
    mid-write leaves the previous file whole (and at worst a stray ``.tmp``)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic on the local disk. (Lightning's own goes through an
    fsspec transaction whose temporary file lives in the system temp folder and is then moved, i.e.
    copied when that is another file system, onto the target: a kill during the copy truncates it.)"""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(checkpoint, path)


# -- RNG states ---------------------------------------------------------------------------------------


def rng_states() -> dict[str, Any]:
    """The global RNG states of torch (CPU, and CUDA when present), numpy and ``random``, as types
    that ``torch.load(weights_only=True)`` accepts (numpy's key array becomes a tensor)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(_as_tuples(states["python"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _as_tuples(value):
    # random.setstate wants tuples all the way down; a checkpoint round trip keeps them, but be lenient.
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _replay_loader_iterator_draw() -> None:
    """The torch RNG draw that an uninterrupted fit makes after the epoch-start hooks, when Lightning
    creates the epoch's training iterator: ``torch.utils.data``'s iterator takes its base seed from
    the default generator. A resumed Lightning creates that iterator at set-up, before the states
    are restored, so the draw is replayed here; the test suite checks the outcome bit for bit."""
    torch.empty((), dtype=torch.int64).random_()


class ResumePoint(pl.Callback):
    """Writes ``path`` at the start of every epoch but the first; after a resume, restores the RNG
    states saved there. Must be the first callback, so that nothing else has drawn random numbers
    yet at that point of an epoch start."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._restored_rng: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        # Called by trainer.save_checkpoint, i.e. at the resume point itself.
        return {"rng": rng_states()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Applied at the next epoch start, where they were saved: Lightning restores callbacks long
        # before training resumes, and set-up code in between (hooks, configure_optimizers) may draw.
        self._restored_rng = state_dict["rng"]

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._restored_rng is not None:
            set_rng_states(self._restored_rng)
            self._restored_rng = None
            _replay_loader_iterator_draw()
            # The point on disk is this one. (Saving again would record the states after the replay.)
            return
        if trainer.current_epoch > 0:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        # Saved as epoch k+1 begins, Lightning's loop state reads "epoch k+1 ready, not started", which a
        # resumed Lightning takes for a restart inside that epoch: it would skip the epoch's batches.
        # Record the equivalent state "epoch k complete, nothing of k+1 begun", from which Lightning
        # starts epoch k+1 afresh (as when a finished fit is continued to more epochs).
        try:
            progress = checkpoint["loops"]["fit_loop"]["epoch_progress"]
            expected = all(progress[p]["ready"] == progress[p]["started"] + 1 for p in ("total", "current"))
        except (KeyError, TypeError):
            expected = False
        if not expected:
            raise RuntimeError(f"advlab's resume points do not know this pytorch_lightning {pl.__version__}'s loop "
                               f"state at an epoch start: {checkpoint.get('loops', {}).get('fit_loop')}")
        for part in ("total", "current"):
            progress[part]["ready"] = progress[part]["started"]


# -- fingerprints -------------------------------------------------------------------------------------


def tensor_digest(tensors: Iterable[torch.Tensor]) -> str:
    """SHA-256 of the tensors' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def _data_fields(datamodule: pl.LightningDataModule) -> dict[str, Any]:
    """What defines the batches: the split tensors (ArrayDataModule's), batch size and seed."""
    names = [n for n in ("x_train", "y_train", "x_val", "y_val")
             if isinstance(getattr(datamodule, n, None), torch.Tensor)]
    fields: dict[str, Any] = {"class": type(datamodule).__qualname__}
    if names:
        fields["tensors"] = tensor_digest(getattr(datamodule, n) for n in names)
    for key in ("batch_size", "seed"):
        if hasattr(datamodule, key):
            fields[key] = getattr(datamodule, key)
    return fields


def fit_fingerprint(module: pl.LightningModule, datamodule: pl.LightningDataModule, *, epochs: int, seed: int,
                    accelerator: str, deterministic: bool, precision: str | int,
                    extra: dict | None = None) -> dict[str, Any]:
    """What a continuation must share with the interrupted fit to be bit-identical to an
    uninterrupted one: the module (class, hyperparameters, model class and *initial* weights),
    the data, the fit's settings, the thread count and the library versions; plus ``extra``,
    whatever the caller adds (e.g. its config and a data checksum). JSON-ready."""
    model = getattr(module, "model", module)
    fields = {
        "module": type(module).__qualname__,
        "hparams": dict(getattr(module, "hparams", {})),
        "model": type(model).__qualname__,
        "initial_weights": tensor_digest(model.state_dict().values()),
        "data": _data_fields(datamodule),
        "epochs": int(epochs),
        "seed": int(seed),
        "accelerator": str(accelerator),
        "cuda": torch.cuda.is_available(),
        "deterministic": bool(deterministic),
        "precision": str(precision),
        # CPU float results depend on the thread count: another count cannot continue bit-identically.
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "pytorch_lightning": pl.__version__},
        "caller": extra or {},
    }
    return json.loads(json.dumps(fields, sort_keys=True, default=str))  # canonical, comparable with a reload


def _read_fingerprint(folder: Path) -> dict | None:
    try:
        return json.loads((folder / FINGERPRINT).read_text())
    except (OSError, ValueError):
        return None


def _differences(old: dict | None, new: dict) -> str:
    if old is None:
        return f"no readable {FINGERPRINT}"
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return "differs in " + ", ".join(keys)


# -- the resume folder --------------------------------------------------------------------------------


def clear(folder: str | Path) -> None:
    """Delete this module's files in ``folder``, then the folder if that left it empty."""
    folder = Path(folder)
    for name in _OWN_FILES:
        (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # absent, or holds something else (e.g. distillation's sub-folders): keep it


def _start_fresh(folder: Path, fingerprint: dict) -> None:
    clear(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (FINGERPRINT + ".tmp")
    tmp.write_text(json.dumps(fingerprint, indent=1, sort_keys=True))
    os.replace(tmp, folder / FINGERPRINT)


def prepare(folder: str | Path, fingerprint: dict, resume: bool) -> Path | None:
    """Make ``folder`` ready for a fit described by ``fingerprint``; the checkpoint to resume from,
    or None to start from scratch.

    Without ``resume``, any old resume point is deleted. With it, ``last.ckpt`` is used when it is
    this fit's (same fingerprint) and readable; otherwise it is discarded with a :class:`ResumeWarning`.
    """
    folder = Path(folder)
    ckpt = folder / CHECKPOINT
    if not resume or not ckpt.exists():
        _start_fresh(folder, fingerprint)
        return None
    old = _read_fingerprint(folder)
    if old != fingerprint:
        warnings.warn(f"resume point {ckpt} is from another fit ({_differences(old, fingerprint)}); "
                      f"discarding it and training from scratch", ResumeWarning, stacklevel=3)
        _start_fresh(folder, fingerprint)
        return None
    try:
        torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, unpicklable: any of them means "not usable"
        warnings.warn(f"resume point {ckpt} is unreadable ({type(exc).__name__}: {exc}); "
                      f"discarding it and training from scratch", ResumeWarning, stacklevel=3)
        _start_fresh(folder, fingerprint)
        return None
    return ckpt
