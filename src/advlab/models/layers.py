"""Building blocks shared by every architecture."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; mean and std are buffers, so they live in the state_dict.

    Keeping normalisation inside the model lets attacks work in the [0, 1] image space.
    """

    def __init__(
        self,
        in_channels: int,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", _per_channel(mean, 0.0, in_channels, "mean"))
        self.register_buffer("std", _per_channel(std, 1.0, in_channels, "std"))
        if not bool((self.std > 0).all()):
            raise ValueError(f"std must be positive, got {self.std.flatten().tolist()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _per_channel(value, default: float, channels: int, what: str) -> torch.Tensor:
    if value is None:
        value = default
    values = [float(value)] if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise ValueError(f"{what} has {len(values)} values for {channels} input channels")
    return torch.tensor(values, dtype=torch.float32).view(channels, 1, 1)


class ImageClassifier(nn.Module):
    """``net(normalize(x))``: images in [0, 1], NCHW, in; logits out.

    ``arch`` and ``arch_kwargs`` are what :func:`build_model` was called with, so a
    checkpoint can rebuild the same module before loading its state_dict.
    """

    def __init__(self, net: nn.Module, normalize: Normalize, *, arch: str, arch_kwargs: dict) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net
        self.arch = arch
        self.arch_kwargs = arch_kwargs

    @property
    def input_shape(self) -> tuple[int, int, int]:
        size = self.arch_kwargs["image_size"]
        h, w = (size, size) if isinstance(size, int) else size
        return (self.arch_kwargs["in_channels"], h, w)

    @property
    def num_classes(self) -> int:
        return self.arch_kwargs["num_classes"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


class GlobalAvgPool(nn.Module):
    """Mean over H and W. Unlike AdaptiveAvgPool2d its backward is deterministic on CUDA."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))
