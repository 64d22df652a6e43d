"""Reading the pipeline's own artifacts back, with checks (checksums, clear messages)."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from pipeline import paths
from pipeline.io import load_tensors, read_json


@dataclass(frozen=True)
class Prepared:
    x_train: torch.Tensor  # float32 NCHW in [0, 1]
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    meta: dict

    @property
    def num_classes(self) -> int:
        return int(self.meta["num_classes"])


def tensors_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes in a fixed order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous().cpu()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Sources are 8-bit images, so storing them as uint8 is exact and 4x smaller."""
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def load_prepared(preset: str) -> Prepared:
    tensor_path = paths.path(paths.PREPARED_TENSORS, preset=preset)
    meta = read_json(paths.path(paths.PREPARED_META, preset=preset))
    raw = load_tensors(tensor_path)
    expected = {"x_train", "y_train", "x_test", "y_test"}
    if set(raw) != expected:
        raise ValueError(f"{tensor_path}: holds {sorted(raw)}, expected {sorted(expected)}")
    found = tensors_checksum(raw)
    if found != meta["checksum"]:
        raise ValueError(
            f"{tensor_path}: checksum mismatch (file {found[:12]}…, meta.json {meta['checksum'][:12]}…); "
            "the prepared data was altered or truncated: rerun the prepare_data stage"
        )
    return Prepared(
        x_train=raw["x_train"].float() / 255,
        y_train=raw["y_train"].long(),
        x_test=raw["x_test"].float() / 255,
        y_test=raw["y_test"].long(),
        meta=meta,
    )


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_frozen(path, dev: torch.device | None = None) -> torch.nn.Module:
    """A checkpoint as an attack target: on `dev`, in eval mode, parameters without gradients
    (attacks differentiate with respect to the input only)."""
    from advlab.models import load_checkpoint

    model, _ = load_checkpoint(path)
    model = model.to(dev or device()).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
