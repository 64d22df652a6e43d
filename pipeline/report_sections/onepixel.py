"""Su, Vargas, Sakurai 2019: the one-pixel attack's success table."""
from __future__ import annotations

import pandas as pd

from pipeline import paths
from pipeline.report_sections.context import table

_PAPER_MODEL = {"allconv": "allconv", "nin": "nin", "vgg16": "vgg16"}


def render(ctx) -> str | None:
    cfg = ctx.params["onepixel_study"]
    found = {m: (ctx.csv(paths.ONEPIXEL_TABLE, model=m), ctx.json(paths.ONEPIXEL_METRICS, model=m))
             for m in cfg["models"]}
    found = {m: v for m, v in found.items() if v[0] is not None and v[1] is not None}
    if not found:
        return None
    paper = ctx.paper()["one_pixel_cifar10"]
    cols = {}
    for model, (frame, meta) in found.items():
        one = frame[frame["pixels"] == 1]
        col = {"OriginAcc": f"{meta['origin_acc']:.1%}"}
        if len(one):
            r = one.iloc[0]
            col.update({"Targeted": f"{r['targeted']:.1%}", "Non-targeted": f"{r['non_targeted']:.1%}",
                        "Confidence": f"{r['confidence']:.1%}" if r["confidence"] == r["confidence"] else "–"})
        cols[f"{model} (ours)"] = col
    for key, label in (("allconv", "AllConv"), ("nin", "NiN"), ("vgg16", "VGG16")):
        p = paper[key]
        cols[f"{label} (paper, CIFAR-10)"] = {"OriginAcc": f"{p['origin_acc']:.1%}", "Targeted": f"{p['targeted']:.2%}",
                                             "Non-targeted": f"{p['non_targeted']:.2%}",
                                             "Confidence": f"{p['confidence']:.2%}"}
    one_pixel = pd.DataFrame(cols)
    one_pixel.insert(0, "1 pixel", one_pixel.index)
    rows = []
    for model, (frame, _) in found.items():
        for _, r in frame.iterrows():
            rows.append({"model": model, "pixels": int(r["pixels"]), "non-targeted": f"{r['non_targeted']:.1%}",
                         "targeted": f"{r['targeted']:.1%}",
                         "confidence": f"{r['confidence']:.1%}" if r["confidence"] == r["confidence"] else "–",
                         "model evaluations / image": f"{r['forwards_per_image']:.0f}",
                         "ms / image (non-targeted)": f"{r['ms_per_image_non_targeted']:.0f}"})
    for k in (3, 5):
        p = paper[f"pixels_{k}"]
        rows.append({"model": "AllConv (paper, CIFAR-10)", "pixels": k, "non-targeted": f"{p['non_targeted']:.2%}",
                     "targeted": f"{p['targeted']:.2%}", "confidence": "–", "model evaluations / image": "–",
                     "ms / image (non-targeted)": "–"})
    dataset = ctx.params["data"]["dataset"]
    return "\n".join([
        "## One-pixel attack (Su, Vargas, Sakurai 2019)",
        "",
        f"Differential evolution over (row, column, value per channel) of the perturbed pixels: {cfg['popsize']} "
        f"candidates, F = 0.5, {'no crossover (rand1, the paper)' if cfg['strategy'] == 'rand1' else 'best1bin'}, "
        f"up to {cfg['max_iter']} generations, stopping as soon as a candidate succeeds. On the first "
        f"{cfg['n_points']} correctly classified test images; targeted: "
        + ("every other class of each image (the paper)." if cfg["targets"] == "all" else
           "one random other class per image (the paper uses all nine).")
        + " Confidence: mean probability of the adversarial class over the successful non-targeted examples. "
        "The paper's numbers are on CIFAR-10 (500 images); "
        + (f"this preset is {dataset}: a one-pixel change on a 28 x 28 grey digit is far rarer to succeed "
           "(peer libraries find none on MNIST LeNet in 100 generations); the `cifar10` preset runs the paper's "
           "setting." if dataset.startswith("mnist") else "the same setting as ours."),
        "",
        table(one_pixel),
        "",
        table(pd.DataFrame(rows)),
    ])
