"""Stochastic activation pruning (Dhillon et al. 2018), as in Athalye et al.'s ``sap/sap_model.py``.

For a layer output h of one sample (all its units together):

    p_i      = |h_i| / sum_j |h_j|
    keep_i   = 1 - exp(-N p_i),   N = ratio * (number of units)   (reference: ratio 2)
    h'_i     = h_i / keep_i  with probability keep_i, else 0

``1 - exp(-N p)`` is the reference's form of ``1 - (1 - p)^N``, the probability that
unit i is hit at least once in N draws with replacement; dividing by it makes the
pruned layer unbiased, E[h'] = h (the reference adds 1e-8 to the divisor; here units
with keep_i = 0, i.e. h_i = 0, are simply 0). Randomness: one uniform per unit, fresh on
every call, from the defence's generator.

Placement: the reference prunes the output of every convolution of its ResNet; here
SAP follows each activation layer of the classifier (``nn.ReLU`` by default), the
placement of Dhillon et al.'s description. The layers are hooked only while the SAP
module runs, so the wrapped classifier itself is left unchanged.

Attack: SAP is differentiable given its mask; the reference attack simply
differentiates the stochastic network (through ``keep_i`` too) and averages the
randomness out over many small steps (500 x 0.1 in 0-255 units); here use EoT
(``eot_samples`` > 1). ``.bpda()`` gives the alternative "expectation" BPDA: forward
pruned, backward the identity through each SAP layer (since E[h'] = h).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from .bpda import RandomDefense

__all__ = ["SAP", "sap_prune"]


def sap_prune(h: Tensor, u: Tensor, ratio: float = 2.0, *, straight_through: bool = False) -> Tensor:
    """Prune ``h`` (N, ...) given uniforms ``u`` of the same shape; see the module docstring.

    ``straight_through=True``: value of the pruned layer, gradient of the identity.
    """
    flat = h.flatten(1)
    mag = flat.abs()
    p = mag / mag.sum(dim=1, keepdim=True).clamp_min(torch.finfo(h.dtype).tiny)
    keep_p = -torch.expm1(-ratio * flat.shape[1] * p)
    keep = u.reshape(flat.shape) < keep_p
    pruned = torch.where(keep, flat / torch.where(keep, keep_p, torch.ones_like(keep_p)), torch.zeros_like(flat))
    if straight_through:
        pruned = flat + (pruned - flat).detach()
    return pruned.view_as(h)


class SAP(RandomDefense):
    """``classifier`` with stochastic activation pruning after each selected layer, at eval time.

    ``layers``: names (as in ``classifier.named_modules()``) of the layers whose outputs
    are pruned; default every module of a type in ``activations`` (``nn.ReLU``).
    ``ratio``: N / (number of units of the layer), 2 in the reference.
    ``transform`` is the identity: the defence lives inside the network.
    """

    def __init__(
        self,
        classifier: nn.Module,
        *,
        ratio: float = 2.0,
        layers: Sequence[str] | None = None,
        activations: tuple[type[nn.Module], ...] = (nn.ReLU,),
        seed: int = 0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(classifier, seed=seed, generator=generator)
        if not (math.isfinite(ratio) and ratio > 0):
            raise ValueError(f"ratio must be a finite number > 0, got {ratio}")
        named = dict(classifier.named_modules())
        if layers is None:
            layers = [name for name, mod in named.items() if name and isinstance(mod, activations)]
        unknown = [name for name in layers if name not in named or not name]
        if unknown:
            raise ValueError(f"layers not found in the classifier: {unknown}")
        if not layers:
            raise ValueError("SAP found no layer to prune: pass `layers` or `activations`")
        self.ratio = float(ratio)
        self.layers = list(layers)

    def transform(self, x: Tensor) -> Tensor:
        return x

    @contextmanager
    def _pruning(self, straight_through: bool):
        named = dict(self.classifier.named_modules())

        def hook(module, inputs, out):
            u = self._rand(*out.shape, like=out)
            return sap_prune(out, u, self.ratio, straight_through=straight_through)

        handles = [named[name].register_forward_hook(hook) for name in self.layers]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def forward(self, x: Tensor) -> Tensor:
        with self._pruning(straight_through=False):
            return self.classifier(x)

    def forward_bpda(self, x: Tensor) -> Tensor:
        with self._pruning(straight_through=True):
            return self.classifier(x)

    def extra_repr(self) -> str:
        return f"ratio={self.ratio}, layers={self.layers}, seed={self.seed}"
