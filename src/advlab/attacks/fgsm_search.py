"""FGSM's eps searched rather than fixed, as the DeepFool paper reports it.

FGSM's direction sign(grad) at x does not depend on eps, so one gradient per point serves
every eps: the searches below cost one backward pass and forward passes only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .pgd import _input_grad, attack_objective
from .result import check_inputs

__all__ = ["fgsm_direction", "fgsm_eps_for_rate", "fgsm_minimal_eps"]


def fgsm_direction(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """sign of the gradient of CE(logits, y) at x: FGSM's step direction."""
    check_inputs(x, y, None)
    return _input_grad(model, x.detach(), lambda z: attack_objective(z, y.to(x.device))).sign()


def _errors(model: nn.Module, x: Tensor, y: Tensor, direction: Tensor, eps: Tensor) -> Tensor:
    """Per point: is clip(x + eps_i * direction) misclassified? ``eps`` is [N] or a scalar."""
    eps = eps.reshape(-1, *([1] * (x.dim() - 1))) if eps.dim() else eps
    with torch.no_grad():
        return model((x + eps * direction).clamp(0.0, 1.0)).argmax(1) != y


def _check(max_eps: float, tol: float) -> None:
    if not (math.isfinite(max_eps) and max_eps > 0):
        raise ValueError(f"max_eps must be a finite number > 0, got {max_eps}")
    if not (math.isfinite(tol) and tol > 0):
        raise ValueError(f"tol must be a finite number > 0, got {tol}")


def fgsm_eps_for_rate(model: nn.Module, x: Tensor, y: Tensor, rate: float = 0.9, *, max_eps: float = 1.0,
                      tol: float = 1e-4, direction: Tensor | None = None) -> float:
    """The smallest eps (to ``tol``) at which FGSM misclassifies at least ``rate`` of the points.

    Errors count every point, clean mistakes included ("90% error on the data"). The error
    rate of FGSM is not strictly monotone in eps; bisection returns an eps that reaches the
    rate with eps - tol below it not reaching it. Returns ``inf`` when even ``max_eps`` fails.
    """
    if not 0 < rate <= 1:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    _check(max_eps, tol)
    y = y.to(x.device)
    direction = fgsm_direction(model, x, y) if direction is None else direction

    def reached(eps: float) -> bool:
        return float(_errors(model, x, y, direction, torch.tensor(eps, device=x.device)).float().mean()) >= rate

    if not reached(max_eps):
        return math.inf
    lo, hi = 0.0, float(max_eps)
    while hi - lo > tol:
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if reached(mid) else (mid, hi)
    return hi


def fgsm_minimal_eps(model: nn.Module, x: Tensor, y: Tensor, *, max_eps: float = 1.0, tol: float = 1e-4,
                     direction: Tensor | None = None) -> Tensor:
    """Per point, the smallest eps (to ``tol``) whose FGSM step misclassifies it: a batched
    bisection (all points at once). Points misclassified clean get 0; points still correct
    at ``max_eps`` get ``inf``."""
    _check(max_eps, tol)
    y = y.to(x.device)
    direction = fgsm_direction(model, x, y) if direction is None else direction
    n = x.shape[0]
    lo = torch.zeros(n, device=x.device, dtype=x.dtype)
    hi = torch.full((n,), float(max_eps), device=x.device, dtype=x.dtype)
    found = _errors(model, x, y, direction, hi)
    clean_wrong = _errors(model, x, y, direction, torch.zeros_like(hi))
    for _ in range(max(1, math.ceil(math.log2(max_eps / tol)))):
        mid = (lo + hi) / 2
        err = _errors(model, x, y, direction, mid)
        hi = torch.where(err, mid, hi)
        lo = torch.where(err, lo, mid)
    out = torch.where(found, hi, torch.full_like(hi, math.inf))
    return torch.where(clean_wrong, torch.zeros_like(out), out)
