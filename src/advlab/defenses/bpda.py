"""Backward pass differentiable approximation (Athalye, Carlini & Wagner 2018, §4.1).

BPDA runs the *real* defence g in the forward pass and a differentiable stand-in
for it (often the identity, g(x) ~ x) in the backward pass. In PyTorch that is the
straight-through expression ``approx + (exact - approx).detach()``: its value is
``exact``, its gradient is that of ``approx``.

This module holds the generic plumbing: :func:`straight_through`, :func:`bpda`,
the :class:`Defense` base class (``classifier(transform(x))`` with an exact and a
BPDA forward) and the :class:`BPDA` view returned by ``defense.bpda()``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["BPDA", "Defense", "RandomDefense", "attach_zero_grad", "bpda", "straight_through"]


class _StraightThrough(torch.autograd.Function):
    # The textbook ``approx + (exact - approx).detach()`` is exact only up to rounding
    # (0.3 + (1 - 0.3) need not be 1.0 in float32); this returns ``exact`` bit for bit.
    @staticmethod
    def forward(ctx, exact: Tensor, approx: Tensor) -> Tensor:
        return exact.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return None, grad


def straight_through(exact: Tensor, approx: Tensor) -> Tensor:
    """Value of ``exact`` (bit for bit), gradient of ``approx``; shapes must match.

    Same semantics as ``approx + (exact - approx).detach()``, without its rounding.
    """
    if exact.shape != approx.shape:
        raise ValueError(f"exact and approx differ in shape: {tuple(exact.shape)} vs {tuple(approx.shape)}")
    return _StraightThrough.apply(exact.detach().to(approx.dtype), approx)


def bpda(exact_fn: Callable[[Tensor], Tensor], approx_fn: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    """A function whose forward is ``exact_fn`` and whose backward is that of ``approx_fn``.

    ``exact_fn`` runs once per call under ``torch.no_grad()`` (it may be random or
    non-differentiable); ``approx_fn`` must be differentiable. With
    ``approx_fn is exact_fn`` (a differentiable deterministic function) the result and
    its gradient are those of the function itself.
    """

    def forward(x: Tensor) -> Tensor:
        with torch.no_grad():
            exact = exact_fn(x)
        return straight_through(exact, approx_fn(x))

    return forward


def attach_zero_grad(out: Tensor, x: Tensor) -> Tensor:
    """``out`` (computed from ``x`` without a graph) joined to ``x`` with a zero gradient.

    A piecewise-constant map (quantisation, JPEG, thermometer code) has derivative
    zero almost everywhere. Returning that zero, rather than a tensor with no graph,
    lets a naive white-box attack run on the exact defence and see what it would see:
    a gradient of 0 (the "shattered gradient" of the paper).
    """
    if not x.requires_grad:
        return out.detach()
    link = (x * 0).flatten(1).sum(dim=1).view(-1, *([1] * (out.dim() - 1)))
    return out.detach() + link.to(out.dtype)


class Defense(nn.Module):
    """A classifier behind a defence: ``forward(x) = classifier(transform(x))``.

    ``x`` is an NCHW batch in [0, 1]; the output is the classifier's logits.
    Subclasses implement :meth:`transform` (the exact defence: what the defended
    system really computes, random or not differentiable) and :meth:`approx` (the
    differentiable approximation used by BPDA; the identity by default).
    ``forward`` is the exact defence; :meth:`bpda` returns a view of the same module
    whose forward is still exact and whose backward goes through :meth:`approx`.
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def transform(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def approx(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.transform(x))

    def forward_bpda(self, x: Tensor) -> Tensor:
        """Logits of the exact defence, differentiated through :meth:`approx`."""
        with torch.no_grad():
            exact = self.transform(x)
        return self.classifier(straight_through(exact, self.approx(x)))

    def bpda(self) -> BPDA:
        """A module sharing this defence (and its classifier and random state) whose
        forward is exact and whose backward is the BPDA approximation."""
        return BPDA(self)


class BPDA(nn.Module):
    """``defense.forward_bpda`` as a module: give it to an attack in place of the defence."""

    def __init__(self, defense: Defense) -> None:
        super().__init__()
        self.defense = defense

    def forward(self, x: Tensor) -> Tensor:
        return self.defense.forward_bpda(x)


class RandomDefense(Defense):
    """A defence that draws randomness on every forward call.

    Randomness comes only from ``self.generator``: the one passed in, else a CPU
    generator seeded with ``seed``. Every call draws fresh values from it (the stream
    advances), so two calls differ but a rerun from the same seed repeats exactly.
    Draws are made on the generator's device and moved to the input's device, so a
    CPU generator gives the same draws for CPU and GPU inputs. :meth:`reseed`
    restarts the stream; :func:`advlab.attacks.bpda_eot_pgd` calls it so that an
    attack is a function of its own seed.
    """

    def __init__(self, classifier: nn.Module, *, seed: int = 0, generator: torch.Generator | None = None) -> None:
        super().__init__(classifier)
        self.seed = int(seed)
        self.generator = generator if generator is not None else torch.Generator().manual_seed(self.seed)

    def reseed(self, seed: int) -> None:
        self.seed = int(seed)
        self.generator.manual_seed(self.seed)

    def _rand(self, *shape: int, like: Tensor) -> Tensor:
        u = torch.rand(shape, generator=self.generator, device=self.generator.device, dtype=like.dtype)
        return u.to(like.device)
