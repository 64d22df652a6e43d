"""Defended variants (distillation, Madry PGD training, fast FGSM training) beside natural ones."""
from __future__ import annotations

import pandas as pd

from pipeline import paths
from pipeline.report_sections.context import table

_WHAT = {"distilled": "defensive distillation", "madry": "PGD adversarial training",
         "fast": "FGSM-with-random-start training"}


def _seconds(ctx, model) -> float:
    h = ctx.csv(paths.TRAIN_HISTORY, model=model)
    return float(h["seconds"].sum()) if h is not None and "seconds" in h else float("nan")


def render(ctx) -> str | None:
    robustness = ctx.json(paths.ROBUSTNESS)
    if robustness is None:
        return None
    defended = [m for m in robustness if "-" in m]
    if not defended:
        return None
    attacks = ctx.params["eval"]["attacks"]
    rows = []
    for model in sorted({m.split("-")[0] for m in defended} & set(robustness)) + defended:
        entry = robustness[model]
        arch, _, defense = model.partition("-")
        row = {"model": model, "training": _WHAT.get(defense, "natural"),
               "training time": f"{_seconds(ctx, model):.1f} s", "clean acc.": f"{entry['clean_accuracy']:.1%}"}
        for attack in attacks:
            a = entry["attacks"][attack]
            row[f"{attack}: robust acc. / success"] = f"{a['robust_accuracy']:.1%} / {a['success_rate']:.1%}"
        rows.append(row)
    paper = ctx.paper()
    d, m = paper["distillation"], paper["madry_mnist"]
    p = ctx.params
    notes = [
        "## Defended models",
        "",
        "Robust accuracy counts points classified correctly clean and under attack; success rate counts "
        "fooled points among the correctly classified ones (attack settings in the Robustness table).",
        "",
        table(pd.DataFrame(rows)),
        "",
        f"- **Distillation** (T = {p['defenses']['distilled']['temperature']}): the paper reports JSMA success "
        f"falling from {d['jsma_success_natural']:.1%} to {d['jsma_success_distilled']:.2%} on MNIST at T = 100; "
        "gradient attacks on the softmax cross-entropy (FGSM, PGD here) see vanishing gradients on the "
        "distilled model, so its robust accuracy above is gradient masking, not robustness: DeepFool, which "
        "works on the logits, still succeeds on it. "
        f"Carlini & Wagner's attack on logits reaches {d['cw_success_distilled']:.0%} on it "
        "(\"distillation does not survive C&W\"): see the Carlini–Wagner and JSMA sections for ours.",
        f"- **Madry PGD training** (eps {p['defenses']['madry']['eps']}, {p['defenses']['madry']['steps']} × "
        f"{p['defenses']['madry']['step_size']}): Madry's MNIST model keeps {m['clean']:.2%} clean, "
        f"{m['fgsm']:.2%} under FGSM and {m['pgd100']:.2%} under 100-step PGD at eps 0.3 (a larger CNN, "
        "the full MNIST and 100k iterations; ours trains on this preset's data and epochs).",
        f"- **Fast training** (eps {p['defenses']['fast']['eps']}, step {p['defenses']['fast']['step_size']}): "
        "one gradient per batch instead of steps + 1; compare its training time and PGD robust accuracy "
        "with the Madry row.",
    ]
    return "\n".join(notes)
