"""Local intrinsic dimensionality detector (Ma et al. 2018), after ``lid/util.py`` in
anishathalye/obfuscated-gradients (Ma et al.'s code).

LID of a point x with respect to a reference minibatch, at one layer f:

    LID(x) = -( (1/k) sum_{i=1..k} log(r_i(x) / r_k(x)) )^-1

with r_i the distance from f(x) to its i-th nearest neighbour among the layer
outputs of the minibatch (``mle_batch``). As in the reference, the *first* neighbour
is always dropped (columns 1..k of the sorted distances): for a clean point of the
minibatch that is the point itself; for a noisy or adversarial point it is usually
the clean image it was made from. ``k = min(k, len(ref) - 1)``.

``get_lids_random_batch`` cuts the clean, noisy and adversarial sets into aligned
blocks of ``batch_size`` (100) and scores each block of every set against the
*clean* block; :func:`lid_features` does the same (``x_ref`` aligned with ``x``).

The detector (``LIDDetector``) z-scores the features over all training points
(sklearn ``scale`` in the reference) and fits a logistic regression with
adversarial = 1 and clean + noisy = 0 (``LogisticRegressionCV`` in the reference;
here an ``nn.Linear`` fitted by full-batch L-BFGS from zero weights with a fixed L2
penalty, so no randomness is involved and no sklearn is needed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["LIDDetector", "default_lid_layers", "layer_outputs", "lid_features", "mle_lid"]

_INPUT, _LOGITS = "input", "logits"


def mle_lid(query: Tensor, ref: Tensor, k: int = 20) -> Tensor:
    """MLE of the LID of each row of ``query`` [M, D] w.r.t. the rows of ``ref`` [R, D].

    Drops the nearest neighbour (see the module docstring) and uses the next ``k``
    (at most R - 1). Distances of zero are clamped to 1e-12 so duplicates give a large
    finite LID rather than a NaN.
    """
    if query.dim() != 2 or ref.dim() != 2 or query.shape[1] != ref.shape[1]:
        raise ValueError(f"query and ref must be [M, D] and [R, D], got {tuple(query.shape)}, {tuple(ref.shape)}")
    if ref.shape[0] < 2:
        raise ValueError("ref needs at least 2 points (the nearest is dropped)")
    k = min(int(k), ref.shape[0] - 1)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    q, r = query.double(), ref.double()
    # The mm-based Euclidean distance loses precision for near neighbours; avoid it.
    d = torch.cdist(q, r, compute_mode="donot_use_mm_for_euclid_dist")
    nearest = d.topk(k + 1, dim=1, largest=False).values[:, 1:].clamp_min(1e-12)
    logs = torch.log(nearest / nearest[:, -1:]).sum(dim=1)
    return (-k / logs.clamp_max(-1e-12)).to(query.dtype)


def default_lid_layers(model: nn.Module) -> list[str]:
    """``"input"``, every activation layer (ReLU, Sigmoid, Tanh) and ``"logits"``: the
    layers Ma et al. score (their list is every Keras layer's output plus the input)."""
    acts = (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU)
    return [_INPUT] + [n for n, m in model.named_modules() if n and isinstance(m, acts)] + [_LOGITS]


def layer_outputs(model: nn.Module, x: Tensor, layers: Sequence[str]) -> list[Tensor]:
    """Flattened outputs [N, D_l] of the named layers for input ``x`` (no gradient).

    ``"input"`` is ``x`` itself, ``"logits"`` the model output; other names are those
    of ``model.named_modules()``. The model's mode is not changed.
    """
    named = dict(model.named_modules())
    unknown = [n for n in layers if n not in (_INPUT, _LOGITS) and (n not in named or not n)]
    if unknown:
        raise ValueError(f"layers not found in the model: {unknown}")
    captured: dict[str, Tensor] = {}

    def make_hook(name: str):
        def hook(module, inputs, out):
            captured[name] = out.detach().flatten(1).clone()  # clone: a later in-place op may reuse it

        return hook

    handles = [named[n].register_forward_hook(make_hook(n)) for n in layers if n not in (_INPUT, _LOGITS)]
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    captured[_INPUT] = x.detach().flatten(1)
    captured[_LOGITS] = logits.detach().flatten(1)
    return [captured[n] for n in layers]


def lid_features(
    model: nn.Module,
    x: Tensor,
    x_ref: Tensor,
    layers: Sequence[str] | None = None,
    k: int = 20,
    batch_size: int | None = 100,
) -> Tensor:
    """LID of every point of ``x`` at every layer: [N, len(layers)].

    ``batch_size`` set (reference: 100): ``x_ref`` is the clean set aligned with ``x``
    (same length; ``x_ref is x`` for the clean features themselves); block b of ``x``
    is scored against block b of ``x_ref``. ``batch_size=None``: every point of ``x``
    against the whole of ``x_ref`` (one reference minibatch).
    """
    layers = list(default_lid_layers(model) if layers is None else layers)
    if not layers:
        raise ValueError("layers is empty")
    if batch_size is None:
        blocks = [(slice(0, x.shape[0]), slice(0, x_ref.shape[0]))]
    else:
        if int(batch_size) < 2:
            raise ValueError(f"batch_size must be >= 2 or None, got {batch_size}")
        if x_ref.shape[0] != x.shape[0]:
            raise ValueError(
                f"with batch_size set, x_ref must be the clean set aligned with x (same length); "
                f"got {x.shape[0]} and {x_ref.shape[0]} points (use batch_size=None for one reference batch)"
            )
        b = int(batch_size)
        blocks = [(slice(s, s + b), slice(s, s + b)) for s in range(0, x.shape[0], b)]
    out = torch.empty(x.shape[0], len(layers), dtype=x.dtype, device=x.device)
    for qs, rs in blocks:
        query = layer_outputs(model, x[qs], layers)
        ref = query if x_ref is x else layer_outputs(model, x_ref[rs], layers)
        for j, (fq, fr) in enumerate(zip(query, ref)):
            out[qs, j] = mle_lid(fq, fr, k)
    return out


@dataclass
class _Fit:
    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor


class LIDDetector:
    """Ma et al.'s LID detector: LID features per layer, z-scored, logistic regression.

    ``model``: the classifier (its mode is not changed). ``layers``: names for
    :func:`layer_outputs` (default :func:`default_lid_layers`). ``k`` = 20 and
    ``batch_size`` = 100 as in Athalye et al.'s CIFAR evaluation. ``l2``: penalty on
    the logistic weights (on z-scored features). ``threshold``: probability above
    which a point is flagged adversarial.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[str] | None = None,
        *,
        k: int = 20,
        batch_size: int = 100,
        l2: float = 1e-3,
        max_iter: int = 200,
        threshold: float = 0.5,
    ) -> None:
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if int(batch_size) < 2:
            raise ValueError(f"batch_size must be >= 2, got {batch_size}")
        if not (math.isfinite(l2) and l2 >= 0):
            raise ValueError(f"l2 must be a finite number >= 0, got {l2}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        self.model = model
        self.layers = list(default_lid_layers(model) if layers is None else layers)
        self.k, self.batch_size, self.l2 = int(k), int(batch_size), float(l2)
        self.max_iter, self.threshold = int(max_iter), float(threshold)
        self._fit: _Fit | None = None

    def features(self, x: Tensor, x_ref: Tensor) -> Tensor:
        """LID features [N, L] of ``x`` against the aligned clean set ``x_ref`` (may be ``x``)."""
        return lid_features(self.model, x, x_ref, self.layers, self.k, self.batch_size)

    def fit(self, x_clean: Tensor, x_adv: Tensor, x_noisy: Tensor | None = None) -> LIDDetector:
        """Fit on clean (0), noisy (0, optional) and adversarial (1) points, all aligned with ``x_clean``."""
        negatives = [self.features(x_clean, x_clean)]
        if x_noisy is not None:
            negatives.append(self.features(x_noisy, x_clean))
        return self.fit_features(torch.cat(negatives), self.features(x_adv, x_clean))

    def fit_features(self, negatives: Tensor, positives: Tensor) -> LIDDetector:
        """Fit the z-scoring and the logistic regression on precomputed features."""
        feats = torch.cat([negatives, positives]).double()
        labels = torch.cat([feats.new_zeros(len(negatives)), feats.new_ones(len(positives))])
        mean, std = feats.mean(0), feats.std(0, unbiased=False).clamp_min(1e-12)
        z = (feats - mean) / std
        w = z.new_zeros(z.shape[1]).requires_grad_(True)
        b = z.new_zeros(()).requires_grad_(True)
        opt = torch.optim.LBFGS([w, b], max_iter=self.max_iter, tolerance_grad=1e-10, tolerance_change=1e-12,
                                line_search_fn="strong_wolfe")  # fmt: skip

        def closure():
            opt.zero_grad()
            loss = nn.functional.binary_cross_entropy_with_logits(z @ w + b, labels) + self.l2 * w.square().sum()
            loss.backward()
            return loss

        with torch.enable_grad():
            opt.step(closure)
        self._fit = _Fit(mean, std, w.detach(), b.detach())
        return self

    def proba_from_features(self, feats: Tensor) -> Tensor:
        """P(adversarial) [N] for precomputed features."""
        if self._fit is None:
            raise RuntimeError("LIDDetector is not fitted: call fit or fit_features first")
        f = self._fit
        z = (feats.double().to(f.mean.device) - f.mean) / f.std
        return torch.sigmoid(z @ f.weight + f.bias).to(feats.dtype)

    def predict_proba(self, x: Tensor, x_ref: Tensor) -> Tensor:
        """P(adversarial) [N] for ``x`` scored against the aligned clean set ``x_ref``."""
        return self.proba_from_features(self.features(x, x_ref))

    def detection_rate(self, x: Tensor, x_ref: Tensor) -> float:
        """Fraction of ``x`` flagged (probability > threshold)."""
        return float((self.predict_proba(x, x_ref) > self.threshold).double().mean())
