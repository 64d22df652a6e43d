"""Projected gradient descent (Madry et al. 2018), Linf and L2, with restarts.

Linf follows MadryLab/mnist_challenge ``pgd_attack.py``: uniform random start in the
eps-ball (then clipped to [0, 1]), signed gradient step, projection onto the eps-ball,
then onto [0, 1]. L2 uses a random start uniform in the L2 ball, a step along the
L2-normalised gradient, L2 projection, then clipping.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .result import AttackResult, check_inputs, make_result

__all__ = ["pgd", "attack_objective"]

_LOSSES = ("ce", "cw")


def attack_objective(
    logits: Tensor,
    y: Tensor,
    *,
    target: Tensor | None = None,
    loss: str = "ce",
    kappa: float = 0.0,
) -> Tensor:
    """Per-point quantity the attacker maximises.

    ce: CE(logits, y) untargeted, -CE(logits, target) targeted.
    cw: Carlini-Wagner margin with confidence kappa, in Madry's form
        ``-relu(z_y - max_{j != y} z_j + kappa)`` (targeted:
        ``-relu(max_{j != t} z_j - z_t + kappa)``); the true/target class is masked
        with -inf, not 0, so a negative wrong logit can still win.
    """
    if loss == "ce":
        if target is None:
            return nn.functional.cross_entropy(logits, y, reduction="none")
        return -nn.functional.cross_entropy(logits, target, reduction="none")
    if loss == "cw":
        cls = y if target is None else target
        own = logits.gather(1, cls[:, None]).squeeze(1)
        mask = nn.functional.one_hot(cls, logits.shape[1]).to(torch.bool)
        other = logits.masked_fill(mask, float("-inf")).amax(dim=1)
        margin = own - other if target is None else other - own
        return -torch.relu(margin + kappa)
    raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")


def _is_success(logits: Tensor, y: Tensor, target: Tensor | None) -> Tensor:
    pred = logits.argmax(dim=1)
    return pred != y if target is None else pred == target


def _input_grad(model: nn.Module, x: Tensor, objective) -> Tensor:
    """Gradient of sum(objective(model(x))) w.r.t. x only (never touches param .grad).
    A sum, not a mean, so each point's gradient does not depend on the batch size."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        obj = objective(model(xg))
        (g,) = torch.autograd.grad(obj.sum(), xg)
    return g


def _flat_norm(t: Tensor) -> Tensor:
    return torch.linalg.vector_norm(t.flatten(1), ord=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def _random_start(shape, eps: float, norm: str, generator: torch.Generator, dtype) -> Tensor:
    gdev = generator.device
    if norm == "linf":
        u = torch.rand(shape, generator=generator, device=gdev, dtype=dtype)
        return (2.0 * u - 1.0) * eps
    # Uniform in the L2 ball: Gaussian direction, radius eps * U^(1/d).
    d = math.prod(shape[1:])
    direction = torch.randn(shape, generator=generator, device=gdev, dtype=dtype)
    direction = direction / _flat_norm(direction).clamp_min(1e-12)
    radius = torch.rand(shape[0], generator=generator, device=gdev, dtype=dtype) ** (1.0 / d)
    return direction * (eps * radius).view(-1, *([1] * (len(shape) - 1)))


def _project(x_new: Tensor, x0: Tensor, eps: float, norm: str) -> Tensor:
    if norm == "linf":
        x_new = torch.minimum(torch.maximum(x_new, x0 - eps), x0 + eps)
    else:
        delta = x_new - x0
        factor = (eps / _flat_norm(delta).clamp_min(1e-12)).clamp(max=1.0)
        x_new = x0 + delta * factor
    return x_new.clamp(0.0, 1.0)


def _check_params(eps: float, norm: str, steps: int, step_size: float, restarts: int, loss: str) -> None:
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if not (math.isfinite(step_size) and step_size >= 0):
        raise ValueError(f"step_size must be a finite number >= 0, got {step_size}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    if restarts < 1:
        raise ValueError(f"restarts must be >= 1, got {restarts}")
    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    steps: int = 40,
    step_size: float = 0.01,
    random_start: bool = True,
    restarts: int = 1,
    target: Tensor | None = None,
    loss: str = "ce",
    kappa: float = 0.0,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> AttackResult:
    """Madry's PGD in the ``norm`` ball of radius ``eps`` (pixel unit [0, 1]).

    Each restart runs ``steps`` full steps (no early stop inside a restart, as in
    Madry's code). Across restarts a point keeps its first successful restart, or,
    if none succeeds, the restart with the highest final objective; successful points
    are frozen and not attacked again. Randomness comes only from ``generator``
    (default: a fresh one seeded 0); noise is drawn for the whole batch on every
    restart, so one point's noise does not depend on which others succeeded.

    extra: "restart" (int64 [N], index of the kept restart), "objective" (final
    objective of the kept point).
    """
    check_inputs(x, y, target)
    _check_params(float(eps), norm, int(steps), float(step_size), int(restarts), loss)
    eps, step_size = float(eps), float(step_size)
    if generator is None:
        generator = torch.Generator().manual_seed(0)

    dev = x.device
    x_nat = x.detach()
    y = y.to(dev)
    target = target.to(dev) if target is not None else None
    n = x_nat.shape[0]

    best = x_nat.clone()
    best_obj = torch.full((n,), float("-inf"), device=dev, dtype=x_nat.dtype)
    success = torch.zeros(n, dtype=torch.bool, device=dev)
    kept = torch.zeros(n, dtype=torch.int64, device=dev)
    fwd = torch.zeros(n, dtype=torch.int64, device=dev)
    bwd = torch.zeros(n, dtype=torch.int64, device=dev)

    bar = tqdm(total=restarts * steps, desc=f"pgd-{norm}", disable=not progress, leave=False)
    for r in range(restarts):
        noise = _random_start(x_nat.shape, eps, norm, generator, x_nat.dtype) if random_start else None
        idx = (~success).nonzero().flatten()
        if idx.numel() == 0:
            bar.update(steps)
            continue
        x0, yy = x_nat[idx], y[idx]
        tt = target[idx] if target is not None else None

        def objective(logits: Tensor) -> Tensor:
            return attack_objective(logits, yy, target=tt, loss=loss, kappa=kappa)

        xa = x0
        if noise is not None:
            xa = (x0 + noise.to(dev)[idx]).clamp(0.0, 1.0)
        for _ in range(steps):
            g = _input_grad(model, xa, objective)
            if norm == "linf":
                xa = xa + step_size * g.sign()
            else:
                xa = xa + step_size * g / _flat_norm(g).clamp_min(1e-12)
            xa = _project(xa, x0, eps, norm)
            bar.update(1)
        fwd[idx] += steps + 1
        bwd[idx] += steps

        with torch.no_grad():
            logits = model(xa)
        ok = _is_success(logits, yy, tt)
        obj = objective(logits).detach()
        take = ok | (obj > best_obj[idx]) | (r == 0)
        sel = idx[take]
        best[sel] = xa[take]
        best_obj[sel] = obj[take]
        kept[sel] = r
        success[idx] = ok
    bar.close()

    return make_result(x_nat, best, success, fwd, bwd, restart=kept, objective=best_obj)
