"""PixelDefend (Song et al. 2018): purify an input by moving each pixel, in raster order, to the value
inside an eps-ball that a PixelCNN finds most likely given the pixels already purified.

The density model is a gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with
PixelCNN Decoders"): 256-way logits for every pixel's intensity given all pixels before it in raster
order, with a vertical stack (rows above) and a horizontal stack (pixels to the left) so that the
receptive field has no blind spot. Grayscale or RGB: colour images are ordered R -> G -> B inside
each pixel, with the paper's masks A and B on channel groups (see ``_GatedLayer``).

Images are floats in [0, 1]; intensities are the 256 levels round(255 x).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .bpda import Defense, attach_zero_grad

LEVELS = 256


def to_levels(x: Tensor) -> Tensor:
    """[0, 1] floats -> integer intensity levels 0..255 (long)."""
    return (x * (LEVELS - 1)).round().clamp(0, LEVELS - 1).long()


def _shift_down(t: Tensor) -> Tensor:
    """Row i gets row i - 1 (zeros in row 0): what the horizontal stack may see of the vertical one."""
    return F.pad(t, (0, 0, 1, 0))[:, :, :-1, :]


def _shift_right(t: Tensor) -> Tensor:
    """Column j gets column j - 1 (zeros in column 0)."""
    return F.pad(t, (1, 0, 0, 0))[:, :, :, :-1]


def channel_groups(n: int, colours: int) -> Tensor:
    """Colour group of each of ``n`` feature channels: ``colours`` contiguous blocks (R, G, B)."""
    return torch.arange(n) * colours // n


def colour_mask(out_groups: Tensor, in_groups: Tensor, *, strict: bool) -> Tensor:
    """[out, in] 0/1: output channel o may read input channel i when its colour group comes after
    i's (``strict``: van den Oord's mask A, for the pixel's own colours in the first layer) or is the
    same or after (mask B, everywhere after)."""
    o, i = out_groups.unsqueeze(1), in_groups.unsqueeze(0)
    return (o > i if strict else o >= i).float()


class MaskedConv2d(nn.Conv2d):
    """A convolution whose weight is multiplied by a fixed 0/1 ``mask`` (``None``: a plain one).
    The mask is rebuilt by the constructor, so it is not part of the state dict."""

    def __init__(self, *args, mask: Tensor | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if mask is not None and mask.shape != self.weight.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != weight shape {tuple(self.weight.shape)}")
        self.register_buffer("mask", mask, persistent=False)

    def masked_weight(self) -> Tensor:
        return self.weight if self.mask is None else self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        return self._conv_forward(x, self.masked_weight(), self.bias)


class _GatedLayer(nn.Module):
    """One gated layer: the vertical stack sees rows <= i, the horizontal stack row i, columns <= j
    (the first layer: columns < j, so that no output sees its own pixel).

    Colour images (``colours`` 3): every stack's channels form R, G, B groups, and at the pixel itself
    group g reads only the colours before g (first layer, ``h_centre``, mask A) or the groups up to g
    (later layers: the horizontal kernel's own-column tap and ``h_out``, mask B). The vertical stack
    needs no masks: the horizontal one sees it only from the row above."""

    def __init__(self, channels: int, kernel: int, first: bool, colours: int = 1) -> None:
        super().__init__()
        half = kernel // 2
        self.half, self.first = half, first
        c_in = colours if first else channels
        feat = channel_groups(channels, colours)
        gates = feat.repeat(2)  # the gate's tanh and sigmoid halves, channel by channel
        h_mask = out_mask = None
        if colours > 1:
            out_mask = colour_mask(feat, feat, strict=False)[:, :, None, None]
            if not first:
                h_mask = torch.ones(2 * channels, channels, 1, half + 1)
                h_mask[:, :, 0, half] = colour_mask(gates, feat, strict=False)  # column j's tap
        self.v_conv = nn.Conv2d(c_in, 2 * channels, (half + 1, kernel))
        self.h_conv = MaskedConv2d(c_in, 2 * channels, (1, half + 1), mask=h_mask)
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = MaskedConv2d(channels, channels, 1, mask=out_mask)
        self.h_centre = None
        if colours > 1 and first:  # the first layer's view of its own pixel: the colours before each group's
            self.h_centre = MaskedConv2d(colours, 2 * channels, 1, bias=False,
                                         mask=colour_mask(gates, torch.arange(colours), strict=True)[:, :, None, None])

    @staticmethod
    def _gate(t: Tensor) -> Tensor:
        a, b = t.chunk(2, dim=1)
        return torch.tanh(a) * torch.sigmoid(b)

    def v_forward(self, v: Tensor) -> tuple[Tensor, Tensor]:
        """The vertical stack: (pre-gate features, gated output); row i sees rows <= i."""
        half = self.half
        v_feat = self.v_conv(F.pad(v, (half, half, half, 0)))  # rows i - half .. i, all nearby columns
        return v_feat, self._gate(v_feat)

    def h_forward(self, h: Tensor, v_feat_above: Tensor) -> Tensor:
        """The horizontal stack, given the vertical features of the row above (``_shift_down``ed)."""
        h_in = _shift_right(h) if self.first else h
        h_feat = self.h_conv(F.pad(h_in, (self.half, 0, 0, 0))) + self.v_to_h(v_feat_above)
        if self.h_centre is not None:
            h_feat = h_feat + self.h_centre(h)
        h_new = self.h_out(self._gate(h_feat))
        return h_new if self.first else h + h_new

    def forward(self, v: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        v_feat, v_out = self.v_forward(v)
        return v_out, self.h_forward(h, _shift_down(v_feat))


class GatedPixelCNN(nn.Module):
    """p(x) = prod_i p(x_i | x_<i) over images of ``colours`` channels (1: grayscale; 3: RGB, with
    R -> G -> B inside each pixel); ``forward(x)`` gives the logits ``[N, 256, C, H, W]`` of every
    pixel's level in every colour given what comes before it in that order."""

    def __init__(self, channels: int = 32, layers: int = 5, kernel: int = 5, colours: int = 1) -> None:
        super().__init__()
        if layers < 1 or channels < 1:
            raise ValueError(f"layers and channels must be >= 1, got {layers}, {channels}")
        if kernel < 3 or kernel % 2 == 0:
            raise ValueError(f"kernel must be odd and >= 3, got {kernel}")
        if colours not in (1, 3):
            raise ValueError(f"colours must be 1 (grayscale) or 3 (RGB), got {colours}")
        if channels % colours:
            raise ValueError(f"channels must be a multiple of colours ({colours}: one group per colour), got {channels}")
        self.colours = colours
        self.layers = nn.ModuleList(_GatedLayer(channels, kernel, first=i == 0, colours=colours)
                                    for i in range(layers))
        head_mask = out_mask = None
        if colours > 1:
            feat = channel_groups(channels, colours)
            head_mask = colour_mask(feat, feat, strict=False)[:, :, None, None]
            out_mask = colour_mask(torch.arange(colours).repeat_interleave(LEVELS), feat, strict=False)[:, :, None, None]
        self.head = nn.Sequential(nn.ReLU(), MaskedConv2d(channels, channels, 1, mask=head_mask), nn.ReLU(),
                                  MaskedConv2d(channels, LEVELS * colours, 1, mask=out_mask))

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.colours:
            raise ValueError(f"this GatedPixelCNN takes NCHW images with C = {self.colours}, got shape {tuple(x.shape)}")
        v = h = x * 2.0 - 1.0
        for layer in self.layers:
            v, h = layer(v, h)
        n, _, height, width = x.shape
        return self.head(h).view(n, self.colours, LEVELS, height, width).transpose(1, 2)

    def nll(self, x: Tensor) -> Tensor:
        """Negative log-likelihood of each image, in nats (sum over pixels and colours): ``[N]``."""
        logits = self(x)
        return F.cross_entropy(logits, to_levels(x), reduction="none").flatten(1).sum(1)

    def bits_per_dim(self, x: Tensor) -> Tensor:
        """Mean bits per dimension (pixel and colour) of each image: ``[N]`` (the usual density-model figure)."""
        return self.nll(x) / (math.log(2) * x[0].numel())


@torch.no_grad()
def pixeldefend(pixelcnn: GatedPixelCNN, x: Tensor, eps_levels: int = 16) -> Tensor:
    """PixelDefend's purification: in raster order (and R, G, B inside a pixel), each value becomes
    the level within ``eps_levels`` of its input level that ``pixelcnn`` finds most likely given the
    values purified so far (greedy, so deterministic). Returns images in [0, 1] on the 256 levels, at
    L∞ distance at most ``eps_levels / 255`` from the input's levels. The whole batch at once, and
    incrementally: per row one pass of the vertical stack over the rows it reaches, per pixel and
    colour each layer's horizontal stack at that pixel only (the logits of a full pass;
    tests/test_pixeldefend.py checks them).
    """
    if eps_levels < 0:
        raise ValueError(f"eps_levels must be >= 0, got {eps_levels}")
    colours = pixelcnn.colours
    if x.dim() != 4 or x.shape[1] != colours:
        raise ValueError(f"pixeldefend with this PixelCNN takes NCHW images with C = {colours}, "
                         f"got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError("pixeldefend takes finite images in [0, 1]")
    was_training = pixelcnn.training
    pixelcnn.eval()
    levels = to_levels(x)
    out = levels.clone()
    grid = torch.arange(LEVELS, device=x.device)
    scale = float(LEVELS - 1)
    layers = list(pixelcnn.layers)
    half = layers[0].half
    n, _, height, width = x.shape
    channels = [colours] + [layer.h_out.out_channels for layer in layers[:-1]]
    # Each layer's vertical inputs, padded as its convolution pads them (half rows on top, half
    # columns each side); row r of the image sits at row r + half.
    vbufs = [x.new_zeros(n, c, height + half, width + 2 * half) for c in channels]
    mats = [(layer.h_conv.masked_weight().flatten(1), layer.h_conv.bias, layer.h_out.masked_weight().flatten(1),
             layer.h_out.bias, None if layer.h_centre is None else layer.h_centre.masked_weight().flatten(1))
            for layer in layers]
    _, conv_1, _, conv_2 = pixelcnn.head
    w_1, b_1 = conv_1.masked_weight().flatten(1), conv_1.bias
    w_2, b_2 = conv_2.masked_weight().flatten(1).view(colours, LEVELS, -1), conv_2.bias.view(colours, LEVELS)
    try:
        for i in range(height):
            # Rows above i are final, so the vertical stack moves on by one row: each layer computes
            # row i - 1 only, from the rows it sees in the layer below (it never looks down), and
            # hands the horizontal stack of row i its features there (zeros above row 0).
            v_to_h = []
            for k, layer in enumerate(layers):
                if i == 0:
                    v_feat = x.new_zeros(n, 2 * layer.h_out.out_channels, 1, width)
                else:
                    v_feat = layer.v_conv(vbufs[k][:, :, i - 1:i + half])
                    if k + 1 < len(layers):
                        vbufs[k + 1][:, :, i - 1 + half:i + half, half:half + width] = layer._gate(v_feat)
                v_to_h.append(layer.v_to_h(v_feat))  # [N, 2C, 1, W]
            # Each layer's horizontal inputs along row i, padded on the left (the first layer's by one
            # more column: it sees the pixels strictly before j). Columns before j are final once
            # pixel j - 1 is chosen, so pixel j needs only column j of every layer: a window of
            # half + 1 columns per layer, the logits a full pass would give. On one column the
            # convolutions are matrix products (F.linear with the kernels flattened: far less overhead).
            # Colour: column j is computed once per colour c, with the colours before c chosen; the
            # masks keep the groups up to c from reading the rest, so after the last colour every
            # group holds its final value for the pixels to come.
            v_cols = [t[:, :, 0, :] for t in v_to_h]  # [N, 2C, W]
            bufs = [x.new_zeros(n, colours, width + half + 1)]
            bufs += [x.new_zeros(n, c, width + half) for c in channels[1:]]
            for j in range(width):
                for c in range(colours):
                    for k, (layer, (w_h, b_h, w_o, b_o, w_c)) in enumerate(zip(layers, mats)):
                        window = bufs[k][:, :, j:j + half + 1]
                        t = F.linear(window.reshape(n, -1), w_h, b_h) + v_cols[k][:, :, j]
                        if w_c is not None:  # the first layer's view of the colours already chosen here
                            t = t + F.linear(bufs[0][:, :, half + 1 + j], w_c)
                        a_, g_ = t.chunk(2, dim=1)
                        h = F.linear(torch.tanh(a_) * torch.sigmoid(g_), w_o, b_o)
                        if not layer.first:
                            h = window[:, :, -1] + h
                        if k + 1 < len(layers):
                            bufs[k + 1][:, :, half + j] = h
                    logits = F.linear(F.relu(F.linear(F.relu(h), w_1, b_1)), w_2[c], b_2[c])  # [N, 256]
                    centre = levels[:, c, i, j].unsqueeze(1)
                    allowed = (grid.unsqueeze(0) - centre).abs() <= eps_levels
                    best = logits.masked_fill(~allowed, -math.inf).argmax(dim=1)
                    out[:, c, i, j] = best
                    bufs[0][:, c, half + 1 + j] = best.float() / scale * 2.0 - 1.0
            vbufs[0][:, :, i + half, half:half + width] = bufs[0][:, :, half + 1:]
    finally:
        pixelcnn.train(was_training)
    return out.float() / scale


class PixelDefend(Defense):
    """A classifier behind PixelDefend: ``classifier(pixeldefend(pixelcnn, x, eps_levels))``.

    The purification is an argmax over intensity levels, so the exact defence's gradient is zero
    (a shattered gradient: what a naive white-box attack sees). BPDA (``bpda()``) differentiates
    it as the identity, as Athalye et al. did."""

    def __init__(self, classifier: nn.Module, pixelcnn: GatedPixelCNN, eps_levels: int = 16) -> None:
        super().__init__(classifier)
        self.pixelcnn = pixelcnn
        self.eps_levels = int(eps_levels)

    def transform(self, x: Tensor) -> Tensor:
        return attach_zero_grad(pixeldefend(self.pixelcnn, x.detach(), self.eps_levels), x)
