"""Kurakin et al. 2016 §2-3: fast vs basic iterative vs iterative least-likely class across eps."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from pipeline import paths
from pipeline.report_sections.context import table

_LABEL = {"fast": "fast (FGSM)", "basic_iterative": "iter. basic", "least_likely": "iter. l.l. class"}


def _wide(frame: pd.DataFrame) -> pd.DataFrame:
    clean = frame[frame["method"] == "clean"].iloc[0]
    rows = []
    for eps, sub in frame[frame["method"] != "clean"].groupby("eps_255", sort=True):
        row = {"eps (×1/255)": f"{eps:g}", "steps N": int(sub["steps"].max())}
        for method, label in _LABEL.items():
            r = sub[sub["method"] == method].iloc[0]
            row[f"{label} top-1 / top-5"] = f"{r['top1']:.1%} / {r['top5']:.1%}"
        rows.append(row)
    head = {"eps (×1/255)": "0 (clean)", "steps N": 0,
            **{f"{label} top-1 / top-5": f"{clean['top1']:.1%} / {clean['top5']:.1%}" for label in _LABEL.values()}}
    return pd.DataFrame([head] + rows)


def _findings(frame: pd.DataFrame) -> list[str]:
    """The paper's qualitative claims, checked on these numbers."""
    sub = frame[frame["method"] != "clean"].pivot(index="eps", columns="method", values="top1")
    iter_stronger = bool((sub["basic_iterative"] <= sub["fast"] + 1e-9).all())
    fast_monotone = bool(sub["fast"].is_monotonic_decreasing)
    return [f"iterative basic at most as accurate as fast at every eps: {'yes' if iter_stronger else 'no'}",
            f"fast-method accuracy falls as eps grows: {'yes' if fast_monotone else 'no'}"]


def render(ctx) -> str | None:
    models = ctx.params["kurakin"]["models"]
    frames = {m: ctx.csv(paths.KURAKIN_TABLE, model=m) for m in models}
    frames = {m: f for m, f in frames.items() if f is not None}
    if not frames:
        return None
    fig, axes = plt.subplots(1, len(frames), figsize=(4.2 * len(frames), 3.2), squeeze=False)
    for ax, (model, frame) in zip(axes[0], frames.items()):
        clean = frame[frame["method"] == "clean"].iloc[0]
        for method, label in _LABEL.items():
            sub = frame[frame["method"] == method].sort_values("eps_255")
            ax.plot(sub["eps_255"], sub["top1"], marker="o", label=f"{label} top-1")
            ax.plot(sub["eps_255"], sub["top5"], marker=".", ls="--", label=f"{label} top-5")
        ax.axhline(clean["top1"], color="grey", lw=0.8, label="clean top-1")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("eps (pixel levels of 1/255)")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1.02)
        ax.set_title(model, fontsize=9)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    figure = ctx.figure(fig, "kurakin_accuracy", "top-1 and top-5 accuracy against eps for the three methods")
    plt.close(fig)
    lines = [
        "## Fast vs iterative attacks across eps (Kurakin, Goodfellow, Bengio 2016)",
        "",
        "Top-1 / top-5 accuracy on the first "
        f"{ctx.params['kurakin']['n_points']} test images (a clean error counts as an error). Fast: one signed step "
        "of eps. Iterative basic: N = min(eps + 4, 1.25 eps) steps of one intensity level (alpha = 1/255), clipped "
        "to the eps-ball after each. Iterative least-likely class: the same steps towards the class the model finds "
        "least likely on the clean image. The paper measured Inception v3 on ImageNet (its Figure 2, accuracy "
        "against eps in 0-255 units): the iterative methods bring accuracy down at eps where the fast method "
        "leaves much of it, and the least-likely class aims at a class far from the true one, so its errors are "
        "the more drastic ones (compare the top-5 columns). MNIST digits need larger eps than ImageNet photos, "
        "hence the range beyond 16.",
        "",
        figure,
    ]
    for model, frame in frames.items():
        lines += ["", f"**{model}**", "", table(_wide(frame)), ""]
        lines += [f"- {f}" for f in _findings(frame)]
    return "\n".join(lines)
