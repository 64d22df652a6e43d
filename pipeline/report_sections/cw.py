"""Carlini & Wagner 2017: the 10 x 10 grids (L2, L0, Linf) and Table IV, and the distilled model."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from pipeline import paths
from pipeline.io import load_tensors
from pipeline.report_sections.context import fmt, table

_NORMS = {"l2": "L2", "l0": "L0", "linf": "L∞"}


def _grid_figure(ctx, model: str, grids: dict):
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.3))
    for ax, (norm, label) in zip(axes, _NORMS.items()):
        g = grids[f"{norm}_grid"]  # [source, target, C, H, W]
        ok = grids[f"{norm}_grid_success"]
        s, t, c, h, w = g.shape
        img = g.permute(0, 3, 1, 4, 2).reshape(s * h, t * w, c)
        ax.imshow(img.squeeze(-1).numpy() if c == 1 else img.numpy(), cmap="gray", vmin=0, vmax=1)
        for i in range(s):
            for j in range(t):
                if not ok[i, j]:
                    ax.add_patch(plt.Rectangle((j * w - 0.5, i * h - 0.5), w, h, fill=False, ec="red", lw=1))
        ax.set_xticks([j * w + w / 2 for j in range(t)], [str(j) for j in range(t)], fontsize=7)
        ax.set_yticks([i * h + h / 2 for i in range(s)], [str(i) for i in range(s)], fontsize=7)
        ax.set_xlabel("target classification"), ax.set_ylabel("source classification")
        ax.set_title(f"{model}: targeted {label}", fontsize=9)
    fig.tight_layout()
    out = ctx.figure(fig, f"cw_grid_{model}", f"C&W L2, L0 and Linf: every source digit driven to every target ({model})")
    plt.close(fig)
    return out


def render(ctx) -> str | None:
    cfg = ctx.params["cw_study"]
    found = {m: ctx.json(paths.CW_METRICS, model=m) for m in cfg["models"]}
    found = {m: v for m, v in found.items() if v is not None}
    if not found:
        return None
    paper = ctx.paper()
    t4, dist = paper["cw_table4_mnist"], paper["cw_distilled_mnist"]
    rows = []
    for model, s in found.items():
        ms = (ctx.json(paths.CW_TIMING, model=model) or {}).get("ms_per_attack", {})
        for norm, label in _NORMS.items():
            tg = s["norms"][norm]["targeted"]
            row = {"model": model, "attack": f"C&W {label}"}
            for case in ("best", "average", "worst"):
                row[f"{case} case: mean (success)"] = f"{fmt(tg[case]['mean'])} ({tg[case]['success']:.0%})"
            un = s["norms"][norm]["untargeted"]
            row["untargeted: success, median"] = f"{un['success']:.0%}, {fmt(un['median'])}"
            row["ms / attack"] = f"{ms.get(norm, float('nan')):.0f}"
            rows.append(row)
    for norm, label in _NORMS.items():
        p = t4[norm]
        rows.append({"model": "paper, MNIST", "attack": f"C&W {label}",
                     **{f"{c} case: mean (success)": f"{p[c][0]} ({p[c][1]:.0%})" for c in ("best", "average", "worst")},
                     "untargeted: success, median": "–", "ms / attack": "–"})
        d = dist[norm]
        rows.append({"model": "paper, distilled MNIST", "attack": f"C&W {label}",
                     **{f"{c} case: mean (success)": f"{d[c]} (100%)" for c in ("best", "average", "worst")},
                     "untargeted: success, median": "–", "ms / attack": "–"})
    settings = "; ".join(f"{_NORMS[n]}: " + ", ".join(f"{k} {v}" for k, v in cfg[n].items()) for n in _NORMS)
    lines = [
        "## Carlini–Wagner L2, L0, L∞ (Carlini & Wagner 2017)",
        "",
        f"Targeted, as the paper's Table IV: the first {cfg['n_points']} correctly classified test images, each "
        "driven towards every other class; per image the best, average and worst case over the targets, then "
        "the mean distance over the images (a failed case never enters a mean: its success column says how "
        "many) and the success rate. Distances: L2 and L∞ in [0, 1] pixel units (numerically the paper's "
        "[-0.5, 0.5] ones), L0 in pixels. Untargeted: the same images, success and median distance. Settings: "
        f"{settings} (the paper: L2 9 binary-search steps x 10,000 iterations, L0 / L∞ 1,000).",
        "",
        table(pd.DataFrame(rows)),
    ]
    for model in found:
        gp = ctx.path(paths.CW_GRIDS, model=model)
        if gp.exists() and model in cfg["grid"]:
            lines += ["", _grid_figure(ctx, model, load_tensors(gp))]
    distilled = [m for m in found if m.endswith("-distilled")]
    for model in distilled:
        s = found[model]["norms"]
        lines += ["", f"**Defensive distillation does not survive C&W**: on `{model}` the targeted average-case "
                  f"success is L2 {s['l2']['targeted']['average']['success']:.0%}, L0 "
                  f"{s['l0']['targeted']['average']['success']:.0%}, L∞ {s['linf']['targeted']['average']['success']:.0%} "
                  f"and untargeted L2 {s['l2']['untargeted']['success']:.0%} (paper: {dist['success']:.0%}); FGSM and "
                  "PGD on the softmax cross-entropy see vanishing gradients there (Defended models section)."]
    lines += ["", "Red boxes in the grids: targets not reached (the cell is left black)."]
    return "\n".join(lines)
