"""A seeded simulation of printing an image and photographing the print (Kurakin,
Goodfellow & Bengio 2016, "Adversarial examples in the physical world").

The paper printed adversarial images, photographed the sheets with a phone, cropped and
warped the photos back to the image, and classified them. This module stands in for that
path with the effects a printer and a phone camera add, in the order they happen:

1. ``quantize``: a printed image is 8-bit (the paper's pitfall: quantise first).
2. ``perspective``: the photo of the sheet, undone imperfectly: a random homography (each
   corner moved by up to ``shift`` of the image size), a rotation of up to ``rotate``
   degrees and a zoom of up to ``crop`` (the crop cuts that share of the side).
3. ``resample``: down to ``scale`` of the size and back up (print / sensor resolution).
4. ``defocus``: a disk blur of ``radius`` pixels.
5. ``motion``: a line blur of ``length`` pixels at a random angle (hand shake).
6. ``photometric``: exposure and tone, ``gamma`` then ``contrast`` (the paper's X·mu)
   then ``brightness`` (X + delta), each jittered per image by up to ``jitter``.
7. ``noise``: sensor noise, Gaussian with ``std`` plus shot noise ``shot * sqrt(x)``.
8. ``jpeg``: the phone saves a JPEG of ``quality`` (8-bit first).

Every step maps a batch ``[N, C, H, W]`` in [0, 1] to the same shape, dtype and range,
draws its randomness (one set of parameters per image) from the generator it is given,
and is differentiable except ``quantize`` and ``jpeg``; with ``differentiable=True`` those
two pass the gradient straight through (the identity, as BPDA), so that Expectation over
Transformation can optimise through the whole chain. Steps compose: :class:`PrintPhoto`
is an ordered list of them, and :func:`single_transform` builds the one-effect chains of
the paper's ablation (brightness, contrast, Gaussian blur, Gaussian noise, JPEG) from the
same steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as Fn
from torch import Tensor, nn

from ..defenses.bpda import attach_zero_grad, straight_through
from ..defenses.input_transforms import jpeg_round_trip

__all__ = [
    "STEPS",
    "SINGLE_TRANSFORMS",
    "Defocus",
    "GaussianBlur",
    "Jpeg",
    "Motion",
    "Noise",
    "Perspective",
    "Photometric",
    "PrintPhoto",
    "Quantize",
    "Resample",
    "quantize",
    "single_transform",
    "to_8bit",
]


def _check(name: str, value, low: float, high: float = math.inf, *, integer: bool = False,
           low_open: bool = False) -> float:  # fmt: skip
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer:
        ok = float(value).is_integer()
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        kind = "an integer" if integer else "a number"
        bound = f"> {low}" if low_open else f">= {low}"
        span = bound if high == math.inf else f"{bound} and <= {high}"
        raise ValueError(f"{name} must be {kind} {span}, got {value!r}")
    return int(value) if integer else float(value)


def to_8bit(x: Tensor) -> Tensor:
    """``round(255 x)`` of ``x`` clipped to [0, 1], as floats 0..255 (what a file stores)."""
    return torch.round(x.clamp(0.0, 1.0) * 255.0)


def quantize(x: Tensor) -> Tensor:
    """``x`` on the 8-bit grid, in [0, 1] and ``x``'s dtype, no gradient."""
    return to_8bit(x.detach()).to(x.dtype) / 255.0


def _uniform(n: int, low: float, high: float, g: torch.Generator, like: Tensor) -> Tensor:
    u = torch.rand(n, generator=g, dtype=torch.float64)
    return (low + (high - low) * u).to(device=like.device, dtype=like.dtype)


def _blur(x: Tensor, kernel: Tensor) -> Tensor:
    """Depthwise convolution with replicated borders; ``kernel`` [k, k] for every image or
    [N, k, k], one per image (a grouped convolution over the batch folded into channels)."""
    n, c, h, w = x.shape
    k = kernel.shape[-1]
    pad = k // 2
    xp = Fn.pad(x, (pad, pad, pad, pad), mode="replicate")
    if kernel.dim() == 2:
        out = Fn.conv2d(xp, kernel.to(x).expand(c, 1, k, k), groups=c)
    else:
        weight = kernel.to(x).repeat_interleave(c, 0)[:, None]  # [N*C, 1, k, k]
        out = Fn.conv2d(xp.reshape(1, n * c, h + 2 * pad, w + 2 * pad), weight, groups=n * c).view(n, c, h, w)
    return out.clamp(0.0, 1.0)  # a normalised kernel can still round one ulp past 1


class Step(nn.Module):
    """One effect. ``forward(x, generator)``; ``strength`` names what the ablation varies."""

    name = "step"
    random = False  # draws from the generator

    def forward(self, x: Tensor, generator: torch.Generator | None = None, differentiable: bool = False) -> Tensor:
        raise NotImplementedError


class Quantize(Step):
    """8-bit rounding, ``round(255 x) / 255`` (a print and a photo file are 8-bit)."""

    name = "quantize"

    def forward(self, x, generator=None, differentiable=False):
        q = quantize(x)
        return straight_through(q, x) if differentiable else attach_zero_grad(q, x)


class Jpeg(Step):
    """JPEG encode / decode at ``quality`` (torchvision's libjpeg, 1 or 3 channels)."""

    name = "jpeg"

    def __init__(self, quality: int = 75) -> None:
        super().__init__()
        self.quality = _check("jpeg.quality", quality, 1, 100, integer=True)

    def forward(self, x, generator=None, differentiable=False):
        out = jpeg_round_trip(x, self.quality, rounding="round")
        return straight_through(out, x) if differentiable else attach_zero_grad(out, x)

    def extra_repr(self) -> str:
        return f"quality={self.quality}"


class Perspective(Step):
    """A random homography per image: corners moved by up to ``shift`` (fraction of the
    side), rotated by up to ``rotate`` degrees and zoomed by up to ``crop`` (fraction of
    the side cut), bilinear resampling with replicated borders."""

    name = "perspective"
    random = True

    def __init__(self, shift: float = 0.03, rotate: float = 3.0, crop: float = 0.05) -> None:
        super().__init__()
        self.shift = _check("perspective.shift", shift, 0.0, 0.25)
        self.rotate = _check("perspective.rotate", rotate, 0.0, 45.0)
        self.crop = _check("perspective.crop", crop, 0.0, 0.5)

    def homographies(self, n: int, g: torch.Generator) -> Tensor:
        """[N, 3, 3] maps from output to input coordinates, both in [-1, 1]."""
        corners = torch.tensor([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)
        theta = torch.deg2rad(self.rotate * (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1))
        zoom = 1.0 - self.crop * torch.rand(n, generator=g, dtype=torch.float64)
        jitter = 2 * self.shift * (2 * torch.rand(n, 4, 2, generator=g, dtype=torch.float64) - 1)
        cos, sin = torch.cos(theta), torch.sin(theta)
        rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # [N, 2, 2]
        # where each output corner reads from in the input: the rotated, zoomed, jittered corner
        src = (corners[None] * zoom[:, None, None]) @ rot.transpose(1, 2) + jitter
        dst = corners[None].expand(n, 4, 2)
        # solve for H (h33 = 1) with H dst ~ src, 8 equations per image
        u, v = dst[..., 0], dst[..., 1]
        xs, ys = src[..., 0], src[..., 1]
        one, zero = torch.ones_like(u), torch.zeros_like(u)
        rows_x = torch.stack([u, v, one, zero, zero, zero, -u * xs, -v * xs], -1)
        rows_y = torch.stack([zero, zero, zero, u, v, one, -u * ys, -v * ys], -1)
        a = torch.cat([rows_x, rows_y], 1)  # [N, 8, 8]
        b = torch.cat([xs, ys], 1)
        h = torch.linalg.solve(a, b)
        return torch.cat([h, torch.ones(n, 1, dtype=h.dtype)], 1).view(n, 3, 3)

    def forward(self, x, generator=None, differentiable=False):
        n, _, h, w = x.shape
        hom = self.homographies(n, generator).to(device=x.device, dtype=x.dtype)
        ys = (torch.arange(h, device=x.device, dtype=x.dtype) * 2 + 1) / h - 1  # pixel centres
        xs = (torch.arange(w, device=x.device, dtype=x.dtype) * 2 + 1) / w - 1
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        pts = torch.stack([gx, gy, torch.ones_like(gx)], -1).view(1, h * w, 3)
        mapped = pts @ hom.transpose(1, 2)  # [N, HW, 3]
        grid = (mapped[..., :2] / mapped[..., 2:]).view(n, h, w, 2)
        out = Fn.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return out.clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"shift={self.shift}, rotate={self.rotate}, crop={self.crop}"


class Resample(Step):
    """Down to ``scale`` of the size (antialiased bilinear) and back up (bilinear)."""

    name = "resample"

    def __init__(self, scale: float = 0.75) -> None:
        super().__init__()
        self.scale = _check("resample.scale", scale, 0.0, 1.0, low_open=True)

    def forward(self, x, generator=None, differentiable=False):
        if self.scale == 1.0:
            return x
        h, w = x.shape[2:]
        small = (max(1, round(h * self.scale)), max(1, round(w * self.scale)))
        down = Fn.interpolate(x, size=small, mode="bilinear", align_corners=False, antialias=True)
        return Fn.interpolate(down, size=(h, w), mode="bilinear", align_corners=False).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"scale={self.scale}"


def disk_kernel(radius: float) -> Tensor:
    """Normalised disk of ``radius`` pixels, antialiased at the rim; [1, 1] for 0."""
    k = 2 * math.ceil(radius) + 1
    r = torch.arange(k, dtype=torch.float64) - k // 2
    dist = torch.sqrt(r[:, None] ** 2 + r[None, :] ** 2)
    ker = (radius + 0.5 - dist).clamp(0.0, 1.0)
    return ker / ker.sum()  # float64; cast to the images' dtype when applied


def line_kernels(length: float, angles: Tensor) -> Tensor:
    """[N, k, k] normalised antialiased line segments of ``length`` pixels through the centre."""
    k = 2 * math.ceil(length / 2) + 1
    r = torch.arange(k, dtype=torch.float64) - k // 2
    yy, xx = r[:, None], r[None, :]
    cos, sin = torch.cos(angles)[:, None, None], torch.sin(angles)[:, None, None]
    along = xx * cos + yy * sin
    across = (-xx * sin + yy * cos).abs()
    beyond = (along.abs() - length / 2).clamp_min(0.0)
    ker = (1.0 - torch.sqrt(across**2 + beyond**2)).clamp_min(0.0)
    return ker / ker.sum((1, 2), keepdim=True)


def gaussian_kernel(sigma: float) -> Tensor:
    k = 2 * math.ceil(3 * sigma) + 1
    r = torch.arange(k, dtype=torch.float64) - k // 2
    g1 = torch.exp(-(r**2) / (2 * sigma**2))
    ker = g1[:, None] * g1[None, :]
    return ker / ker.sum()  # float64; cast to the images' dtype when applied


class Defocus(Step):
    """Out-of-focus blur: a disk of ``radius`` pixels."""

    name = "defocus"

    def __init__(self, radius: float = 0.7) -> None:
        super().__init__()
        self.radius = _check("defocus.radius", radius, 0.0, 20.0)
        self.register_buffer("kernel", disk_kernel(self.radius), persistent=False)

    def forward(self, x, generator=None, differentiable=False):
        return x if self.radius == 0 else _blur(x, self.kernel)

    def extra_repr(self) -> str:
        return f"radius={self.radius}"


class Motion(Step):
    """Hand shake: a line blur of ``length`` pixels at a random angle per image."""

    name = "motion"
    random = True

    def __init__(self, length: float = 1.5) -> None:
        super().__init__()
        self.length = _check("motion.length", length, 0.0, 20.0)

    def forward(self, x, generator=None, differentiable=False):
        angles = math.pi * torch.rand(x.shape[0], generator=generator, dtype=torch.float64)
        if self.length == 0:
            return x
        return _blur(x, line_kernels(self.length, angles).to(x.device))

    def extra_repr(self) -> str:
        return f"length={self.length}"


class Photometric(Step):
    """Exposure and tone: ``brightness + contrast * x ** gamma``, each jittered per image by
    a factor (gamma, contrast) or a shift (brightness) uniform within ``jitter``."""

    name = "photometric"
    random = True

    def __init__(self, brightness: float = 0.0, contrast: float = 1.0, gamma: float = 1.0, jitter: float = 0.05) -> None:
        super().__init__()
        self.brightness = _check("photometric.brightness", brightness, -1.0, 1.0)
        self.contrast = _check("photometric.contrast", contrast, 0.0, 10.0, low_open=True)
        self.gamma = _check("photometric.gamma", gamma, 0.0, 10.0, low_open=True)
        self.jitter = _check("photometric.jitter", jitter, 0.0, 0.5)
        self.random = self.jitter > 0  # without jitter it is the paper's fixed X * mu + delta

    def forward(self, x, generator=None, differentiable=False):
        n, j = x.shape[0], self.jitter
        shape = (n, 1, 1, 1)
        gamma = (self.gamma * _uniform(n, 1 - j, 1 + j, generator, x)).view(shape)
        contrast = (self.contrast * _uniform(n, 1 - j, 1 + j, generator, x)).view(shape)
        brightness = (self.brightness + _uniform(n, -j, j, generator, x)).view(shape)
        # x ** gamma has an infinite slope at 0 for gamma < 1: keep the base off 0
        toned = x if self.gamma == 1.0 and j == 0 else x.clamp_min(1e-6) ** gamma
        return (brightness + contrast * toned).clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"brightness={self.brightness}, contrast={self.contrast}, gamma={self.gamma}, jitter={self.jitter}"


class Noise(Step):
    """Sensor noise: ``x + std * e1 + shot * sqrt(x) * e2``, e1, e2 standard normal."""

    name = "noise"
    random = True

    def __init__(self, std: float = 0.01, shot: float = 0.01) -> None:
        super().__init__()
        self.std = _check("noise.std", std, 0.0, 1.0)
        self.shot = _check("noise.shot", shot, 0.0, 1.0)

    def forward(self, x, generator=None, differentiable=False):
        e = torch.randn((2, *x.shape), generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
        out = x + self.std * e[0]
        if self.shot:
            out = out + self.shot * x.clamp_min(1e-6).sqrt() * e[1]
        return out.clamp(0.0, 1.0)

    def extra_repr(self) -> str:
        return f"std={self.std}, shot={self.shot}"


# the paper's single transformations (section 4) reuse Photometric and Noise; only the blur is new
class GaussianBlur(Step):
    """Gaussian blur of standard deviation ``sigma`` pixels."""

    name = "blur"

    def __init__(self, sigma: float) -> None:
        super().__init__()
        self.sigma = _check("blur", sigma, 0.0, 20.0)
        if self.sigma > 0:
            self.register_buffer("kernel", gaussian_kernel(self.sigma), persistent=False)

    def forward(self, x, generator=None, differentiable=False):
        return x if self.sigma == 0 else _blur(x, self.kernel)


STEPS: dict[str, type[Step]] = {
    "quantize": Quantize,
    "perspective": Perspective,
    "resample": Resample,
    "defocus": Defocus,
    "motion": Motion,
    "photometric": Photometric,
    "noise": Noise,
    "jpeg": Jpeg,
}
DEFAULT_ORDER = tuple(STEPS)

# name -> the step at one strength (the paper's definitions: X + delta, X * mu, ...)
SINGLE_TRANSFORMS = {
    "brightness": lambda delta: Photometric(brightness=delta, jitter=0.0),  # delta added
    "contrast": lambda mu: Photometric(contrast=mu, jitter=0.0),  # factor mu
    "blur": GaussianBlur,  # sigma in pixels
    "noise": lambda std: Noise(std=std, shot=0.0),  # standard deviation
    "jpeg": Jpeg,  # quality
}


def single_transform(name: str, strength: float) -> PrintPhoto:
    """A chain of the one effect ``name`` of the paper's ablation at ``strength`` (then 8-bit):
    brightness delta, contrast factor, blur sigma, noise std or JPEG quality."""
    if name not in SINGLE_TRANSFORMS:
        raise ValueError(f"unknown single transform {name!r}; expected one of {sorted(SINGLE_TRANSFORMS)}")
    step = SINGLE_TRANSFORMS[name](int(strength) if name == "jpeg" and float(strength).is_integer() else strength)
    return PrintPhoto([step] if name == "jpeg" else [step, Quantize()])


class PrintPhoto(nn.Module):
    """An ordered chain of steps, applied to a batch with one generator.

    ``PrintPhoto()`` is the default print-and-photo chain (module docstring);
    ``PrintPhoto.from_params(mapping)`` builds one from a params block, a key per step
    with that step's options (``{"defocus": {"radius": 1.0}, "jpeg": {"quality": 60}}``),
    ``false`` to drop a step, and an optional ``order``. As a module it is a random
    transform with its own generator (``seed``, ``reseed``): ``chain(x)`` draws fresh
    parameters every call, so EoT attacks (``advlab.attacks.bpda_eot_pgd``) can average
    over it; ``chain.apply(x, generator)`` is the functional form.
    """

    def __init__(self, steps: Sequence[Step] | None = None, *, seed: int = 0, differentiable: bool = False) -> None:
        super().__init__()
        self.steps = nn.ModuleList(steps if steps is not None else [STEPS[name]() for name in DEFAULT_ORDER])
        self.differentiable = bool(differentiable)
        self.reseed(seed)

    @classmethod
    def from_params(cls, params: Mapping | None, *, seed: int = 0, differentiable: bool = False) -> PrintPhoto:
        params = dict(params or {})
        order = params.pop("order", list(DEFAULT_ORDER))
        unknown = [k for k in params if k not in STEPS]
        if unknown:
            raise ValueError(f"unknown print_photo step(s) {unknown}; expected keys among {list(STEPS)} and 'order'")
        bad = [k for k in order if k not in STEPS]
        if bad or len(set(order)) != len(order):
            raise ValueError(f"print_photo.order must list distinct steps among {list(STEPS)}, got {order}")
        steps = []
        for name in order:
            opts = params.get(name, {})
            if opts is False:
                continue
            if opts is None or opts is True:
                opts = {}
            if not isinstance(opts, Mapping):
                raise ValueError(f"print_photo.{name} must be a mapping of options or false, got {opts!r}")
            try:
                steps.append(STEPS[name](**opts))
            except TypeError as err:
                raise ValueError(f"print_photo.{name}: {err}") from None
        return cls(steps, seed=seed, differentiable=differentiable)

    def reseed(self, seed: int) -> None:
        self.generator = torch.Generator().manual_seed(int(seed))

    def apply(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"print_photo needs an NCHW batch, got shape {tuple(x.shape)}")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        for step in self.steps:
            x = step(x, g, self.differentiable)
        return x

    def trace(self, x: Tensor, generator: torch.Generator | None = None) -> list[tuple[str, Tensor]]:
        """The batch after each step, ``[("input", x), (step name, x after it), ...]``."""
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        out = [("input", x)]
        for step in self.steps:
            x = step(x, g, self.differentiable)
            out.append((step.name, x))
        return out

    def forward(self, x: Tensor) -> Tensor:
        return self.apply(x, self.generator)
