"""Papernot et al. 2016 (EuroS&P): JSMA success, features changed, hardness, adversarial distance."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.report_sections.context import table


def _heat(ax, matrix, title, fmt_str, cmap):
    m = np.array([[np.nan if v is None else v for v in row] for row in matrix], dtype=float)
    im = ax.imshow(m, cmap=cmap)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            if not np.isnan(m[i, j]):
                ax.text(j, i, format(m[i, j], fmt_str), ha="center", va="center", fontsize=5)
    ax.set_xlabel("target class"), ax.set_ylabel("source class")
    ax.set_xticks(range(m.shape[1])), ax.set_yticks(range(m.shape[0]))
    ax.tick_params(labelsize=6)
    ax.set_title(title, fontsize=8)
    return im


def render(ctx) -> str | None:
    cfg = ctx.params["jsma_study"]
    found = {m: ctx.json(paths.JSMA_METRICS, model=m) for m in cfg["models"]}
    found = {m: v for m, v in found.items() if v is not None}
    if not found:
        return None
    paper, dist = ctx.paper()["jsma_mnist"], ctx.paper()["distillation"]
    rows = []
    for model, s in found.items():
        ms = (ctx.json(paths.JSMA_TIMING, model=model) or {}).get("ms_per_attack", {})
        for label, r in s["runs"].items():
            rows.append({"model": model, "theta": r["theta"], "F": "logits (JSMA-Z)" if r["variant"] == "logits"
                         else "softmax (JSMA-F)", "success": f"{r['success']:.1%}",
                         "features changed (successes)": "–" if r["pixels_changed"] is None
                         else f"{r['pixels_changed']:.2%}", "ms / attack": f"{ms.get(label, float('nan')):.0f}",
                         "R(F)": f"{s['robustness']:.3f}"})
    rows.append({"model": "paper, LeNet MNIST", "theta": 1.0, "F": "softmax", "success": f"{paper['success']:.1%}",
                 "features changed (successes)": f"{paper['pixels_changed']:.2%}", "ms / attack": "–", "R(F)": "–"})
    rows.append({"model": "paper, distilled T=100", "theta": 1.0, "F": "softmax",
                 "success": f"{dist['jsma_success_natural']:.2%} → {dist['jsma_success_distilled']:.2%}",
                 "features changed (successes)": "–", "ms / attack": "–", "R(F)": "–"})
    lines = [
        "## JSMA (Papernot et al. 2016)",
        "",
        f"Targeted, the pairwise saliency map: each of the first {cfg['n_points']} correctly classified test images "
        f"towards every other class, at most gamma = {cfg['gamma']:.1%} of the features (floor(D gamma / 2) "
        "pairs), features saturated by theta. Success over all source-target attacks; features changed averaged "
        "over the successes. R(F): the mean over the images of min over targets of the adversarial distance "
        "A(X, t), the share of features with zero single-feature saliency towards t.",
        "",
        table(pd.DataFrame(rows)),
    ]
    for model, s in found.items():
        panels = [("success_matrix", f"success rate ({s['matrices_run']})", ".0%", "viridis")]
        if s.get("hardness") is not None:
            panels.append(("hardness", "hardness H(s, t)", ".3f", "magma"))
        panels.append(("adversarial_distance", "adversarial distance A(X, t)", ".2f", "cividis"))
        fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.6))
        for ax, (key, title, f, cmap) in zip(np.atleast_1d(axes), panels):
            _heat(ax, s[key], f"{model}: {title}", f, cmap)
        fig.tight_layout()
        lines += ["", ctx.figure(fig, f"jsma_{model}", f"JSMA success, hardness and adversarial distance ({model})")]
        plt.close(fig)
    lines += ["", f"Hardness: the paper's area under the distortion-vs-success-rate curve over the budgets "
              f"{', '.join(f'{g:.1%}' for g in found[next(iter(found))]['hardness_gammas'])} (larger = harder pair)."]
    distilled = [m for m in found if m.endswith("-distilled")]
    for model in distilled:
        base = model.split("-")[0]
        if base in found:
            soft = [k for k, r in found[model]["runs"].items() if r["variant"] == "softmax" and r["theta"] > 0]
            if soft:
                k = soft[0]
                lines += ["", f"**Distillation against JSMA-F**: success {found[base]['runs'][k]['success']:.1%} on "
                          f"`{base}` and {found[model]['runs'][k]['success']:.1%} on `{model}` (paper: "
                          f"{dist['jsma_success_natural']:.2%} → {dist['jsma_success_distilled']:.2%}); on the logits "
                          f"(JSMA-Z) the distilled model gives "
                          + ", ".join(f"{r['success']:.1%}" for r in found[model]["runs"].values()
                                      if r["variant"] == "logits" and r["theta"] > 0)
                          + ": the saturated softmax hides the gradient, the logits do not."]
    return "\n".join(lines)
