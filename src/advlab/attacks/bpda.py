"""Adaptive PGD for obfuscated-gradient defences: BPDA and EoT (Athalye, Carlini & Wagner 2018).

:func:`bpda_eot_pgd` is Madry-style PGD (see :mod:`advlab.attacks.pgd`) whose step
direction is the gradient of the attack objective averaged over ``eot_samples``
fresh forward passes of ``model`` (Expectation over Transformation: for a random
defence every pass draws new randomness; the replicas of a point are one batched
forward). BPDA is not a flag here but a model: give it ``defense.bpda()`` (forward
exact, backward through the approximation) and the gradient is the BPDA gradient;
give it a random defence and the average is the EoT gradient; both at once for a
random defence with a BPDA view.

Differences from the reference attacks (``anishathalye/obfuscated-gradients``), on
purpose: the update is PGD's signed step (Linf) or normalised step (L2) with
projection, not "Adam on sign(grad)" (thermometer, SAP, LID notebooks) nor a raw
gradient step (randomisation, input transformations); report it as PGD. Success is
judged on ``model``'s own forward, which for a BPDA view is the exact defence.

The naive attack (the one the defences were evaluated with) is plain
:func:`advlab.attacks.pgd` on the exact defence: its gradient is zero (thermometer,
bit depth, JPEG) or one random sample (SAP, randomisation, TV).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .pgd import _LOSSES, _flat_norm, _is_success, _project, _random_start, attack_objective
from .result import AttackResult, check_inputs, make_result

__all__ = ["bpda_eot_pgd"]


def _check_int(name: str, value, lowest: int) -> int:
    integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not integral or int(value) < lowest:
        raise ValueError(f"{name} must be an integer >= {lowest}, got {value!r}")
    return int(value)


def _check_params(eps, norm, step_size, loss, kappa) -> tuple[float, float, float]:
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    eps, step_size, kappa = float(eps), float(step_size), float(kappa)
    if not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps}")
    if not (math.isfinite(step_size) and step_size >= 0):
        raise ValueError(f"step_size must be a finite number >= 0, got {step_size}")
    if loss not in _LOSSES:
        raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
    if not (math.isfinite(kappa) and kappa >= 0):
        raise ValueError(f"kappa must be a finite number >= 0, got {kappa}")
    return eps, step_size, kappa


def _reseed_random_modules(model: nn.Module, generator: torch.Generator) -> None:
    """Restart the stream of every random defence inside ``model`` from ``generator``,
    so that the whole attack (gradients and success) is a function of its seed."""
    mods = [m for m in model.modules() if callable(getattr(m, "reseed", None))]
    if not mods:
        return
    base = int(torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device))
    for i, m in enumerate(mods):
        m.reseed(base + i)


def _eot_step_direction(model, xa, y, target, eot, loss, kappa) -> tuple[Tensor, Tensor]:
    """Mean gradient of the objective over ``eot`` passes, and whether every pass was fooled."""
    m = xa.shape[0]
    y_rep = y.repeat(eot)
    t_rep = target.repeat(eot) if target is not None else None
    with torch.enable_grad():
        xg = xa.detach().requires_grad_(True)
        logits = model(xg.repeat(eot, 1, 1, 1) if eot > 1 else xg)
        obj = attack_objective(logits, y_rep, target=t_rep, loss=loss, kappa=kappa)
        if obj.requires_grad:
            (g,) = torch.autograd.grad(obj.sum(), xg)
        else:  # an exact defence with no graph at all: its gradient is zero
            g = torch.zeros_like(xg)
    fooled = _is_success(logits.detach(), y_rep, t_rep).view(eot, m).all(dim=0)
    return g / eot, fooled


def bpda_eot_pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    norm: str = "linf",
    steps: int = 40,
    step_size: float = 0.01,
    eot_samples: int = 1,
    eval_samples: int = 1,
    loss: str = "ce",
    kappa: float = 0.0,
    random_start: bool = True,
    early_stop: bool = False,
    target: Tensor | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> AttackResult:
    """PGD in the ``norm`` ball of radius ``eps`` with BPDA / EoT gradients.

    model:        the defence to attack, as the gradient source: ``defense.bpda()`` for
                  BPDA, the defence itself for EoT on a differentiable random defence.
    steps, step_size, random_start, loss, kappa, target: as in :func:`advlab.attacks.pgd`
                  (one restart; noise drawn for the whole batch from ``generator``).
    eot_samples:  forward/backward passes averaged per step (1 = plain PGD gradient).
    early_stop:   freeze a point at the first iterate that every one of that step's
                  ``eot_samples`` passes misclassifies (the randomisation reference stops
                  when no sample predicts y); default off, as in Madry's PGD.
    eval_samples: success is judged on the returned point by this many forward passes
                  of ``model``: success iff a strict majority of them is fooled. Use 1 for
                  a deterministic defence, more (e.g. 10) for a random one.

    Randomness: the random start, then a seed for every module of ``model`` that has a
    ``reseed`` method (the random defences of :mod:`advlab.defenses`), all from
    ``generator`` (default seeded 0); the same seed gives the same result. For a
    deterministic model, ``eot_samples=1`` and ``early_stop=False`` this is exactly
    :func:`advlab.attacks.pgd` with ``restarts=1``.

    Every point keeps its last iterate (inside the eps-ball), successful or not, as
    :func:`advlab.attacks.pgd` does: for a random defence a point judged failed may
    still fool some passes. counts: ``eot_samples`` forwards and backwards per step
    taken, plus ``eval_samples`` forwards.
    extra: "iterations" (int64 [N], steps taken), "fooled_fraction" (float [N], share of
    the ``eval_samples`` passes fooled).
    """
    check_inputs(x, y, target)
    eps, step_size, kappa = _check_params(eps, norm, step_size, loss, kappa)
    steps = _check_int("steps", steps, 0)
    eot_samples = _check_int("eot_samples", eot_samples, 1)
    eval_samples = _check_int("eval_samples", eval_samples, 1)
    if generator is None:
        generator = torch.Generator().manual_seed(0)

    dev = x.device
    x_nat = x.detach()
    y = y.to(dev)
    target = target.to(dev) if target is not None else None
    n = x_nat.shape[0]

    noise = _random_start(x_nat.shape, eps, norm, generator, x_nat.dtype) if random_start else None
    _reseed_random_modules(model, generator)
    xa = x_nat.clone() if noise is None else (x_nat + noise.to(dev)).clamp(0.0, 1.0)

    active = torch.ones(n, dtype=torch.bool, device=dev)
    iterations = torch.zeros(n, dtype=torch.int64, device=dev)
    fwd = torch.zeros(n, dtype=torch.int64, device=dev)
    bwd = torch.zeros(n, dtype=torch.int64, device=dev)

    for _ in tqdm(range(steps), desc=f"bpda-eot-pgd-{norm}", disable=not progress, leave=False):
        idx = active.nonzero().flatten()
        if idx.numel() == 0:
            break
        cur, yy = xa[idx], y[idx]
        tt = target[idx] if target is not None else None
        g, fooled = _eot_step_direction(model, cur, yy, tt, eot_samples, loss, kappa)
        fwd[idx] += eot_samples
        bwd[idx] += eot_samples
        if norm == "linf":
            new = cur + step_size * g.sign()
        else:
            new = cur + step_size * g / _flat_norm(g).clamp_min(1e-12)
        new = _project(new, x_nat[idx], eps, norm)
        move = ~fooled if early_stop else torch.ones_like(fooled)
        xa[idx[move]] = new[move]
        iterations[idx[move]] += 1
        if early_stop:
            active[idx[fooled]] = False

    fooled_count = torch.zeros(n, dtype=torch.int64, device=dev)
    with torch.no_grad():
        for _ in range(eval_samples):
            fooled_count += _is_success(model(xa), y, target).to(torch.int64)
    fwd += eval_samples
    success = 2 * fooled_count > eval_samples
    frac = fooled_count.to(x_nat.dtype) / eval_samples
    return make_result(x_nat, xa, success, fwd, bwd, iterations=iterations, fooled_fraction=frac)
