"""Kurakin et al. 2016 §3-4: destruction rates of adversarial images sent through the simulated
print-and-photo path, the single-transform ablation, and EoT images made to survive it."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from pipeline import paths
from pipeline.io import load_tensors
from pipeline.report_sections.context import table

_LABEL = {"fast": "fast", "basic_iterative": "iter. basic", "least_likely": "iter. l.l. class",
          "basic_iterative_eot": "iter. basic + EoT"}
_COLUMNS = ("average_top1", "average_top5", "prefiltered_top1", "prefiltered_top5")
MIN_N = 20  # the findings use only rates over at least this many images


def _cell(rate: float, n: int) -> str:
    return "– (n = 0)" if rate != rate else f"{rate:.1%} (n = {n})"


def _table(frame: pd.DataFrame, paper: dict) -> pd.DataFrame:
    rows = []
    for method in _LABEL:
        sub = frame[frame["method"] == method].sort_values("eps_255", ascending=False)
        for _, r in sub.iterrows():
            row = {"adversarial method": f"{_LABEL[method]} eps = {r['eps_255']:g}",
                   "adv. top-1 acc.": f"{r['adv_top1_accuracy']:.1%}"}
            ref = paper.get(method, {}).get(int(r["eps_255"])) if float(r["eps_255"]).is_integer() else None
            for i, col in enumerate(_COLUMNS):
                ours = _cell(r[col], int(r[f"{col}_n"]))
                row[col.replace("_", " ")] = f"{ours} [paper {ref[i]:.1%}]" if ref else ours
            rows.append(row)
    return pd.DataFrame(rows)


def _rate(frame: pd.DataFrame, method: str, eps: float) -> float:
    """Top-1 average-case rate of one method at one eps, NaN when over fewer than MIN_N images."""
    r = frame[(frame["method"] == method) & ((frame["eps"] - eps).abs() < 1e-12)]
    if not len(r) or int(r["average_top1_n"].iloc[0]) < MIN_N:
        return math.nan
    return float(r["average_top1"].iloc[0])


def _findings(frame: pd.DataFrame) -> list[str]:
    """The paper's qualitative findings, checked on these numbers, over rates of >= MIN_N images."""
    lines = []
    eps_all = sorted(frame["eps"].unique())
    trio = ("fast", "basic_iterative", "least_likely")
    usable = [e for e in eps_all if not any(math.isnan(_rate(frame, m, e)) for m in trio)]
    if usable:
        fast, basic, ll = (sum(_rate(frame, m, e) for e in usable) / len(usable) for m in trio)
        at = ", ".join(f"{e * 255:g}" for e in usable)
        lines.append(f"iterative methods destroyed more often than fast (mean top-1 destruction over eps {at}: "
                     f"fast {fast:.1%}, iter. basic {basic:.1%}, l.l. class {ll:.1%}): "
                     f"{'yes' if fast < min(basic, ll) else 'no'}; least-likely class most: "
                     f"{'yes' if ll >= basic else 'no'}")
    fast = [(e, _rate(frame, "fast", e)) for e in eps_all]
    fast = [(e, v) for e, v in fast if not math.isnan(v)]
    if len(fast) >= 2:
        falls = all(b <= a + 1e-9 for (_, a), (_, b) in zip(fast, fast[1:]))
        lines.append("fast-method destruction falls as eps grows ("
                     + ", ".join(f"{e * 255:g}: {v:.1%}" for e, v in fast) + f"): {'yes' if falls else 'no'}")
    for e in sorted(frame.loc[frame["method"] == "basic_iterative_eot", "eps"]):
        eot, plain = _rate(frame, "basic_iterative_eot", e), _rate(frame, "basic_iterative", e)
        if not (math.isnan(eot) or math.isnan(plain)):
            lines.append(f"EoT images survive better at eps {e * 255:g}: destruction {eot:.1%} vs {plain:.1%} "
                         f"for plain iter. basic: {'yes' if eot < plain else 'no'}")
    if lines:
        lines.append(f"(only rates over at least {MIN_N} images enter these checks)")
    return lines


def _ablation_figure(ctx, ablation: pd.DataFrame, model: str) -> str:
    transforms = list(dict.fromkeys(ablation["transform"]))
    fig, axes = plt.subplots(1, len(transforms), figsize=(3.0 * len(transforms), 2.8), squeeze=False)
    for ax, transform in zip(axes[0], transforms):
        sub = ablation[ablation["transform"] == transform]
        for (method, eps), part in sub.groupby(["method", "eps_255"], sort=False):
            part = part.sort_values("strength")
            ax.plot(part["strength"], part["average_top1"], marker="o", label=f"{_LABEL.get(method, method)} {eps:g}")
        ax.set_title(transform, fontsize=9)
        ax.set_xlabel({"brightness": "delta", "contrast": "mu", "blur": "sigma (px)", "noise": "std",
                       "jpeg": "quality"}.get(transform, "strength"))
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("top-1 destruction rate")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    name = f"physical_ablation_{model}"
    out = ctx.figure(fig, name, f"destruction rate against the strength of each single transformation, {model}")
    plt.close(fig)
    return out


def _trace_figure(ctx, trace: dict, model: str) -> str:
    names, images = trace["names"], trace["images"]
    fig, axes = plt.subplots(1, len(names), figsize=(1.3 * len(names), 1.6))
    for ax, name, img in zip(axes, names, images):
        ax.imshow(img.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy(), cmap="gray", vmin=0, vmax=1)
        ax.set_title(name, fontsize=7)
        ax.axis("off")
    fig.tight_layout()
    name = f"physical_trace_{model}"
    out = ctx.figure(fig, name, "one test image after each step of the print-and-photo simulation")
    plt.close(fig)
    return out


def render(ctx) -> str | None:
    cfg = ctx.params.get("physical")
    if not cfg:
        return None
    frames = {m: ctx.csv(paths.PHYSICAL_TABLE, model=m) for m in cfg["models"]}
    frames = {m: f for m, f in frames.items() if f is not None}
    if not frames:
        return None
    paper = ctx.paper().get("physical_photo", {})
    steps = ", ".join(f"{k} {v}" if v not in ({}, None, True) else k for k, v in cfg["print_photo"].items()
                      if v is not False and k != "order")  # fmt: skip
    lines = [
        "## Adversarial examples in the physical world: print-and-photo destruction rates (Kurakin et al. 2016)",
        "",
        f"{cfg['n_points']} random test images (seeded). Adversarial images of each method are made 8-bit and sent "
        f"through the simulated print-and-photo path ({steps}); the destruction rate is the share of images that "
        "were right clean and wrong attacked which the path makes right again (top-1 / top-5 correctness). "
        f"Prefiltered: clean right and adversarial wrong, both with top-1 probability > {cfg['prefilter_confidence']}. "
        "n is the denominator (rates over few images are noisy; '–' where none qualifies). In brackets, the "
        "paper's rates for real photos of printed ImageNet images (Inception v3); eps in 1/255 units. "
        "iter. basic + EoT averages each step's gradient over "
        f"{cfg['eot']['samples']} draws of the differentiable simulator, and is measured on other draws. "
        "With 10 classes (MNIST, CIFAR-10) top-5 correctness survives most attacks, so few images qualify for "
        "the top-5 columns. In the ablation, a negative brightness shift destroys much on MNIST: the black "
        "background clips to 0 and takes the perturbation's positive part there with it (ImageNet photos have "
        "no such floor, and the paper found brightness harmless).",
    ]
    for model, frame in frames.items():
        lines += ["", f"**{model}**", "", table(_table(frame, paper)), ""]
        lines += [f"- {f}" for f in _findings(frame)]
        ablation = ctx.csv(paths.PHYSICAL_ABLATION, model=model)
        if ablation is not None and len(ablation):
            lines += ["", "Single transformations (the paper's §4), top-1 destruction rate, average case:", "",
                      _ablation_figure(ctx, ablation, model)]
            wide = ablation.assign(method=ablation["method"].map(_LABEL).fillna(ablation["method"]),
                                   setting=ablation["transform"] + " " + ablation["strength"].map("{:g}".format))
            wide = wide.pivot_table(index="setting", columns="method", values="average_top1", sort=False)
            lines += ["", table(wide.map(lambda v: "–" if v != v else f"{v:.1%}").reset_index())]
        trace_path = ctx.path(paths.PHYSICAL_TRACE, model=model)
        if trace_path.exists():
            lines += ["", _trace_figure(ctx, load_tensors(trace_path), model)]
    return "\n".join(lines)
