"""What every attack returns, and the input checks every attack runs first.

Norms are measured on the clipped ``x_adv`` in the [0, 1] pixel unit, flattened
per point, so that robust accuracy, median norm and rho_adv are plain reductions
over a result table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "AttackResult",
    "check_inputs",
    "make_result",
    "perturbation_norms",
]


@dataclass(frozen=True)
class AttackResult:
    """Outcome of one attack on a batch of N points.

    x_adv:   adversarial points, clipped to [0, 1], same shape as ``x``, detached.
    success: bool [N]; prediction changed (untargeted) or target reached (targeted),
             judged on the clipped ``x_adv``.
    norms:   {"l0", "l2", "linf"} -> float [N], norms of ``x_adv - x`` per point.
    counts:  {"forward", "backward"} -> int64 [N], model evaluations and
             gradient evaluations (vector-Jacobian products) spent on each point.
    extra:   attack-specific per-point data, e.g. "iterations", or "raw"
             (DeepFool's unclipped point).
    """

    x_adv: Tensor
    success: Tensor
    norms: dict[str, Tensor]
    counts: dict[str, Tensor]
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.success.shape[0])


def perturbation_norms(x: Tensor, x_adv: Tensor) -> dict[str, Tensor]:
    """Per-point l0 (changed coordinates), l2 and linf norms of ``x_adv - x``."""
    if x.shape != x_adv.shape:
        raise ValueError(f"x and x_adv differ in shape: {tuple(x.shape)} vs {tuple(x_adv.shape)}")
    d = (x_adv.detach() - x.detach()).flatten(1)
    return {
        "l0": (d != 0).sum(dim=1).to(d.dtype),
        "l2": torch.linalg.vector_norm(d, ord=2, dim=1),
        "linf": d.abs().amax(dim=1) if d.shape[1] > 0 else d.new_zeros(d.shape[0]),
    }


def make_result(
    x: Tensor,
    x_adv: Tensor,
    success: Tensor,
    forward: Tensor,
    backward: Tensor,
    **extra: Any,
) -> AttackResult:
    """Assemble an :class:`AttackResult`, clipping ``x_adv`` to [0, 1] and detaching."""
    x_adv = x_adv.detach().clamp(0.0, 1.0)
    return AttackResult(
        x_adv=x_adv,
        success=success.detach().to(torch.bool),
        norms=perturbation_norms(x, x_adv),
        counts={
            "forward": forward.detach().to(torch.int64),
            "backward": backward.detach().to(torch.int64),
        },
        extra=dict(extra),
    )


def _check_labels(name: str, labels: Any, n: int) -> None:
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of class indices, got {type(labels).__name__}")
    if labels.dim() != 1:
        raise ValueError(f"{name} must be 1-D [N], got shape {tuple(labels.shape)}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but x has {n} points")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"{name} holds a negative class index")


def check_inputs(x: Tensor, y: Tensor | None = None, target: Tensor | None = None) -> None:
    """Raise ValueError unless ``x`` is a non-empty NCHW batch of finite values in [0, 1]
    and ``y`` / ``target`` are integer vectors of length N with ``target != y`` everywhere."""
    if not isinstance(x, Tensor):
        raise ValueError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D NCHW batch, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError("x is an empty batch (N = 0)")
    if not x.dtype.is_floating_point:
        raise ValueError(f"x must be floating point in [0, 1], got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"x must lie in [0, 1]; got values in [{lo:.4g}, {hi:.4g}]")
    n = x.shape[0]
    if y is not None:
        _check_labels("y", y, n)
    if target is not None:
        _check_labels("target", target, n)
        if y is not None:
            same = target.to(y.device) == y
            if bool(same.any()):
                idx = same.nonzero().flatten()[:5].tolist()
                raise ValueError(f"target equals the label y for points {idx}; a targeted attack needs target != y")
