"""Clean vs adversarial images with predictions, and histograms of perturbation norms."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pipeline import paths  # noqa: E402
from pipeline.artifacts import load_prepared  # noqa: E402
from pipeline.io import load_tensors  # noqa: E402


def _show(ax, img):
    img = img.numpy()
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(np.transpose(img, (1, 2, 0)).clip(0, 1))
    ax.set_xticks([])
    ax.set_yticks([])


def render(ctx) -> str | None:
    attacks = ctx.params["eval"]["attacks"]
    k = ctx.params["report"]["n_examples"]
    out = []
    data = None
    for model in ctx.params["eval"]["models"]:
        tables = {a: ctx.csv(paths.ADV_TABLE, model=model, attack=a) for a in attacks}
        tables = {a: t for a, t in tables.items() if t is not None}
        if not tables:
            continue
        if data is None:
            data = load_prepared(ctx.preset)
        cols = min(k, min(len(t) for t in tables.values()))
        fig, axes = plt.subplots(len(tables) + 1, cols, figsize=(1.3 * cols, 1.5 * (len(tables) + 1)), squeeze=False)
        first = next(iter(tables.values()))
        for j in range(cols):
            _show(axes[0, j], data.x_test[j])
            axes[0, j].set_title(f"y={first['label'][j]} p={first['clean_pred'][j]}", fontsize=7)
        axes[0, 0].set_ylabel("clean", fontsize=8)
        for i, (attack, t) in enumerate(tables.items(), start=1):
            adv = load_tensors(ctx.path(paths.ADV_EXAMPLES, model=model, attack=attack))["x_adv"]
            for j in range(cols):
                _show(axes[i, j], adv[j])
                color = "red" if t["adv_pred"][j] != t["label"][j] else "black"
                axes[i, j].set_title(f"p={t['adv_pred'][j]} L2={t['l2'][j]:.2f}", fontsize=7, color=color)
            axes[i, 0].set_ylabel(attack, fontsize=8)
        fig.suptitle(f"{model}: clean (top) and adversarial images, predictions p (red: fooled)", fontsize=9)
        out.append(ctx.figure(fig, f"examples_{model}", f"adversarial examples for {model}"))
        plt.close(fig)

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
        fooled = {a: t[(t["clean_pred"] == t["label"]) & (t["adv_pred"] != t["label"])] for a, t in tables.items()}
        for ax, norm in zip(axes, ("l2", "linf")):
            top = max([float(f[norm].max()) for f in fooled.values() if len(f)] + [1e-6])
            bins = np.linspace(0, top * 1.02, 41)  # shared bins: the attacks are comparable
            for attack, f in fooled.items():
                if len(f):
                    ax.hist(f[norm], bins=bins, alpha=0.55, label=attack)
        axes[0].set(xlabel="‖r‖₂", ylabel="points", title=f"{model}: L2 of successful perturbations")
        axes[1].set(xlabel="‖r‖∞", title=f"{model}: L∞ of successful perturbations")
        for ax in axes:
            ax.legend(fontsize=7)
        out.append(ctx.figure(fig, f"norms_{model}", f"perturbation norms for {model}"))
        plt.close(fig)
    if not out:
        return None
    return "\n\n".join(["## Figures"] + out)
