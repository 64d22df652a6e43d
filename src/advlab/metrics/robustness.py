"""Per-attack summaries, named as the design notes pin them.

- success rate: over points the model classified correctly, the share whose adversarial
  prediction differs from the label;
- robust accuracy: over all attacked points, the share classified correctly both clean and
  under attack;
- perturbation norms and rho_adv = mean ||r||_2 / ||x||_2 (in the [0,1] representation) over
  the successful points only: a failed point counts as failed, never as a zero perturbation.
"""
from __future__ import annotations

import numpy as np


def _np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def rho_adv(r_l2, x_l2) -> float:
    r_l2, x_l2 = _np(r_l2).astype(np.float64), _np(x_l2).astype(np.float64)
    if r_l2.size == 0:
        return float("nan")
    return float(np.mean(r_l2 / x_l2))


def _stat(fn, values: np.ndarray) -> float:
    return float(fn(values)) if values.size else float("nan")


def attack_summary(label, clean_pred, adv_pred, l2, linf, x_l2, x_linf=None, x_centered_l2=None) -> dict:
    """Per-attack summary. `x_centered_l2` = ||x - mean training image||_2 gives rho_adv in the
    DeepFool paper's convention (MatConvNet inputs were 0-255 minus the mean image; the scale
    cancels in the ratio, the centring does not)."""
    label, clean_pred, adv_pred = _np(label), _np(clean_pred), _np(adv_pred)
    l2, linf, x_l2 = (_np(v).astype(np.float64) for v in (l2, linf, x_l2))
    x_linf = np.ones_like(linf) if x_linf is None else _np(x_linf).astype(np.float64)
    if not (len(label) == len(clean_pred) == len(adv_pred) == len(l2) == len(linf) == len(x_l2)):
        raise ValueError("attack_summary: per-point arrays differ in length")
    correct = clean_pred == label
    fooled = correct & (adv_pred != label)
    n_correct = int(correct.sum())
    return {
        "n_points": int(len(label)),
        "n_correct": n_correct,
        "clean_accuracy_points": float(correct.mean()) if len(label) else float("nan"),
        "success_rate": float(fooled.sum() / n_correct) if n_correct else float("nan"),
        "robust_accuracy": float((correct & (adv_pred == label)).mean()) if len(label) else float("nan"),
        "median_l2": _stat(np.median, l2[fooled]),
        "mean_l2": _stat(np.mean, l2[fooled]),
        "median_linf": _stat(np.median, linf[fooled]),
        "mean_linf": _stat(np.mean, linf[fooled]),
        "rho_adv": rho_adv(l2[fooled], x_l2[fooled]),
        # the DeepFool paper's Table 2: mean ||r||_inf / ||x||_inf
        "rho_adv_linf": rho_adv(linf[fooled], x_linf[fooled]),
        "rho_adv_centered": (rho_adv(l2[fooled], _np(x_centered_l2).astype(np.float64)[fooled])
                             if x_centered_l2 is not None else float("nan")),
    }


def target_cases(distance, success) -> dict:
    """Carlini & Wagner's Table IV reduction. ``distance``, ``success``: [images, targets], each
    image attacked towards every other class. Per image: best case = the smallest distance
    among its successful targets, average case = the mean over them, worst case = the largest
    distance, which exists only when every target succeeded. Returns, per case, the mean over
    the images that have one (None when none has) and the success rate (best: some target
    reached; average: share of all attacks; worst: every target reached). Failed attacks never
    enter a distance mean."""
    dist, ok = _np(distance).astype(float), _np(success).astype(bool)
    any_ok, all_ok = ok.any(1), ok.all(1)
    masked = np.where(ok, dist, np.nan)
    with np.errstate(all="ignore"):
        best, avg = np.nanmin(masked, axis=1), np.nanmean(masked, axis=1)
    worst = dist.max(axis=1)

    def mean(values, keep):
        return float(np.mean(values[keep])) if keep.any() else None

    return {"best": {"mean": mean(best, any_ok), "success": float(any_ok.mean())},
            "average": {"mean": mean(avg, any_ok), "success": float(ok.mean())},
            "worst": {"mean": mean(worst, all_ok), "success": float(all_ok.mean())}}
