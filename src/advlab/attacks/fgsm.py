"""Fast gradient sign method (Goodfellow et al. 2015): one signed step of size eps."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .pgd import _LOSSES, _input_grad, _is_success, attack_objective
from .result import AttackResult, check_inputs, make_result

__all__ = ["fgsm"]


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    target: Tensor | None = None,
    loss: str = "ce",
    kappa: float = 0.0,
    progress: bool = False,
) -> AttackResult:
    """``x_adv = clip(x + eps * sign(grad))`` where grad ascends CE(logits, y), or, with
    ``target``, descends CE(logits, target). ``loss="cw"`` uses the C&W margin instead
    (see :func:`advlab.attacks.pgd.attack_objective`). ``progress`` is accepted for the
    common calling convention; a single step shows no bar.
    """
    del progress
    check_inputs(x, y, target)
    eps = float(eps)
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")

    dev = x.device
    x_nat = x.detach()
    y = y.to(dev)
    target = target.to(dev) if target is not None else None

    g = _input_grad(model, x_nat, lambda z: attack_objective(z, y, target=target, loss=loss, kappa=kappa))
    x_adv = (x_nat + eps * g.sign()).clamp(0.0, 1.0)
    with torch.no_grad():
        success = _is_success(model(x_adv), y, target)
    n = x_nat.shape[0]
    fwd = torch.full((n,), 2, dtype=torch.int64, device=dev)
    bwd = torch.ones(n, dtype=torch.int64, device=dev)
    return make_result(x_nat, x_adv, success, fwd, bwd)
