"""DeepFool's Tables 1-3 and Figures 6-7 (Moosavi-Dezfooli et al. 2016): ours beside the paper's."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from pipeline import paths
from pipeline.report_sections.context import fmt, table


def _ms(t: dict, key: str) -> str:
    return f"{fmt(t.get(key))} ms" if key in t else "–"


def render(ctx) -> str | None:
    models = ctx.params["deepfool_study"]["models"]
    studies = {m: ctx.json(paths.DF_STUDY_METRICS, model=m) for m in models}
    studies = {m: s for m, s in studies.items() if s is not None}
    if not studies:
        return None
    timing = {m: ctx.json(paths.DF_STUDY_TIMING, model=m) or {} for m in studies}
    paper = ctx.paper()
    p1, p2, p3 = paper["deepfool_table1"], paper["deepfool_table2"], paper["deepfool_table3"]
    cfg = ctx.params["deepfool_study"]
    t1, t2, t3 = [], [], []
    for m, s in studies.items():
        ref = p1.get(m, {})
        label = ref.get("label", m)
        t1.append({
            "classifier": label,
            "test error (ours / paper)": f"{s['test_error']:.2%} / {fmt(ref.get('test_error'))}",
            "ρ_adv DeepFool (ours, ‖x‖)": fmt(s["deepfool_l2"]["rho_adv"]),
            "ρ_adv DeepFool (ours, ‖x − mean‖)": fmt(s["deepfool_l2"]["rho_adv_centered"]),
            "ρ_adv DeepFool (paper)": fmt(ref.get("deepfool_rho")),
            "time (ours / paper)": f"{_ms(timing[m], 'deepfool_l2_ms')} / {fmt(ref.get('deepfool_ms'))} ms",
            "ρ_adv FGSM (ours)": fmt(s["fgsm"]["rho_adv_all"]),
            "ρ_adv FGSM (paper)": fmt(ref.get("fgsm_rho")),
            "FGSM eps": fmt(s["fgsm"]["eps"]),
            "time FGSM (ours / paper)": f"{_ms(timing[m], 'fgsm_ms')} / {fmt(ref.get('fgsm_ms'))} ms",
            "ρ_adv L-BFGS (ours)": fmt(s["lbfgs"]["rho_adv"]) if "lbfgs" in s else "–",
            "ρ_adv L-BFGS (paper)": fmt(ref.get("lbfgs_rho")),
            "time L-BFGS (ours)": _ms(timing[m], "lbfgs_ms"),
        })
        r2 = p2.get(m, {})
        t2.append({"classifier": label, "ρ∞ DeepFool (ours)": fmt(s["deepfool_linf"]["rho_adv_linf"]),
                   "ρ∞ DeepFool (paper)": fmt(r2.get("deepfool")),
                   "ρ∞ FGSM (ours)": fmt(s["fgsm"]["rho_adv_linf_all"]), "ρ∞ FGSM (paper)": fmt(r2.get("fgsm"))})
        ft, r3 = s["finetune"], p3.get(m, {})
        t3.append({"classifier": label,
                   "DeepFool (ours / paper)": f"{ft['after']['deepfool']['test_error']:.2%} / {fmt(r3.get('deepfool'))}",
                   "FGSM (ours / paper)": f"{ft['after']['fgsm']['test_error']:.2%} / {fmt(r3.get('fgsm'))}",
                   "clean (ours / paper)": f"{ft['before']['test_error']:.2%} / {fmt(r3.get('clean'))}",
                   "ρ_adv before": fmt(ft["before"]["rho_adv"]),
                   "ρ_adv after DeepFool": fmt(ft["after"]["deepfool"]["rho_adv"]),
                   "ρ_adv after FGSM": fmt(ft["after"]["fgsm"]["rho_adv"])})
    out = [
        "## DeepFool beside the paper (Moosavi-Dezfooli et al. 2016)",
        "",
        f"**Table 1** (L2) on the first {next(iter(studies.values()))['n_points']} test images. ρ_adv = mean "
        "‖r‖₂/‖x‖₂ over the points DeepFool fools, x in [0, 1] (ours, ‖x‖) and x centred on the mean training image "
        "(ours, ‖x − mean‖): the paper's MatConvNet nets took 0–255 pixels minus the mean image, and the scale "
        f"cancels, the centring does not. FGSM: the smallest eps that misclassifies {cfg['fgsm_rate']:.0%} of the "
        "points (bisection; one gradient serves every eps), ρ_adv over all points at that eps. L-BFGS: Szegedy's "
        f"box-constrained attack aimed at the runner-up class, on the first {cfg['lbfgs']['n_points']} points. "
        "Our times are per image within a batch on this machine; the paper's are per image, one at a time, on "
        "2016 hardware.",
        "",
        table(pd.DataFrame(t1)),
        "",
        "**Table 2** (L∞): ρ∞ = mean ‖r‖∞/‖x‖∞; DeepFool's L∞ variant, FGSM at the eps above.",
        "",
        table(pd.DataFrame(t2)),
        "",
    ]
    # Figures 6 and 7 and Table 3.
    curves = {m: ctx.csv(paths.DF_FINETUNE, model=m) for m in studies}
    fig, axes = plt.subplots(1, len(studies), figsize=(4.2 * len(studies), 3.2), squeeze=False)
    for ax, (m, c) in zip(axes[0], curves.items()):
        for run in ("deepfool", "fgsm"):
            sub = c[c["run"] == run]
            ax.plot(sub["epoch"], sub["rho_adv"], marker="o", label={"deepfool": "DeepFool", "fgsm": "FGSM"}[run])
        ax.set(title=p1.get(m, {}).get("label", m), xlabel="extra epochs", ylabel="ρ_adv (DeepFool)")
        ax.legend()
    out += ["**Figure 6**: ρ_adv after each epoch of fine-tuning on DeepFool vs FGSM examples "
            f"({cfg['finetune']['epochs']} epochs at {cfg['finetune']['lr_factor']} × the learning rate; the "
            "perturbed training set is computed once, on the model before fine-tuning).", "",
            ctx.figure(fig, "deepfool_finetune", "rho_adv during fine-tuning"), ""]
    plt.close(fig)
    alpha_models = [m for m in cfg["finetune"]["alpha_models"] if m in curves]
    if alpha_models and cfg["finetune"]["alphas"]:
        fig, axes = plt.subplots(1, len(alpha_models), figsize=(4.2 * len(alpha_models), 3.2), squeeze=False)
        for ax, m in zip(axes[0], alpha_models):
            c = curves[m]
            for alpha in sorted(cfg["finetune"]["alphas"]):
                run = "deepfool" if alpha == 1 else f"deepfool_x{alpha:g}"
                sub = c[c["run"] == run]
                ax.plot(sub["epoch"], sub["rho_adv"], marker="o", label=f"α = {alpha:g}")
            ax.set(title=p1.get(m, {}).get("label", m), xlabel="extra epochs", ylabel="ρ_adv (DeepFool)")
            ax.legend()
        out += ["**Figure 7**: fine-tuning on DeepFool perturbations magnified by α.", "",
                ctx.figure(fig, "deepfool_magnified", "fine-tuning on magnified DeepFool perturbations"), ""]
        plt.close(fig)
    out += ["**Table 3**: test error after the fine-tuning, and ρ_adv before and after.", "", table(pd.DataFrame(t3)), ""]
    verdicts = []
    for m, s in studies.items():
        ft = s["finetune"]
        up = ft["after"]["deepfool"]["rho_adv"] - ft["before"]["rho_adv"]
        fg = ft["after"]["fgsm"]["rho_adv"] - ft["before"]["rho_adv"]
        verdicts.append(f"- {p1.get(m, {}).get('label', m)}: DeepFool fine-tuning changes ρ_adv by {up:+.3f}, "
                        f"FGSM fine-tuning by {fg:+.3f}; " + (
                            "DeepFool's fine-tuning raises robustness more, as in the paper." if up > fg else
                            "unlike the paper, FGSM's fine-tuning does as well here."))
    out += verdicts
    return "\n".join(out)
