"""Papernot et al. 2017: the black-box substitute, round by round, and its transfer."""
from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd

from pipeline import paths
from pipeline.report_sections.context import table


def render(ctx) -> str | None:
    rounds = ctx.csv(paths.SUBSTITUTE_ROUNDS)
    sweep = ctx.csv(paths.SUBSTITUTE_SWEEP)
    m = ctx.json(paths.SUBSTITUTE_METRICS)
    if rounds is None or sweep is None or m is None:
        return None
    cfg = ctx.params["substitute"]
    paper = ctx.paper()["substitute_mnist"]
    per_round = pd.DataFrame({
        "round rho": rounds["round"], "training set |S_rho|": rounds["n_train"],
        "oracle queries (total)": rounds["queries"],
        "substitute accuracy": rounds["substitute_accuracy"].map(lambda v: f"{v:.1%}"),
        "agreement with oracle": rounds["oracle_agreement"].map(lambda v: f"{v:.1%}"),
        f"FGSM {cfg['transfer_eps']} transfer": rounds["fgsm_transfer_rate"].map(lambda v: f"{v:.1%}"),
        "oracle error on them": rounds["fgsm_oracle_adv_error"].map(lambda v: f"{v:.1%}"),
    })
    sweep_table = pd.DataFrame({
        "FGSM eps": sweep["eps"], "success on substitute": sweep["substitute_success_rate"].map(lambda v: f"{v:.1%}"),
        "transfer (of oracle-correct points)": sweep["transfer_rate"].map(lambda v: f"{v:.1%}"),
        "oracle error": sweep["oracle_adv_error"].map(lambda v: f"{v:.1%}")})
    fig, ax = plt.subplots(1, 2, figsize=(8.4, 3.0))
    ax[0].plot(rounds["round"], rounds["substitute_accuracy"], marker="o", label="substitute accuracy")
    ax[0].plot(rounds["round"], rounds["fgsm_transfer_rate"], marker="s", label=f"FGSM {cfg['transfer_eps']} transfer")
    ax[0].set_xlabel("substitute training round rho"), ax[0].set_ylim(0, 1), ax[0].legend(fontsize=7)
    ax[1].plot(sweep["eps"], sweep["oracle_adv_error"], marker="o", label="oracle error")
    ax[1].plot(sweep["eps"], sweep["transfer_rate"], marker="s", label="transfer rate")
    ax[1].set_xlabel("FGSM eps"), ax[1].set_ylim(0, 1), ax[1].legend(fontsize=7)
    fig.tight_layout()
    figure = ctx.figure(fig, "substitute", "substitute accuracy and transfer per round, and against FGSM eps")
    plt.close(fig)
    return "\n".join([
        "## Black-box substitute (Papernot et al. 2017)",
        "",
        f"Oracle: `{m['oracle']}`, answering labels only. Seed set: the first {m['n_seed']} test images; evaluation "
        f"set: the next {m['n_eval']}. Substitute `{m['substitute']}`, {cfg['rounds']} rounds of {cfg['epochs']} "
        f"epochs, Jacobian augmentation lambda {cfg['lmbda']} with its sign flipped every {cfg['tau']} rounds"
        + (f", reservoir sampling {cfg['reservoir']}" if cfg["reservoir"] else "") + ". Transfer rate: oracle "
        "misclassification among the evaluation points the oracle labels correctly; oracle error: among all of them "
        "(the paper's measure).",
        "",
        table(per_round),
        "",
        figure,
        "",
        table(sweep_table),
        "",
        f"| | ours | paper (MetaMind oracle) |\n|---|---|---|\n"
        f"| substitute accuracy after the last round | {m['substitute_accuracy']:.1%} | {paper['substitute_accuracy']:.1%} |\n"
        f"| oracle error on FGSM eps {cfg['transfer_eps']} examples | {m['fgsm_oracle_adv_error']:.1%} | "
        f"{paper['fgsm_transfer_eps_0_3']:.2%} (eps 0.3) |\n"
        f"| oracle queries | {m['queries']} | n · 2^rho after rho augmentations without reservoir sampling |",
        "",
        f"JSMA (theta {cfg['jsma']['theta']}, gamma {cfg['jsma']['gamma']}, random targets) crafted on the substitute: "
        f"{m['jsma_substitute_success']:.1%} reach their target on the substitute, changing "
        f"{m['jsma_pixels_changed']:.1%} of the pixels; on the oracle {m['jsma_transfer_misclassified']:.1%} are "
        f"misclassified and {m['jsma_transfer_target']:.1%} land on the target.",
    ])
