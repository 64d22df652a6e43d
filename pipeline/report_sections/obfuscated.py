"""Athalye, Carlini, Wagner 2018: obfuscated-gradient defenses, naive vs adaptive PGD."""
from __future__ import annotations

import pandas as pd

from pipeline import paths
from pipeline.report_sections.context import table

_NAME = {"thermometer": "Thermometer encoding (Buckman et al.)", "bitdepth": "Bit-depth reduction (Guo et al.)",
         "jpeg": "JPEG compression (Guo et al.)", "tv": "TV minimisation of dropped pixels (Guo et al.)",
         "sap": "Stochastic activation pruning (Dhillon et al.)",
         "resize_pad": "Random resize and pad (Xie et al.)", "lid": "LID detector (Ma et al.)"}
_PAPER_KEY = {"thermometer": "thermometer", "bitdepth": "input_transformations", "jpeg": "input_transformations",
              "tv": "input_transformations", "sap": "sap", "resize_pad": "randomization", "lid": "lid"}


def render(ctx) -> str | None:
    frame = ctx.csv(paths.OBFUSCATED_TABLE)
    summary = ctx.json(paths.OBFUSCATED_METRICS)
    if frame is None or summary is None:
        return None
    cfg = ctx.params["obfuscated"]
    paper = ctx.paper()["obfuscated"]
    rows = []
    for _, r in frame.iterrows():
        p = paper[_PAPER_KEY[r["defense"]]]
        rows.append({"defense": _NAME[r["defense"]], "clean acc.": f"{r['clean_acc']:.1%}",
                     "naive PGD acc.": f"{r['naive_acc']:.1%}", "adaptive attack": r["adaptive_attack"],
                     "adaptive acc.": f"{r['adaptive_acc']:.1%}",
                     "paper (adaptive)": f"{p['accuracy']:.0%} ({p['dataset']}, eps {p['eps']})",
                     "time naive / adaptive": f"{r['naive_seconds']:.1f} s / {r['adaptive_seconds']:.1f} s"})
    lines = [
        "## Obfuscated gradients (Athalye, Carlini, Wagner 2018)",
        "",
        f"Linf PGD at eps {cfg['eps']}, {cfg['steps']} steps of {cfg['step_size']}, on the first "
        f"{summary['n_points']} test images; the input defenses wrap the naturally trained `{cfg['model']}` "
        f"(clean accuracy {summary['accuracy']['undefended.clean_acc']:.1%} undefended), the thermometer encoding "
        f"({cfg['thermometer']['levels']} levels) its own `{cfg['thermometer']['arch']}` trained on the codes "
        f"(test accuracy {summary['thermometer_test_accuracy']:.1%}). Naive: PGD through the defense's real forward "
        "pass, the evaluation the defenses were published with. Adaptive: BPDA (the backward pass of the "
        "non-differentiable step replaced by the identity, or the thermometer's ramp) and, for the random "
        f"defenses, EoT over fresh draws; a random defense labels a point by a majority of {cfg['eval_samples']} "
        "passes. For the LID detector a point counts as defended when it is classified correctly or flagged; its "
        "adaptive attack is PGD on the C&W margin with high confidence. The paper's accuracies are on CIFAR-10 / "
        "ImageNet against its own attack settings; ours are on this preset's data.",
        "",
        table(pd.DataFrame(rows)),
    ]
    if "clean_flagged" in frame and frame["defense"].eq("lid").any():
        lid = frame[frame["defense"] == "lid"].iloc[0]
        lines += ["", f"LID flags {lid['clean_flagged']:.1%} of clean test images, {lid['naive_detected']:.1%} of the "
                  f"successful naive PGD examples and {lid['adaptive_detected']:.1%} of the successful "
                  "high-confidence ones."]
    broken = frame[(frame["naive_acc"] - frame["adaptive_acc"] >= 0.2)]["defense"].tolist()
    masked = frame[frame["naive_acc"] < 0.2]["defense"].tolist()
    lines += ["", "- Gradients obfuscated (naive PGD leaves >= 20 points more accuracy than the adaptive attack): "
              + (", ".join(_NAME[d] for d in broken) or "none")]
    lines += ["- Naive PGD already succeeds (< 20% accuracy), so nothing is hidden from it on this model: "
              + (", ".join(_NAME[d] for d in masked) or "none")]
    return "\n".join(lines)
