"""Model files: architecture + state_dict + metadata, loaded without unpickling code.

Layout (plain types and tensors only)::

    {"format": "advlab-checkpoint/1", "arch": str, "arch_kwargs": dict,
     "state_dict": {name: tensor}, "meta": dict}
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import torch
from torch import nn

from .layers import ImageClassifier
from .registry import MODEL_NAMES, build_model

FORMAT = "advlab-checkpoint/1"


class CheckpointError(ValueError):
    """A file that is not a usable advlab checkpoint; the message names the file."""


def checkpoint_payload(model: nn.Module, meta: dict | None = None) -> dict:
    """What a checkpoint file holds for ``model`` (built by :func:`build_model`) and ``meta``:
    plain types and tensors only, for writers that place the file themselves."""
    if not isinstance(model, ImageClassifier) or not hasattr(model, "arch_kwargs"):
        raise TypeError("save_checkpoint needs a model made by advlab.models.build_model")
    meta = {} if meta is None else meta
    _check_plain(meta, "meta")
    return {
        "format": FORMAT,
        "arch": model.arch,
        "arch_kwargs": model.arch_kwargs,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "meta": meta,
    }


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict | None = None) -> Path:
    """Write ``model`` (built by :func:`build_model`) and ``meta`` to ``path`` atomically.

    The file appears under its final name only once it is complete: it is written
    to a temporary file in the same directory, flushed to disk and renamed.
    """
    path = Path(path)
    payload = checkpoint_payload(model, meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so the rename is atomic; "x" mode: never clobber another writer's file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[ImageClassifier, dict]:
    """Rebuild the model stored at ``path`` and return ``(model in eval mode, meta)``.

    Loading uses ``torch.load(weights_only=True)``: a file that would need to run
    code to unpickle is refused, not executed.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc).lower() or "unsupported global" in str(exc).lower():
            reason = "refused: it holds objects other than tensors and plain containers (weights_only=True)"
        else:
            reason = "unreadable: truncated, corrupt, or not written by torch.save"
        raise CheckpointError(f"{path}: {reason} ({type(exc).__name__}: {first_line})") from exc

    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: not an advlab checkpoint (expected format {FORMAT!r}, found {found!r})")
    missing = [k for k in ("arch", "arch_kwargs", "state_dict", "meta") if k not in payload]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)}")
    arch, arch_kwargs, state = payload["arch"], payload["arch_kwargs"], payload["state_dict"]
    if arch not in MODEL_NAMES:
        raise CheckpointError(f"{path}: unknown architecture {arch!r} (known: {', '.join(MODEL_NAMES)})")
    try:
        model = build_model(arch, **arch_kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: cannot build {arch!r} from its stored arch_kwargs: {exc}") from exc

    _check_fits(path, arch, model.state_dict(), state)
    model.load_state_dict(state)
    model.to(map_location)
    model.eval()
    return model, payload["meta"]


def _check_fits(path: Path, arch: str, expected: dict, found: dict) -> None:
    for key, tensor in expected.items():
        if key not in found:
            raise CheckpointError(f"{path}: state_dict does not fit arch {arch!r}: missing key {key!r}")
        if tuple(found[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: state_dict does not fit arch {arch!r}: key {key!r} has shape "
                f"{tuple(found[key].shape)}, the architecture needs {tuple(tensor.shape)}"
            )
    for key in found:
        if key not in expected:
            raise CheckpointError(f"{path}: state_dict does not fit arch {arch!r}: unexpected key {key!r}")


def _check_plain(value, where: str) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: keys must be str, got {k!r}")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"{where} is a {type(value).__name__}; checkpoint metadata must be plain "
        f"(dict, list, str, int, float, bool, None)"
    )
