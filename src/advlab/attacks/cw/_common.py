"""Pieces shared by the three Carlini-Wagner attacks (``carlini/nn_robust_attacks``).

* tanh change of variables on the box [0, 1]: ``x' = (tanh(w) + 1) / 2``, with the
  original mapped to ``w0 = atanh((2x - 1) * 0.999999)`` so that saturated pixels
  (MNIST's black background) get a finite ``w0``. The reference works on [-0.5, 0.5]
  with ``x' = tanh(w) / 2``: the same map shifted by 0.5, so distances, gradients and
  logits of a model that takes [0, 1] inputs are unchanged.
* the margin of Carlini-Wagner's objective f6, with the own class masked by -inf
  (a 0 mask lets a negative wrong logit lose to the mask: the torchattacks bug);
* Adam written out per coordinate with a per-point step counter, so every point has
  its own state that can be reset on its own, in either TensorFlow 1's form (the
  reference's ``tf.train.AdamOptimizer``) or PyTorch's (foolbox's).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

# the reference's 0.999999 (L2) / 1.999999 on [-0.5, 0.5] (L0, Linf: 0.9999995), one value here
SHRINK = 0.999999
BETA1, BETA2, EPS = 0.9, 0.999, 1e-8  # tf.train.AdamOptimizer and torch.optim.Adam defaults
ADAM_STYLES = ("tf", "torch")


def to_tanh_space(x: Tensor) -> Tensor:
    """``atanh((2x - 1) * SHRINK)``: finite for x in [0, 1]."""
    return torch.atanh((2.0 * x - 1.0) * SHRINK)


def from_tanh_space(w: Tensor) -> tuple[Tensor, Tensor]:
    """``(x', tanh(w))`` with ``x' = (tanh(w) + 1) / 2``; tanh is returned for the chain rule
    ``dx'/dw = (1 - tanh(w)^2) / 2``."""
    t = torch.tanh(w)
    return (t + 1.0) * 0.5, t


def margin(logits: Tensor, own: Tensor, targeted: bool) -> Tensor:
    """How far each point is from its goal: targeted ``max_{i != t} Z_i - Z_t``, untargeted
    ``Z_y - max_{i != y} Z_i``. The goal is met (strictly) where this is < 0.

    ``own`` is the boolean one-hot of the target / true class. Masking with -inf (not 0,
    not -10000 after a 0-multiplication) keeps the best other class right when every
    logit is negative or huge.
    """
    real = logits.masked_fill(~own, 0.0).sum(1)
    other = logits.masked_fill(own, -math.inf).amax(1)
    return other - real if targeted else real - other


def adam_step(
    mod: Tensor, m: Tensor, v: Tensor, g: Tensor, t: Tensor | int, lr: float, style: str
) -> None:
    """One Adam step on ``mod`` [k, D] in place, minimising; ``t`` (>= 1) is the step number
    per point ([k] int tensor) or shared (int).

    "tf": TensorFlow 1 (``lr_t = lr * sqrt(1 - b2^t) / (1 - b1^t)``,
    ``mod -= lr_t * m / (sqrt(v) + eps)``), the reference's optimiser: epsilon is added
    to the uncorrected ``sqrt(v)`` (the paper's "epsilon hat").
    "torch": PyTorch / foolbox (``mod -= lr * m_hat / (sqrt(v_hat) + eps)``): epsilon is
    added after the bias correction, i.e. it is ``1 / sqrt(1 - b2^t)`` times smaller
    relative to the gradient scale (about 32x at t = 1).

    The two differ only where ``|g|`` is comparable to eps, which is exactly the case
    for saturated pixels, whose gradient in tanh space is ``~1e-6`` times the pixel
    gradient: "torch" moves them much more in the first steps (the reference pitfall,
    nn_robust_attacks issue #23).
    """
    m.mul_(BETA1).add_(g, alpha=1.0 - BETA1)
    v.mul_(BETA2).addcmul_(g, g, value=1.0 - BETA2)
    if isinstance(t, Tensor):
        # bias corrections in float64 (1 - 0.999^t loses 4 digits in float32), then cast
        tt = t.to(torch.float64)[:, None]
        bc1, bc2 = (1.0 - BETA1**tt).to(mod.dtype), (1.0 - BETA2**tt).to(mod.dtype)
    else:
        bc1, bc2 = 1.0 - BETA1**t, 1.0 - BETA2**t
    if style == "tf":
        lr_t = lr * (bc2**0.5) / bc1
        mod.sub_(lr_t * m / (v.sqrt() + EPS))
    else:
        mod.sub_(lr * (m / bc1) / ((v / bc2).sqrt() + EPS))


def forward_grad(
    model: nn.Module, x_flat: Tensor, shape, weight: Tensor, objective: Callable[[Tensor], Tensor]
) -> tuple[Tensor, Tensor, Tensor]:
    """Logits at ``x_flat`` [k, D], ``objective(logits)`` [k], and the gradient of
    ``(weight * objective(logits)).sum()`` w.r.t. the input only, flattened [k, D] (a sum,
    so a point's gradient does not depend on the batch; parameters' .grad untouched)."""
    with torch.enable_grad():
        xg = x_flat.detach().view(-1, *shape[1:]).requires_grad_(True)
        logits = model(xg)
        val = objective(logits)
        (g,) = torch.autograd.grad((weight * val).sum(), xg)
    return logits.detach(), val.detach(), g.flatten(1)


def check_logits(logits: Tensor, y: Tensor, target: Tensor | None) -> None:
    """The model must return [N, C >= 2] logits that cover the labels; like the reference,
    refuse outputs that look like probabilities (every row in [0, 1] and summing to 1):
    f6 on softmax outputs has vanishing gradients and meaningless margins. Checked once,
    at x, and only for C > 2."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"the model must output [N, C >= 2] logits, got {tuple(logits.shape)}")
    n_classes = logits.shape[1]
    if int(y.max()) >= n_classes:
        raise ValueError(f"y holds class {int(y.max())} but the model has {n_classes} classes")
    if target is not None and int(target.max()) >= n_classes:
        raise ValueError(f"target holds class {int(target.max())} but the model has {n_classes} classes")
    lg = logits.detach().double()
    # two-class logits such as [1, 0] would pass as probabilities: check from 3 classes on
    if n_classes > 2 and bool((lg >= -1e-4).all() and (lg <= 1 + 1e-4).all()) and bool(
        torch.allclose(lg.sum(1), torch.ones_like(lg[:, 0]), atol=1e-3)
    ):
        raise ValueError(
            "the model output looks like probabilities (rows in [0, 1] summing to 1); "
            "Carlini-Wagner attacks need the logits (pre-softmax)"
        )


def as_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or int(value) != value:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def as_float(name: str, value, expected: str) -> float:
    """``float(value)``, or a ValueError naming the parameter and what it should be."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be {expected}, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {expected}, got {value!r}") from None


def as_positive(name: str, value) -> float:
    v = as_float(name, value, "a finite number > 0")
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def as_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_adam(adam: str) -> str:
    if adam not in ADAM_STYLES:
        raise ValueError(f"adam must be one of {ADAM_STYLES}, got {adam!r}")
    return adam


def judge(model: nn.Module, x_nat: Tensor, best: Tensor, found: Tensor, cls: Tensor, targeted: bool,
          fwd: Tensor) -> Tensor:
    """Judge the returned points in one batch by argmax (what the result promises); a kept
    point that no longer passes (a float tie at the boundary, or batch-size-dependent
    rounding) falls back to x. Modifies ``best``, ``found`` and ``fwd`` in place and
    returns the success mask."""
    with torch.no_grad():
        pred = model(best).argmax(1)
    fwd += 1
    success = pred == cls if targeted else pred != cls
    lost = found & ~success
    if bool(lost.any()):
        best[lost] = x_nat[lost]
        found &= ~lost
        with torch.no_grad():
            pred = model(best).argmax(1)
        fwd += 1
        success = pred == cls if targeted else pred != cls
    return success


@dataclass
class Setup:
    """What every C&W variant knows before optimising: the class it steers by (``cls``: the
    target, or y untargeted), its one-hot mask, the points already meeting the goal at x
    (``done0``, never optimised) and the indices of the others (``run``); per-point counters
    with the forward pass at x already counted."""

    x_nat: Tensor
    y: Tensor
    cls: Tensor
    targeted: bool
    own_all: Tensor
    done0: Tensor
    run: Tensor
    fwd: Tensor
    bwd: Tensor


def first_look(model: nn.Module, x: Tensor, y: Tensor, target: Tensor | None, kappa: float = 0.0) -> Setup:
    """Evaluate the model once at x, check its outputs are logits, and split the points into
    those already adversarial (margin + kappa < 0) and those to attack."""
    dev = x.device
    x_nat = x.detach()
    n = x_nat.shape[0]
    y = y.to(dev)
    targeted = target is not None
    cls = target.to(dev) if targeted else y
    fwd = torch.ones(n, dtype=torch.int64, device=dev)  # the pass at x
    with torch.no_grad():
        logits0 = model(x_nat)
    check_logits(logits0, y, target)
    own_all = nn.functional.one_hot(cls, logits0.shape[1]).to(torch.bool)
    done0 = margin(logits0.detach(), own_all, targeted) + kappa < 0
    return Setup(x_nat, y, cls, targeted, own_all, done0, (~done0).nonzero().flatten(), fwd, torch.zeros_like(fwd))


def retire(work: dict, act: Tensor, finished: Tensor, res: dict, out_keys) -> tuple[dict, Tensor]:
    """Copy the finished points' ``out_keys`` into the results ``res`` (indexed by position
    in the attacked set) and drop them from the per-point state: (state, positions) of the
    points still running."""
    dst = act[finished]
    for key in out_keys:
        res[key][dst] = work[key][finished]
    keep = ~finished
    return {k: v[keep] for k, v in work.items()}, act[keep]
