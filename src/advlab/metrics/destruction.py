"""Destruction rate (Kurakin, Goodfellow & Bengio 2016): the share of adversarial images
that a transformation makes correctly classified again.

    d = sum_k C(X_k) * not C(X_adv_k) * C(T(X_adv_k)) / sum_k C(X_k) * not C(X_adv_k)

C is top-1 or top-k correctness. Only images that were correct clean and wrong once
attacked count; with none, the rate is undefined (NaN), never 0.
"""

from __future__ import annotations

import math

from torch import Tensor

__all__ = ["confident", "destruction_rate", "eligible", "prefiltered", "topk_correct"]


def topk_correct(logits: Tensor, y: Tensor, k: int = 1) -> Tensor:
    """Bool [N]: ``y`` among the ``k`` highest logits (ties broken by ``torch.topk``)."""
    if logits.dim() != 2 or logits.shape[0] != y.shape[0]:
        raise ValueError(f"logits must be [N, classes] with N = len(y), got {tuple(logits.shape)} and {len(y)} labels")
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k must be in 1..{logits.shape[1]} (the number of classes), got {k}")
    top = logits.topk(k, dim=1).indices
    return (top == y.to(top.device)[:, None]).any(1)


def eligible(clean_correct: Tensor, adv_correct: Tensor, mask: Tensor | None = None) -> Tensor:
    """Bool [N]: the points the destruction rate counts, correct clean and wrong attacked
    (and in ``mask``, the prefiltered case, when given)."""
    c, a = clean_correct.bool(), adv_correct.bool()
    if c.shape != a.shape or c.dim() != 1:
        raise ValueError(f"correctness vectors must be 1-D of one length, got {tuple(c.shape)}, {tuple(a.shape)}")
    out = c & ~a
    if mask is not None:
        if mask.shape != c.shape:
            raise ValueError(f"mask must have shape {tuple(c.shape)}, got {tuple(mask.shape)}")
        out = out & mask.bool().to(out.device)
    return out


def destruction_rate(clean_correct: Tensor, adv_correct: Tensor, transformed_correct: Tensor,
                     mask: Tensor | None = None) -> float:  # fmt: skip
    """The paper's d over the points (bool tensors [N]); ``mask`` restricts the points
    (the prefiltered case). NaN when no point was correct clean and wrong attacked."""
    counted = eligible(clean_correct, adv_correct, mask)
    t = transformed_correct.bool()
    if t.shape != counted.shape:
        raise ValueError(f"correctness vectors must be 1-D of one length, got {tuple(counted.shape)} and "
                         f"{tuple(t.shape)}")  # fmt: skip
    total = int(counted.sum())
    if total == 0:
        return math.nan
    return int((counted & t).sum()) / total


def confident(logits: Tensor, threshold: float) -> Tensor:
    """Bool [N]: the top-1 softmax probability exceeds ``threshold``."""
    return logits.softmax(1).amax(1) > threshold


def prefiltered(clean_logits: Tensor, adv_logits: Tensor, y: Tensor, threshold: float = 0.8) -> Tensor:
    """The paper's prefiltered case: the clean image is classified correctly and the
    adversarial one incorrectly, both with top-1 probability above ``threshold``."""
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must be in [0, 1), got {threshold}")
    y = y.to(clean_logits.device)
    clean_ok = (clean_logits.argmax(1) == y) & confident(clean_logits, threshold)
    adv_wrong = (adv_logits.argmax(1) != y) & confident(adv_logits, threshold)
    return clean_ok & adv_wrong
