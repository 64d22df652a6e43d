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


def load_model(preset: str, model_id: str):
    """The trained model `model_id` of `preset` (CPU, eval mode) and its meta, refused unless it is
    what its file name says: a checkpoint is self-describing, so a file copied from another model
    or preset, or trained on other data, would otherwise load and be attacked under a wrong name."""
    from advlab.models import CheckpointError, load_checkpoint

    path = paths.path(paths.MODEL, preset=preset, model=model_id)
    model, meta = load_checkpoint(path)
    found = meta.get("model")
    if found != model_id:
        raise CheckpointError(f"{path}: holds model {found!r} (architecture {model.arch!r}), expected {model_id!r}; "
                              f"rerun the stage that trains {model_id!r}")
    if meta.get("preset") != preset:
        raise CheckpointError(f"{path}: trained for preset {meta.get('preset')!r}, expected {preset!r}")
    prepared = paths.path(paths.PREPARED_META, preset=preset)
    if prepared.exists() and meta.get("data_checksum") != read_json(prepared)["checksum"]:
        raise CheckpointError(f"{path}: trained on other data (checksum {str(meta.get('data_checksum'))[:12]}…) "
                              f"than {prepared}; rerun its training stage")
    return model, meta


def load_frozen(preset: str, model_id: str, dev: torch.device | None = None) -> torch.nn.Module:
    """A trained model as an attack target: on `dev`, in eval mode, parameters without gradients
    (attacks differentiate with respect to the input only)."""
    model, _ = load_model(preset, model_id)
    model = model.to(dev or device()).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
