"""DeepFool's Tables 1 and 2 (Moosavi-Dezfooli et al. 2016): ours beside the paper's."""
from __future__ import annotations

import pandas as pd

from pipeline import paths
from pipeline.report_sections.context import fmt, table


def _deepfool_runs(ctx, norm):
    names = [a for a in ctx.params["eval"]["attacks"]
             if ctx.params["attacks"][a]["type"] == "deepfool" and str(ctx.params["attacks"][a]["norm"]) == norm]
    return names[0] if names else None


def render(ctx) -> str | None:
    robustness = ctx.json(paths.ROBUSTNESS)
    timing = ctx.json(paths.TIMING) or {}
    if robustness is None:
        return None
    paper = ctx.paper()
    l2, linf = _deepfool_runs(ctx, "l2"), _deepfool_runs(ctx, "linf")
    if l2 is None and linf is None:
        return None
    out = ["## DeepFool beside the paper (Moosavi-Dezfooli et al. 2016)", ""]
    if l2:
        rows = []
        for model, entry in robustness.items():
            if model not in ctx.params["models"]:  # the paper's table is about naturally trained nets
                continue
            ours = entry["attacks"][l2]
            ref = paper["deepfool_table1"].get(model, {})
            rows.append({
                "classifier": ref.get("label", model),
                "test error (ours)": f"{entry['test_error']:.2%}",
                "test error (paper)": f"{ref['test_error']:.1%}" if ref else "–",
                "ρ_adv DeepFool (ours, ‖x‖)": fmt(ours["rho_adv"]),
                "ρ_adv DeepFool (ours, ‖x − mean‖)": fmt(ours.get("rho_adv_centered")),
                "ρ_adv DeepFool (paper)": fmt(ref.get("deepfool_rho")),
                "success (ours)": f"{ours['success_rate']:.1%}",
                "time / sample (ours)": f"{fmt(timing.get(model, {}).get(l2, {}).get('ms_per_image'))} ms",
                "time / sample (paper)": f"{ref['deepfool_ms']} ms" if ref else "–",
            })
        out += [f"**Table 1** (L2, attack `{l2}`). ρ_adv = mean ‖r‖₂/‖x‖₂ with x in [0, 1] (ours, ‖x‖), "
                "and with x centred on the mean training image (ours, ‖x − mean‖), the representation the "
                "paper's MatConvNet models were fed (0–255 minus the mean image; the scale cancels). "
                "Our time is per image in a batch on this machine; the paper's is per image, one at a "
                "time, on its 2016 hardware.", "",
                table(pd.DataFrame(rows)), ""]
    if linf:
        rows = []
        for model, entry in robustness.items():
            if model not in ctx.params["models"]:
                continue
            ours = entry["attacks"][linf]
            ref = paper["deepfool_table2"].get(model, {})
            rows.append({"classifier": paper["deepfool_table1"].get(model, {}).get("label", model),
                         "ρ∞ DeepFool (ours)": fmt(ours["rho_adv_linf"]),
                         "ρ∞ DeepFool (paper)": fmt(ref.get("deepfool")),
                         "success (ours)": f"{ours['success_rate']:.1%}"})
        out += [f"**Table 2** (L∞, attack `{linf}`): ρ∞ = mean ‖r‖∞/‖x‖∞.", "", table(pd.DataFrame(rows)), ""]
    out.append("The FGSM and L-BFGS columns of the paper's tables are filled by the DeepFool study stages.")
    return "\n".join(out)
