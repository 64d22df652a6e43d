"""The in-memory dataset every other layer consumes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

_TENSOR_FIELDS = ("x_train", "y_train", "x_test", "y_test")


# eq=False: tensors have no single truth value, so field-wise __eq__ would raise.
@dataclass(frozen=True, eq=False)
class Dataset:
    """Images as float32 NCHW in [0, 1], labels as int64."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    name: str
    classes: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.dtype != torch.float32 or x.ndim != 4:
                raise ValueError(f"x_{split} must be float32 NCHW, got {x.dtype} {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.ndim != 1 or len(y) != len(x):
                raise ValueError(f"y_{split} must be int64 of length {len(x)}, got {y.dtype} {tuple(y.shape)}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(
                f"train and test images differ in shape: {tuple(self.x_train.shape[1:])} "
                f"vs {tuple(self.x_test.shape[1:])}"
            )
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(f"{len(self.classes)} class names for {self.num_classes} classes")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(channels, height, width)."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int | tuple[int, int]:
        """Side length for square images (what ``build_model`` takes), else (H, W)."""
        h, w = self.x_train.shape[2:]
        return int(h) if h == w else (int(h), int(w))

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, train={len(self.x_train)}, test={len(self.x_test)}, "
            f"image_shape={self.image_shape}, num_classes={self.num_classes})"
        )


def dataset_checksum(ds: Dataset) -> str:
    """sha256 over name, dtype, shape and bytes of the four tensors, in a fixed order.

    Identical content gives an identical digest regardless of how it was loaded;
    ``ds.name`` is not hashed, so the same arrays under two names agree.
    """
    h = hashlib.sha256()
    for field in _TENSOR_FIELDS:
        t = getattr(ds, field).detach().cpu().contiguous()
        h.update(f"{field}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(np.ascontiguousarray(t.numpy()).tobytes())
    return h.hexdigest()
