"""Architectures by name."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence

import torch
from torch import nn

from . import architectures as A
from .layers import ImageClassifier, Normalize

_ALIASES: dict[str, tuple[Callable[..., nn.Module], dict]] = {
    "fc500_150": (A.fc, {"widths": (500, 150)}),  # DeepFool's FC500-150-10
    "fc100_100": (A.fc, {"widths": (100, 100)}),  # Szegedy et al.
    "fc200_200": (A.fc, {"widths": (200, 200)}),  # Szegedy et al.
    "fc123_456": (A.fc, {"widths": (123, 456)}),  # Szegedy et al., cross-training-set model
    "fc10": (A.fc, {"widths": ()}),  # softmax regression
    "ae400_10": (A.ae_softmax, {"code": 400}),  # Szegedy et al.'s AE400-10
}

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "fc": A.fc,
    "lenet": A.lenet,
    "madry_cnn": A.madry_cnn,
    "wong_cnn": A.wong_cnn,
    "cw_cnn": A.cw_cnn,
    "allconv": A.allconv,
    "nin": A.nin,
    "vgg16": A.vgg16,
    **{name: functools.partial(fn, **fixed) for name, (fn, fixed) in _ALIASES.items()},
}

MODEL_NAMES: list[str] = sorted(_BUILDERS)


def build_model(
    name: str,
    *,
    in_channels: int,
    image_size: int | Sequence[int],
    num_classes: int = 10,
    mean: float | Sequence[float] | None = None,
    std: float | Sequence[float] | None = None,
    init_seed: int | None = None,
    **kwargs,
) -> ImageClassifier:
    """Build architecture ``name`` for ``in_channels`` x ``image_size`` inputs in [0, 1].

    The model normalises inside (per-channel ``mean`` / ``std``, defaults 0 / 1, kept
    as buffers) and returns logits. ``kwargs`` are the architecture's options (e.g.
    ``widths``). ``init_seed`` makes the initial weights reproducible without touching
    the global RNG state; it is not part of the architecture and is not recorded.
    The returned module carries ``arch`` and ``arch_kwargs`` (plain types) so that
    :func:`advlab.models.save_checkpoint` can rebuild it.
    """
    if name not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}")
    builder = _BUILDERS[name]
    options = _options(builder)
    unknown = sorted(set(kwargs) - set(options))
    if unknown:
        accepted = ", ".join(options) or "none"
        raise TypeError(f"model {name!r} got unknown option(s) {', '.join(unknown)}; it accepts: {accepted}")
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(int(s) for s in image_size)
        if len(size) != 2:
            raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")

    arch_kwargs = _plain({
        "in_channels": int(in_channels),
        "image_size": image_size if isinstance(image_size, int) else list(size),
        "num_classes": int(num_classes),
        "mean": mean,
        "std": std,
        **{k: kwargs.get(k, default) for k, default in options.items()},
    })

    def make() -> ImageClassifier:
        net = builder(int(in_channels), size, int(num_classes), **kwargs)
        return ImageClassifier(net, Normalize(int(in_channels), mean, std), arch=name, arch_kwargs=arch_kwargs)

    if init_seed is None:
        return make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return make()


def _options(builder: Callable) -> dict:
    """Keyword-only options of a builder with their defaults (aliases hide fixed ones)."""
    fixed = builder.keywords if isinstance(builder, functools.partial) else {}
    fn = builder.func if isinstance(builder, functools.partial) else builder
    return {
        p.name: p.default
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in fixed
    }


def _plain(value):
    """Tuples to lists, numpy/torch scalars to Python: what weights_only loading accepts."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
