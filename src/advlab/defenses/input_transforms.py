"""Input transformations of Guo et al. (2018) as attacked by Athalye et al. (2018).

Follows ``anishathalye/obfuscated-gradients: inputtransformations/defense.py``:

* bit-depth reduction (``defend_reduce``): ``uint8(255 x)`` (truncation), keep the top
  ``bits`` bits, divide by 255. With 3 bits the 8 levels are 0, 32, ..., 224 over 255:
  white becomes 224/255, exactly as in the reference.
* JPEG round trip (``defend_jpeg``): ``uint8(255 x)`` (truncation), encode at quality
  75, decode, divide by 255. Done with ``torchvision.io.encode_jpeg`` / ``decode_jpeg``
  on the list of images (their batched form); 1 or 3 channels; computed on the CPU.
* total-variance minimisation (``defend_tv``): keep each pixel with probability
  ``keep_prob`` (one mask per image, shared by its channels, as the reference's
  ``mask`` over H x W), then solve

      min_z  sum_kept (z - x)^2 + lambda_tv * TV(z),   TV(z) = sum |z_{i+1,j} - z_{i,j}| + |z_{i,j+1} - z_{i,j}|

  per image and channel. The reference calls a split-Bregman solver with weight
  2/lambda_tv, which minimises this same objective (anisotropic TV: it shrinks the x
  and y differences separately). Here it is solved, batched, by a fixed number of
  Chambolle-Pock primal-dual iterations (exact prox of both terms, no smoothing of
  |.|). Deviation: the reference starts its iterations from the *full* image, so the
  dropped pixels' true values leak into the result; here they start from the mean of
  the image's kept pixels, so the output depends on the kept pixels only. The result
  is clipped to [0, 1].

Each is a :class:`~advlab.defenses.bpda.Defense`; BPDA uses the identity (g(x) ~ x),
as Athalye et al. do for all of Guo et al.'s defences.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .bpda import Defense, RandomDefense, attach_zero_grad

__all__ = [
    "JPEG",
    "BitDepth",
    "TVMinimization",
    "jpeg_round_trip",
    "random_pixel_mask",
    "reduce_bit_depth",
    "tv_reconstruct",
]


def _to_uint8_values(x: Tensor) -> Tensor:
    # numpy's astype(uint8) on 255*x truncates; keep that (not round) to match the reference.
    return torch.floor(x.clamp(0.0, 1.0) * 255.0)


def reduce_bit_depth(x: Tensor, bits: int = 3) -> Tensor:
    """``defend_reduce``: keep the top ``bits`` of ``uint8(255 x)``; 2**bits levels in [0, 1].

    Differentiable in the torch sense with gradient zero (floor), so a naive attack sees 0.
    """
    if isinstance(bits, bool) or int(bits) != bits or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer in 1..8, got {bits!r}")
    step = float(2 ** (8 - int(bits)))
    return torch.floor(_to_uint8_values(x) / step) * step / 255.0


def jpeg_round_trip(x: Tensor, quality: int = 75, *, rounding: str = "floor") -> Tensor:
    """``defend_jpeg``: encode ``uint8(255 x)`` as JPEG at ``quality`` and decode; no gradient.

    ``rounding="floor"`` truncates to 8 bits as the reference's ``astype(uint8)`` does;
    ``"round"`` rounds (a camera's file; the print-and-photo simulation)."""
    if isinstance(quality, bool) or int(quality) != quality or not 1 <= quality <= 100:
        raise ValueError(f"quality must be an integer in 1..100, got {quality!r}")
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"JPEG needs an NCHW batch with 1 or 3 channels, got shape {tuple(x.shape)}")
    if rounding not in ("floor", "round"):
        raise ValueError(f"rounding must be 'floor' or 'round', got {rounding!r}")
    from torchvision.io import decode_jpeg, encode_jpeg

    with torch.no_grad():
        x = x.detach()
        values = _to_uint8_values(x) if rounding == "floor" else torch.round(x.clamp(0.0, 1.0) * 255.0)
        encoded = encode_jpeg(list(values.to("cpu", torch.uint8)), quality=int(quality))
        decoded = decode_jpeg(encoded)
        out = torch.stack(decoded).to(device=x.device, dtype=x.dtype) / 255.0
    return out


def random_pixel_mask(x: Tensor, keep_prob: float, generator: torch.Generator) -> Tensor:
    """Bool [N, 1, H, W]: each pixel kept independently with ``keep_prob`` (shared by channels)."""
    n, _, h, w = x.shape
    u = torch.rand((n, 1, h, w), generator=generator, device=generator.device)
    return (u < keep_prob).to(x.device)


def _grad2d(z: Tensor) -> tuple[Tensor, Tensor]:
    return z[..., :, 1:] - z[..., :, :-1], z[..., 1:, :] - z[..., :-1, :]


def _grad2d_adjoint(px: Tensor, py: Tensor) -> Tensor:
    # K^T p for K = forward differences with no wrap-around: (K^T p)_j = p_{j-1} - p_j.
    pad = nn.functional.pad
    return pad(px, (1, 0)) - pad(px, (0, 1)) + pad(py, (0, 0, 1, 0)) - pad(py, (0, 0, 0, 1))


def tv_reconstruct(x: Tensor, mask: Tensor, lambda_tv: float = 0.03, steps: int = 100) -> Tensor:
    """Minimise ``sum(mask * (z - x)^2) + lambda_tv * TV_aniso(z)`` by ``steps`` Chambolle-Pock steps.

    ``mask`` (bool, broadcastable to ``x``) marks the kept pixels. Batched over all
    images and channels; differentiable through the unrolled iterations (that is the
    exact defence's own gradient; BPDA replaces it by the identity). With
    ``lambda_tv = 0`` and every pixel kept the output is ``x``. Clipped to [0, 1].
    """
    if not (math.isfinite(lambda_tv) and lambda_tv >= 0):
        raise ValueError(f"lambda_tv must be a finite number >= 0, got {lambda_tv}")
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    m = mask.to(x.dtype).expand_as(x)
    kept = m.sum(dim=(2, 3), keepdim=True)
    fill = (m * x).sum(dim=(2, 3), keepdim=True) / kept.clamp_min(1.0)
    z = m * x + (1.0 - m) * fill
    z_bar = z
    px = x.new_zeros(*x.shape[:-1], x.shape[-1] - 1)
    py = x.new_zeros(*x.shape[:-2], x.shape[-2] - 1, x.shape[-1])
    # ||K||^2 <= 8 for 2-D forward differences; sigma * tau * 8 = 1.
    tau = sigma = 1.0 / math.sqrt(8.0)
    lam = float(lambda_tv)
    for _ in range(int(steps)):
        gx, gy = _grad2d(z_bar)
        px = (px + sigma * gx).clamp(-lam, lam)
        py = (py + sigma * gy).clamp(-lam, lam)
        z_old = z
        v = z - tau * _grad2d_adjoint(px, py)
        z = (v + 2.0 * tau * m * x) / (1.0 + 2.0 * tau * m)
        z_bar = 2.0 * z - z_old
    return z.clamp(0.0, 1.0)


class BitDepth(Defense):
    """``classifier(reduce_bit_depth(x, bits))``; exact gradient 0, BPDA identity."""

    def __init__(self, classifier: nn.Module, *, bits: int = 3) -> None:
        super().__init__(classifier)
        reduce_bit_depth(torch.zeros(1), bits)  # validate now, not at the first call
        self.bits = int(bits)

    def transform(self, x: Tensor) -> Tensor:
        return reduce_bit_depth(x, self.bits)

    def extra_repr(self) -> str:
        return f"bits={self.bits}"


class JPEG(Defense):
    """``classifier(jpeg_round_trip(x, quality))``; exact gradient 0, BPDA identity."""

    def __init__(self, classifier: nn.Module, *, quality: int = 75) -> None:
        super().__init__(classifier)
        if isinstance(quality, bool) or int(quality) != quality or not 1 <= quality <= 100:
            raise ValueError(f"quality must be an integer in 1..100, got {quality!r}")
        self.quality = int(quality)

    def transform(self, x: Tensor) -> Tensor:
        return attach_zero_grad(jpeg_round_trip(x, self.quality), x)

    def extra_repr(self) -> str:
        return f"quality={self.quality}"


class TVMinimization(RandomDefense):
    """``classifier(tv_reconstruct(x, random mask))``: Guo et al.'s pixel-drop + TV defence.

    A fresh mask per image on every call (from ``self.generator``). The exact forward
    is differentiable through the unrolled solver; BPDA uses the identity; attack it
    with EoT (``eot_samples`` > 1) over the masks.
    """

    def __init__(
        self,
        classifier: nn.Module,
        *,
        keep_prob: float = 0.5,
        lambda_tv: float = 0.03,
        steps: int = 100,
        seed: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(classifier, seed=seed, generator=generator)
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
        tv_reconstruct(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2, dtype=torch.bool), lambda_tv, steps)
        self.keep_prob = float(keep_prob)
        self.lambda_tv = float(lambda_tv)
        self.steps = int(steps)

    def transform(self, x: Tensor) -> Tensor:
        mask = random_pixel_mask(x, self.keep_prob, self.generator)
        return tv_reconstruct(x, mask, self.lambda_tv, self.steps)

    def extra_repr(self) -> str:
        return f"keep_prob={self.keep_prob}, lambda_tv={self.lambda_tv}, steps={self.steps}, seed={self.seed}"
