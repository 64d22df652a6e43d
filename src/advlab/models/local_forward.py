"""Forward passes of images that differ from a known image in one pixel, computing only
what the pixel can change.

A change at one input pixel reaches, through a convolution or pooling with kernel k and
stride s, only a window of about k/s outputs per axis, and through a per-position layer
(normalisation, batch norm in eval mode, ReLU) only itself. So for a batch of one-pixel
variants of cached images, each layer is run on a small patch: the cached clean input of
that layer around the pixel, with the variant's window of changed values pasted in, under
the layer's own kernel, stride and padding. Once the window covers the whole map (or a
layer is not spatially local: flatten, linear, global pooling, anything unknown), the
window is pasted into a copy of the cached clean activation and the rest of the network
runs as usual. A batch norm (eval mode) right after a convolution is folded into it. The
result is the network's output on the changed image; only the float rounding differs
from a full forward (patch convolutions sum in another order; folded batch norms round
once instead of twice): differences in the last bits.

On the small CIFAR-10 nets of the one-pixel attack most multiply-adds sit in the early,
full-resolution layers, where the window is 3-8 positions wide: that is the saving.

Supported: a model ``m`` with ``m.normalize`` and an ``nn.Sequential`` ``m.net`` (every
:class:`~advlab.models.layers.ImageClassifier`) or a plain ``nn.Sequential``, in eval mode.
Spatially local layers handled: ``Conv2d`` (zero padding, dilation 1, any groups),
``MaxPool2d`` (dilation 1), ``AvgPool2d``, and per-position layers (``Normalize``,
``BatchNorm2d`` in eval mode, ``ReLU``, ``LeakyReLU``, ``ELU``, ``Tanh``, ``Sigmoid``,
``Identity``, ``Dropout`` in eval mode). See :func:`supports`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as Fn
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .layers import ImageClassifier, Normalize

__all__ = ["LocalForward", "supports"]

_POINTWISE = (
    Normalize, nn.BatchNorm2d, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Tanh, nn.Sigmoid, nn.Identity,
    nn.Dropout, nn.Dropout2d,
)  # fmt: skip


def _layers(model: nn.Module) -> list[nn.Module] | None:
    """The model as a flat list of modules applied in order, or None if its forward is not
    known to be that."""
    if type(model) is ImageClassifier and isinstance(model.net, nn.Sequential):
        seq = [model.normalize, model.net]
    elif type(model) is nn.Sequential:
        seq = [model]
    else:
        return None
    flat: list[nn.Module] = []

    def walk(m: nn.Module) -> None:
        if type(m) is nn.Sequential:
            for child in m:
                walk(child)
        else:
            flat.append(m)

    for m in seq:
        walk(m)
    return flat


def _fold_batch_norm(layers: list[nn.Module]) -> list[nn.Module]:
    """Conv2d followed by an eval-mode BatchNorm2d becomes one Conv2d (a copy; the model is
    untouched): the same affine map, one pass over the activations fewer."""
    out: list[nn.Module] = []
    for layer in layers:
        prev = out[-1] if out else None
        if (type(layer) is nn.BatchNorm2d and not layer.training and layer.running_mean is not None
                and type(prev) is nn.Conv2d):  # fmt: skip
            out[-1] = fuse_conv_bn_eval(prev, layer)
        else:
            out.append(layer)
    return out


def supports(model: nn.Module) -> bool:
    """Whether :class:`LocalForward` can run ``model`` (and save work on it): a known
    sequential layout, eval mode, and at least one spatially local layer first."""
    layers = _layers(model)
    if layers is None or model.training:
        return False
    return bool(layers) and _kind(layers[0]) != "dense"


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _kind(m: nn.Module) -> str:
    if isinstance(m, _POINTWISE) and not m.training:
        return "point"
    if type(m) is nn.Conv2d:
        if m.padding_mode == "zeros" and not isinstance(m.padding, str) and _pair(m.dilation) == (1, 1):
            return "conv"
    if type(m) is nn.MaxPool2d and _pair(m.dilation) == (1, 1) and not m.return_indices:
        return "max"
    if type(m) is nn.AvgPool2d:
        return "avg"
    return "dense"


def _span(size: int, k: int, s: int, p: int, out_len: int) -> int:
    """Per axis: how many outputs a window of ``size`` changed inputs can reach, at most
    (over the window's alignments to the stride). Output o reads padded inputs
    [o*s, o*s + k), i.e. inputs [o*s - p, o*s - p + k)."""
    reach = [(r + size - 1 + p) // s - (-((-(r + p - k + 1)) // s)) + 1 for r in range(s)]
    return min(max(reach), out_len)


def _window_start(start: Tensor, k: int, s: int, p: int, out_len: int, out_size: int) -> Tensor:
    """First output reached from a window starting at ``start`` (per candidate), moved
    back where needed so that ``out_size`` outputs from it stay inside the map."""
    lo = torch.div(start + p - k + s, s, rounding_mode="floor").clamp_min(0)  # ceil((start + p - k + 1) / s)
    return torch.minimum(lo, torch.full_like(lo, out_len - out_size))


class _Step:
    """One spatially local layer: its geometry and its padded clean input (per image)."""

    def __init__(self, module: nn.Module, kind: str, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> None:
        self.module, self.kind = module, kind
        self.k = _pair(module.kernel_size)
        self.s = _pair(module.stride if module.stride is not None else module.kernel_size)
        self.p = _pair(module.padding)
        self.in_hw, self.out_hw = in_hw, out_hw
        # ceil_mode windows can run past the padded input: pad that much more
        extra = [max(0, (o - 1) * s + k - (n + 2 * p)) for o, s, k, n, p in zip(out_hw, self.s, self.k, in_hw, self.p)]
        self.pads = (self.p[1], self.p[1] + extra[1], self.p[0], self.p[0] + extra[0])
        self.padded_hw = (in_hw[0] + self.pads[2] + self.pads[3], in_hw[1] + self.pads[0] + self.pads[1])
        self.chunks: list[Tensor] = []
        if kind == "avg":
            # exact divisor per output position, whatever count_include_pad / ceil_mode / divisor_override say
            ones = torch.ones(1, 1, *in_hw)
            real = Fn.avg_pool2d(ones, self.k, self.s, self.p, module.ceil_mode, True, 1)
            mean = Fn.avg_pool2d(ones, self.k, self.s, self.p, module.ceil_mode, module.count_include_pad,
                                 module.divisor_override)  # fmt: skip
            self.divisor = (real / mean)[0, 0]  # [Ho, Wo]

    def reach(self, size: tuple[int, int]) -> tuple[int, int]:
        return tuple(_span(n, k, s, p, o) for n, k, s, p, o in zip(size, self.k, self.s, self.p, self.out_hw))

    def cache(self, x_in: Tensor) -> None:
        """Keep the padded clean input of a chunk of images, channels last and flat over
        (image, row, col), so that a patch is one row gather."""
        fill = -math.inf if self.kind == "max" else 0.0  # what max / conv / avg padding reads
        padded = Fn.pad(x_in, self.pads, value=fill)
        self.chunks.append(padded.permute(0, 2, 3, 1).reshape(-1, padded.shape[1]))

    def freeze(self) -> None:
        self.padded = torch.cat(self.chunks) if len(self.chunks) > 1 else self.chunks[0].contiguous()
        self.chunks = []
        if self.kind == "avg":
            self.divisor = self.divisor.to(self.padded)

    def __call__(self, img: Tensor, vals: Tensor, top: Tensor, left: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Window ``vals`` [M, C, h, w] of this layer's input at (top, left) -> window of
        its output [M, C', h', w'] and the output window's (top, left)."""
        h, w = vals.shape[2:]
        out_h, out_w = self.reach((h, w))
        lo_r = _window_start(top, self.k[0], self.s[0], self.p[0], self.out_hw[0], out_h)
        lo_c = _window_start(left, self.k[1], self.s[1], self.p[1], self.out_hw[1], out_w)
        ph, pw = (out_h - 1) * self.s[0] + self.k[0], (out_w - 1) * self.s[1] + self.k[1]
        dev = vals.device
        m = len(img)
        hp, wp = self.padded_hw
        r0, c0 = lo_r * self.s[0], lo_c * self.s[1]  # patch corner, padded coordinates
        rows = r0[:, None] + torch.arange(ph, device=dev)
        cols = c0[:, None] + torch.arange(pw, device=dev)
        flat = (img * (hp * wp))[:, None, None] + rows[:, :, None] * wp + cols[:, None, :]
        patch = self.padded.index_select(0, flat.view(-1)).view(m, ph, pw, -1)
        # paste the changed window where it overlaps the patch
        wr = (top - r0 + self.p[0])[:, None] + torch.arange(h, device=dev)  # window rows in patch coordinates
        wc = (left - c0 + self.p[1])[:, None] + torch.arange(w, device=dev)
        ok = ((wr >= 0) & (wr < ph))[:, :, None] & ((wc >= 0) & (wc < pw))[:, None, :]
        at = torch.arange(m, device=dev)[:, None, None] * (ph * pw) + wr[:, :, None] * pw + wc[:, None, :]
        ok = ok.view(-1)
        patch.view(m * ph * pw, -1)[at.view(-1)[ok]] = vals.permute(0, 2, 3, 1).reshape(-1, vals.shape[1])[ok]
        patch = patch.permute(0, 3, 1, 2)  # NCHW view of channels-last memory
        mod = self.module
        if self.kind == "conv":
            out = Fn.conv2d(patch, mod.weight, mod.bias, self.s, 0, 1, mod.groups)
        elif self.kind == "max":
            out = Fn.max_pool2d(patch, self.k, self.s, 0)
        else:
            total = Fn.avg_pool2d(patch, self.k, self.s, 0, False, True, 1)
            div_r = lo_r[:, None] + torch.arange(out_h, device=dev)
            div_c = lo_c[:, None] + torch.arange(out_w, device=dev)
            out = total / self.divisor[div_r[:, :, None], div_c[:, None, :]][:, None]
        return out, lo_r, lo_c


class LocalForward:
    """Logits of one-pixel variants of the images ``x`` [N, C, H, W] under ``model``.

    Build once per set of clean images (it runs them through the model and keeps each
    spatially local layer's input, padded); then ``self(img, row, col, values)`` returns
    the logits of ``x[img]`` with pixel ``(row, col)`` set to ``values`` [M, C], for M
    variants at once. ``memory_bytes`` is what the cache holds.
    """

    def __init__(self, model: nn.Module, x: Tensor, *, chunk: int = 256) -> None:
        if not supports(model):
            raise ValueError("LocalForward needs an eval-mode ImageClassifier or nn.Sequential whose first layer is spatially local")
        layers = _fold_batch_norm(_layers(model))
        self.steps: list[tuple[str, object]] = []
        with torch.no_grad():
            # the plan, from one image: which layers run on windows, and their geometry
            a = x[:1]
            size = (1, 1)
            first_full = len(layers)
            for i, layer in enumerate(layers):
                kind = _kind(layer)
                if kind == "dense":
                    first_full = i
                    break
                out = layer(a)
                if kind != "point":
                    step = _Step(layer, kind, tuple(a.shape[2:]), tuple(out.shape[2:]))
                    size = step.reach(size)
                    # once the output window is the whole map, a patch saves nothing
                    if size[0] >= out.shape[2] and size[1] >= out.shape[3]:
                        first_full = i
                        break
                    self.steps.append(("local", step))
                else:
                    self.steps.append(("point", layer))
                a = out
            self.rest = nn.Sequential(*layers[first_full:])
            # the cache, a chunk of images at a time
            clean = []
            for s in range(0, x.shape[0], chunk):
                a = x[s : s + chunk]
                for kind, step in self.steps:
                    if kind == "local":
                        step.cache(a)
                    a = step.module(a) if kind == "local" else step(a)
                clean.append(a.permute(0, 2, 3, 1).contiguous())
            for kind, step in self.steps:
                if kind == "local":
                    step.freeze()
            # input of the first layer run in full, channels last
            self.clean_nhwc = torch.cat(clean) if len(clean) > 1 else clean[0]
        self.memory_bytes = sum(s.padded.numel() * s.padded.element_size() for k, s in self.steps if k == "local")
        self.memory_bytes += self.clean_nhwc.numel() * self.clean_nhwc.element_size()

    def __call__(self, img: Tensor, row: Tensor, col: Tensor, values: Tensor) -> Tensor:
        vals = values.to(self.clean_nhwc.dtype)[:, :, None, None]
        top, left = row.long(), col.long()
        with torch.no_grad():
            for kind, step in self.steps:
                if kind == "point":
                    vals = step(vals)
                else:
                    vals, top, left = step(img, vals, top, left)
            m, hc, wc, c = len(img), *self.clean_nhwc.shape[1:]
            full = self.clean_nhwc.index_select(0, img)  # [M, H, W, C], a copy
            h, w = vals.shape[2:]
            r = top[:, None] + torch.arange(h, device=vals.device)
            cc = left[:, None] + torch.arange(w, device=vals.device)
            at = torch.arange(m, device=vals.device)[:, None, None] * (hc * wc) + r[:, :, None] * wc + cc[:, None, :]
            full.view(-1, c)[at.view(-1)] = vals.permute(0, 2, 3, 1).reshape(-1, c)
            return self.rest(full.permute(0, 3, 1, 2))
