"""Szegedy et al. 2014 §3: the images that most activate single units vs random directions."""
from __future__ import annotations

import matplotlib.pyplot as plt

from pipeline import paths
from pipeline.artifacts import load_prepared


def render(ctx) -> str | None:
    top = ctx.csv(paths.UNITS_TOP)
    summary = ctx.json(paths.UNITS_METRICS)
    if top is None or summary is None:
        return None
    data = load_prepared(ctx.preset)
    images = data.x_test
    k = int(top["rank"].max()) + 1
    figs = []
    for kind, title in (("unit", "single units e_i"), ("random", "random directions v")):
        sub = top[top["kind"] == kind]
        dirs = sorted(sub["direction"].unique())
        fig, axes = plt.subplots(len(dirs), k, figsize=(k * 0.9, len(dirs) * 1.0), squeeze=False)
        for i, d in enumerate(dirs):
            rows = sub[sub["direction"] == d].sort_values("rank")
            for j, (_, r) in enumerate(rows.iterrows()):
                img = images[int(r["index"])]
                ax = axes[i][j]
                ax.imshow(img.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray", vmin=0, vmax=1)
                ax.set_xticks([]), ax.set_yticks([])
                if j == 0:
                    name = f"unit {int(r['unit'])}" if kind == "unit" else f"v{d}"
                    ax.set_ylabel(f"{name}\n{r['purity']:.0%}", fontsize=7)
        fig.suptitle(f"{summary['model']}.{summary['layer']}: {title}", fontsize=9)
        figs.append(ctx.figure(fig, f"units_{kind}", f"top images for {title}"))
        plt.close(fig)
    pu, pr = summary["mean_purity_unit"], summary["mean_purity_random"]
    return "\n".join([
        "## Units vs random directions (Szegedy et al. 2014)",
        "",
        f"Held-out (test) images with the largest activation of single units of `{summary['model']}.{summary['layer']}` "
        f"({summary['dim']} dimensions; units drawn at random among the active ones) and with the largest projection "
        "on random unit directions. Beside each row: its label purity, the share of its images with the most "
        "common label.",
        "",
        figs[0],
        "",
        figs[1],
        "",
        f"Mean label purity: units {pu:.0%}, random directions {pr:.0%}. "
        + ("The random directions are as coherent as the units (within 20 points): the natural basis is no more "
           "interpretable than a random one, as Szegedy et al. found." if pr >= pu - 0.2 else
           "Here the units look more coherent than the random directions, unlike Szegedy et al.'s observation."),
    ])
