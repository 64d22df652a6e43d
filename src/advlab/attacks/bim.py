"""Basic iterative method and iterative least-likely class (Kurakin, Goodfellow, Bengio
2016, "Adversarial examples in the physical world").

Both take ``N`` signed steps of size ``alpha`` from the clean image, clipping after each
step to the intersection of the eps-ball and the pixel box (the paper's ``Clip_{X,eps}``):

    BIM:   X_{n+1} = Clip_{X,eps}( X_n + alpha * sign(grad_X CE(X_n, y_true)) )
    ILLC:  X_{n+1} = Clip_{X,eps}( X_n - alpha * sign(grad_X CE(X_n, y_LL)) ),
           y_LL = argmin_y p(y | X), taken once from the CLEAN image.

The paper works in 0-255 units with alpha = 1 and N = min(eps + 4, 1.25 eps). In the
[0, 1] unit that is alpha = 1/255 and N = min(255 eps + 4, 1.25 * 255 eps), rounded down
(what torchattacks' BIM does) and at least 1 for eps > 0. All N steps are taken even
after a point is misclassified: the method is defined by its step count, and later
steps push the point further from the boundary (the paper's destruction rates depend on
that), so nothing is frozen early.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .pgd import pgd
from .result import AttackResult, check_inputs, make_result

__all__ = ["bim", "illc", "kurakin_steps", "least_likely_class"]

ALPHA = 1.0 / 255.0  # one intensity level


def kurakin_steps(eps: float) -> int:
    """Kurakin et al.'s iteration count for eps in the [0, 1] unit:
    floor(min(255 eps + 4, 1.25 * 255 eps)), at least 1 when eps > 0."""
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if eps == 0:
        return 0
    # the 1e-9 absorbs float error such as 255 * (8/255) = 7.999999999
    return max(1, int(math.floor(min(255.0 * eps + 4.0, 1.25 * 255.0 * eps) + 1e-9)))


def least_likely_class(model: nn.Module, x: Tensor) -> Tensor:
    """argmin over classes of the model's output on ``x`` (the softmax is monotone, so the
    logits give the same class)."""
    with torch.no_grad():
        return model(x.detach()).argmin(dim=1)


def _check(eps: float, steps: int | None, step_size: float) -> tuple[float, int, float]:
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    step_size = float(step_size)
    if not (math.isfinite(step_size) and step_size > 0):
        raise ValueError(f"step_size must be a finite number > 0, got {step_size}")
    if steps is None:
        steps = kurakin_steps(eps)
    elif isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a whole number >= 0 or None (Kurakin's count), got {steps!r}")
    return eps, int(steps), step_size


def bim(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    step_size: float = ALPHA,
    steps: int | None = None,
    target: Tensor | None = None,
    progress: bool = False,
) -> AttackResult:
    """Basic iterative method: ``steps`` signed-gradient steps of ``step_size`` on the
    cross-entropy of ``y`` (or towards ``target``), clipped to the Linf ``eps``-ball and
    [0, 1] after every step. ``steps=None`` uses Kurakin's count :func:`kurakin_steps`.

    extra: "steps" (int, the step count used).
    """
    check_inputs(x, y, target)
    eps, steps, step_size = _check(eps, steps, step_size)
    r = pgd(model, x, y, eps, norm="linf", steps=steps, step_size=step_size, random_start=False,
            restarts=1, target=target, progress=progress)
    return make_result(x, r.x_adv, r.success, r.counts["forward"], r.counts["backward"], steps=steps)


def illc(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    step_size: float = ALPHA,
    steps: int | None = None,
    progress: bool = False,
) -> AttackResult:
    """Iterative least-likely class: BIM descending the cross-entropy of the class the
    model finds least likely on the clean ``x``.

    ``success`` is misclassification (prediction != y), the paper's measure (top-1
    accuracy on the adversarial images); whether the least-likely class itself was reached
    is in ``extra["target_reached"]``. A point whose least-likely class equals its label
    (possible only for a model that rates the true class lowest) is attacked all the same.

    extra: "target" (int64 [N], y_LL), "target_reached" (bool [N]), "steps" (int).
    """
    check_inputs(x, y)
    eps, steps, step_size = _check(eps, steps, step_size)
    y = y.to(x.device)
    y_ll = least_likely_class(model, x)
    # pgd refuses target == y (a targeted attack must aim elsewhere); such points are
    # attacked towards y_ll all the same by handing pgd a label that differs from it.
    surrogate = y
    if bool((y_ll == y).any()):
        surrogate = torch.where(y_ll == y, (y_ll + 1) % _num_classes(model, x), y)
    r = pgd(model, x, surrogate, eps, norm="linf", steps=steps, step_size=step_size, random_start=False,
            restarts=1, target=y_ll, progress=progress)
    with torch.no_grad():
        pred = model(r.x_adv).argmax(dim=1)
    fwd = r.counts["forward"] + 1  # the clean pass that picked y_LL
    return make_result(x, r.x_adv, pred != y, fwd, r.counts["backward"],
                       target=y_ll, target_reached=pred == y_ll, steps=steps)


def _num_classes(model: nn.Module, x: Tensor) -> int:
    with torch.no_grad():
        return int(model(x[:1].detach()).shape[1])
