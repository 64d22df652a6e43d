"""Atomic file output: write to a temporary name beside the target, then rename.

An interrupted stage therefore never leaves a file that looks finished to Snakemake or DVC.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ordinary_mode(path: Path, directory: bool = False) -> None:
    """mkstemp / mkdtemp create private files; outputs get the usual umask-based modes."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())


def _temp_prefix(path: Path) -> str:
    """`.<name>.<host>-<pid>.`: whose temporary it is, so that leftovers of killed writers can go."""
    return f".{path.name}.{_host()}-{os.getpid()}."


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporaries of `path` left by writers on this host that were killed (SIGKILL skips
    every cleanup). Neither Snakemake nor DVC takes them for outputs; this only reclaims space."""
    removed = []
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.{re.escape(_host())}-(\d+)\..*\.tmp$")
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        match = pattern.match(entry.name)
        if match and not pid_alive(int(match.group(1))):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        _ordinary_mode(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder; it replaces `path` as a whole on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        _ordinary_mode(tmp, directory=True)
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def atomic_write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _plain(value):
    """JSON-safe plain values (numpy / torch scalars included); floats kept exactly."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(path, data: dict) -> None:
    atomic_write_text(path, json.dumps(_plain(data), indent=2, sort_keys=True) + "\n")


def read_json(path) -> dict:
    with open(path) as fh:
        return json.load(fh)


def torch_save(obj, path: Path) -> None:
    """torch.save through an open file: given a path, torch names the zip's inner folder after the
    (here temporary, random) file name, and the same tensors would give other bytes on every run."""
    with open(path, "wb") as fh:
        torch.save(obj, fh)


def save_tensors(path, tensors: dict) -> None:
    """Plain tensors only, so that `load_tensors` can use weights_only=True."""
    with atomic_path(path) as tmp:
        torch_save({k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in tensors.items()}, tmp)


def load_tensors(path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing; run the stage that makes it first")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, altered, or pickle-bearing: refuse, never execute
        raise ValueError(f"{path}: not a readable tensor file ({type(exc).__name__}: {exc})") from exc


def save_model(path, model, meta: dict) -> None:
    """A trained model as an advlab checkpoint, through the same atomic write as every output
    (so a killed writer's temporary is recognised and removed like any other)."""
    from advlab.models import checkpoint_payload

    with atomic_path(path) as tmp:
        torch_save(checkpoint_payload(model, meta), tmp)


def write_csv(path, frame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.9g")
