"""Madry et al. 2018's MNIST table: ours beside the paper's."""
from __future__ import annotations

import pandas as pd

from pipeline import paths
from pipeline.report_sections.context import table


def _int(v) -> str:
    return "–" if pd.isna(v) else str(int(v))


def render(ctx) -> str | None:
    ours = ctx.csv(paths.MADRY_TABLE)
    if ours is None:
        return None
    cfg = ctx.params["madry_table"]
    paper = ctx.paper()["madry_table_mnist"]
    same_shape = len(paper) == len(ours) and len(cfg["steps"]) == 2 and len(cfg["restarts"]) == 2
    rows = []
    for i, r in ours.iterrows():
        rows.append({
            "method": r["method"], "steps": _int(r["steps"]), "restarts": _int(r["restarts"]), "source": r["source"],
            f"{cfg['model']} (ours)": f"{r['acc_A']:.1%}",
            "Madry MNIST (paper)": f"{paper[i]['acc']:.1%}" if same_shape else "–",
            f"{cfg['natural']}, natural (ours)": f"{r['acc_natural']:.1%}",
            "time": f"{r['seconds']:.1f} s",
        })
    pgd = ours[(ours["method"] == "PGD") & (ours["source"] == "A") & (ours["restarts"] == 1)].iloc[0]
    clean = ours.iloc[0]
    worst = ours[ours["source"] == "A"]["acc_A"].min()
    blackbox = ours[ours["source"] != "A"]
    blackbox = blackbox[blackbox["method"] != "Natural"]
    out = [
        "## Madry et al.'s table (PGD adversarial training)",
        "",
        f"Accuracy on the first {int(ctx.json(paths.MADRY_METRICS)['n_points'])} test images under L∞ attacks of "
        f"eps {cfg['eps']} (pixels in [0, 1]; the paper's 0.3 is the same unit), PGD step {cfg['step_size']} with "
        "a random start, restarts keep a point's first success. Sources: **A** white-box on the evaluated model; "
        f"**A'** examples made on an independently trained copy of `{cfg['model']}` (seed + {cfg['copy_seed']}) "
        f"and transferred; **B** made on the naturally trained `{cfg['other']}` and transferred. CW is PGD on the "
        f"C&W margin loss, CW+ with margin κ = {cfg['kappa']}; Targeted aims at a random wrong class. The natural "
        "column attacks the naturally trained model the same way (white-box rows on itself). The paper's column is "
        "Madry's MNIST network (a larger CNN, full MNIST, 100k iterations of 40-step PGD).",
        "",
        table(pd.DataFrame(rows)),
        "",
        f"- PGD {_int(pgd['steps'])} steps (white-box): {pgd['acc_A']:.1%} for `{cfg['model']}` against "
        f"{pgd['acc_natural']:.1%} for the natural `{cfg['natural']}` (clean: {clean['acc_A']:.1%} / "
        f"{clean['acc_natural']:.1%}). " + (
            "Adversarial training holds, as in the paper." if pgd["acc_A"] > pgd["acc_natural"] + 0.2 else
            "The gap is smaller than the paper's: this preset trains on little data for few epochs."),
        f"- More steps and restarts take the white-box accuracy from {pgd['acc_A']:.1%} to {worst:.1%} "
        "(paper: 93.2% → 89.3%).",
        f"- Transferred attacks: lowest black-box accuracy {blackbox['acc_A'].min():.1%} vs {worst:.1%} white-box "
        + ("(black-box is weaker, as in the paper)." if blackbox["acc_A"].min() >= worst else
           "(here black-box is not weaker than white-box: a sign of gradient masking to look into)."),
    ]
    return "\n".join(out)
