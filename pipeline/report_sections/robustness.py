"""Every model under every attack: the evaluate stage's summary as a table."""
from __future__ import annotations

import pandas as pd

from pipeline import paths
from pipeline.report_sections.context import fmt, table


def render(ctx) -> str | None:
    summary = ctx.csv(paths.SUMMARY)
    timing = ctx.json(paths.TIMING) or {}
    if summary is None or summary.empty:
        return None
    rows = []
    for _, r in summary.iterrows():
        cfg = ctx.params["attacks"].get(r["attack"], {})
        setting = ", ".join(f"{k}={v}" for k, v in cfg.items() if k != "type")
        ms = timing.get(r["model"], {}).get(r["attack"], {}).get("ms_per_image", r.get("ms_per_image"))
        rows.append({
            "model": r["model"], "attack": f"{r['attack']} ({setting})",
            "clean acc.": fmt(r["clean_accuracy"]), "success rate": f"{r['success_rate']:.1%}",
            "robust acc.": f"{r['robust_accuracy']:.1%}", "median L2": fmt(r["median_l2"]),
            "mean L2": fmt(r["mean_l2"]), "median L∞": fmt(r["median_linf"]),
            "ρ_adv (L2)": fmt(r["rho_adv"]), "ms / image": fmt(float(ms), 3),
        })
    return "\n".join(["## Robustness", "",
                      "Clean accuracy on the whole test set; the rest on the attacked points.", "",
                      table(pd.DataFrame(rows))])
