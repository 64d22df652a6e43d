"""Random resizing and padding (Xie et al. 2018), after Athalye et al.'s ``randomization/defense.py``.

The reference (ImageNet, 299 px) draws r uniformly from the integers [299, 331),
resizes the image to r x r with ``tf.image.crop_and_resize`` over the whole image
(bilinear, corner-aligned: output pixel j samples input position j (H-1)/(r-1)), then
pads to 331 x 331 with the value 0.5 (Xie et al. do not say; Athalye et al. assume
0.5), the left/top padding uniform in [0, 331 - r). Scaled to small images:
``out_size`` replaces 331 and ``min_size`` (default: the input size) replaces 299,
e.g. MNIST 28 -> r in [28, 32) -> 32 x 32, CIFAR 32 -> r in [32, 36) -> 36 x 36.
The classifier must accept ``out_size`` images (build it with ``image_size=out_size``
and train it on randomised inputs, or use a size-agnostic network).

Deviation: the reference draws one (r, offsets) per call for its batch of one; here
every image of a batch gets its own draw (fresh on every call), so a batch of
replicas is a batch of independent EoT samples. Resizing and padding are done in
one ``grid_sample`` per batch; the padding region is set to ``pad_value`` exactly.
The map is differentiable (only the draw is random): attack it with EoT, not BPDA
(``forward_bpda`` is the exact forward).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .bpda import RandomDefense

__all__ = ["RandomResizePad", "random_resize_pad"]


def random_resize_pad(
    x: Tensor, sizes: Tensor, top: Tensor, left: Tensor, out_size: int, pad_value: float = 0.5
) -> Tensor:
    """Resize image i of ``x`` to ``sizes[i]`` (bilinear, corner-aligned) and place it at
    (``top[i]``, ``left[i]``) on an ``out_size`` canvas filled with ``pad_value``.

    ``sizes``, ``top``, ``left``: int64 [N] with ``top + sizes <= out_size`` (same for left).
    """
    n, _, h, w = x.shape
    dev, dt = x.device, x.dtype
    u = torch.arange(out_size, device=dev, dtype=dt)
    r = sizes.to(dev, dt).view(n, 1)
    jy = u.view(1, -1) - top.to(dev, dt).view(n, 1)  # position inside the resized image
    jx = u.view(1, -1) - left.to(dev, dt).view(n, 1)
    inside_y = (jy >= 0) & (jy <= r - 1)
    inside_x = (jx >= 0) & (jx <= r - 1)
    # align_corners=True: -1 and +1 are the centres of the first and last input pixels.
    gy = 2.0 * jy / (r - 1) - 1.0
    gx = 2.0 * jx / (r - 1) - 1.0
    grid = torch.stack(torch.broadcast_tensors(gx.view(n, 1, -1), gy.view(n, -1, 1)), dim=-1)
    sampled = nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
    inside = (inside_y.view(n, 1, -1, 1) & inside_x.view(n, 1, 1, -1))
    return torch.where(inside, sampled, torch.full_like(sampled, float(pad_value)))


class RandomResizePad(RandomDefense):
    """``classifier(random_resize_pad(x))`` with r ~ U{min_size, ..., out_size - 1} per image."""

    def __init__(
        self,
        classifier: nn.Module,
        *,
        out_size: int,
        min_size: int | None = None,
        pad_value: float = 0.5,
        seed: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(classifier, seed=seed, generator=generator)
        if isinstance(out_size, bool) or int(out_size) != out_size or out_size < 3:
            raise ValueError(f"out_size must be an integer >= 3, got {out_size!r}")
        if min_size is not None and (int(min_size) != min_size or not 2 <= min_size < out_size):
            raise ValueError(f"min_size must be an integer in [2, out_size), got {min_size!r}")
        if not 0.0 <= pad_value <= 1.0:
            raise ValueError(f"pad_value must be in [0, 1], got {pad_value}")
        self.out_size = int(out_size)
        self.min_size = None if min_size is None else int(min_size)
        self.pad_value = float(pad_value)

    def draw(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Sizes, top and left offsets (int64 [N]) for a batch like ``x``, from the generator."""
        n, _, h, w = x.shape
        lo = self.min_size if self.min_size is not None else max(h, w)
        if not 2 <= lo < self.out_size:
            raise ValueError(f"images of {h}x{w} px need out_size > {lo} (got out_size {self.out_size})")
        g = self.generator
        sizes = torch.randint(lo, self.out_size, (n,), generator=g, device=g.device)
        room = (self.out_size - sizes).to(torch.float64)  # >= 1: offsets in [0, room)
        top = (torch.rand(n, generator=g, device=g.device, dtype=torch.float64) * room).floor().long()
        left = (torch.rand(n, generator=g, device=g.device, dtype=torch.float64) * room).floor().long()
        return sizes, top, left

    def transform(self, x: Tensor) -> Tensor:
        sizes, top, left = self.draw(x)
        return random_resize_pad(x, sizes, top, left, self.out_size, self.pad_value)

    def forward_bpda(self, x: Tensor) -> Tensor:
        return self.forward(x)

    def extra_repr(self) -> str:
        return f"out_size={self.out_size}, min_size={self.min_size}, pad_value={self.pad_value}, seed={self.seed}"
