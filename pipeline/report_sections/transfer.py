"""Szegedy et al. 2014's transfer tables (Tables 1, 2 and 4): ours beside the paper's."""
from __future__ import annotations

import pandas as pd

from pipeline import paths
from pipeline.report_sections.context import fmt, table


def _pct(v) -> str:
    return "–" if v is None or v != v else f"{v:.1%}"


def _paper_row(rows: dict, examples: str):
    if examples.startswith("adversarial for "):
        return rows.get(examples[len("adversarial for "):])
    if examples.startswith("gaussian stddev "):
        return rows.get(f"gaussian {examples[len('gaussian stddev '):]}")
    return None


def render(ctx) -> str | None:
    stats = ctx.csv(paths.TRANSFER_STATS)
    cross = ctx.csv(paths.TRANSFER_CROSS_MODEL)
    cross_tr = ctx.csv(paths.TRANSFER_CROSS_TRAINING)
    metrics = ctx.json(paths.TRANSFER_METRICS)
    if stats is None or cross is None or cross_tr is None or metrics is None:
        return None
    cfg = ctx.params["transfer"]
    paper = ctx.paper()
    p1, p2, p4 = paper["szegedy_table1"], paper["szegedy_table2"], paper["szegedy_table4"]
    label = lambda m: p1.get(m, {}).get("label", m)  # noqa: E731
    t1 = [{"model": label(r["model"]), "weight decay": fmt(float(r["weight_decay"])), "training images": r["half"],
           "train error (ours / paper)": f"{_pct(r['train_error'])} / {_pct(p1.get(r['model'], {}).get('train_error'))}",
           "test error (ours / paper)": f"{_pct(r['test_error'])} / {_pct(p1.get(r['model'], {}).get('test_error'))}",
           "av. min. distortion (ours / paper)":
               f"{fmt(r['av_min_distortion'])} / {fmt(p1.get(r['model'], {}).get('distortion'))}",
           "L-BFGS success": _pct(r["attack_success"])} for _, r in stats.iterrows()]
    cols = cfg["cross_model"]
    pcols = p2["columns"]
    t2 = []
    for _, r in cross.iterrows():
        ref = _paper_row(p2["rows"], r["examples"])
        row = {"examples": r["examples"].replace("adversarial for ", "for ")}
        for c in cols:
            theirs = ref[pcols.index(c)] if ref is not None and c in pcols else None
            row[label(c)] = f"{_pct(r[c])} ({_pct(theirs)})" if theirs is not None else _pct(r[c])
        row["av. distortion"] = fmt(float(r["av_distortion"]))
        row["n"] = int(r["n_examples"])
        t2.append(row)
    t4 = []
    paper4 = list(p4.values())
    for i, (_, r) in enumerate(cross_tr.iterrows()):
        row = {"examples": r["examples"]}
        for j, c in enumerate(cfg["cross_training"]):
            theirs = paper4[i][j] if i < len(paper4) and j < len(paper4[i]) else None
            row[c] = f"{_pct(r[c])} ({_pct(theirs)})" if theirs is not None else _pct(r[c])
        row["av. distortion"] = fmt(float(r["av_distortion"]))
        t4.append(row)
    s = metrics["summary"]
    g = s["gaussian_error"]
    g_low = min(g.values()) if g else float("nan")
    amp = cross_tr.iloc[1] if len(cross_tr) > 1 else None
    out = [
        "## Transfer of adversarial examples (Szegedy et al. 2014)",
        "",
        f"Box-constrained L-BFGS (targeted at a random wrong class; {cfg['lbfgs']['binary_search_steps']} binary-search "
        f"steps on c, {cfg['lbfgs']['max_iter']} L-BFGS-B iterations each) on the first {metrics['n_points']} test "
        "images; only successful examples are kept, as in the paper. Distortion is the paper's RMS, "
        "sqrt(Σ r² / n_pixels) with pixels in [0, 1]. FC10(λ) is softmax regression with weight decay λ "
        "(coefficient of ‖w‖²/2 on the mean loss); AE400-10 is a sparse autoencoder's 400-unit code + softmax, "
        "pretrained then fine-tuned. Error rates include the column model's clean mistakes on these images.",
        "",
        "**Table 1** (the models):",
        "",
        table(pd.DataFrame(t1)),
        "",
        "**Table 2** (cross-model): error rate of each column model on the examples of each row; the paper's value "
        "in parentheses.",
        "",
        table(pd.DataFrame(t2)),
        "",
        "**Table 4** (cross-training-set; P1 and P2 are disjoint halves of our training split): the paper's value in "
        "parentheses.",
        "",
        table(pd.DataFrame(t4)),
        "",
        f"- Transfer between the FC models averages {_pct(s['transfer_between_fc'])} off the diagonal, and "
        f"{_pct(s['transfer_to_autoencoder'])} onto the autoencoder model"
        + (" (lower, as in the paper)." if s["transfer_to_autoencoder"] < s["transfer_between_fc"] else
           " (not lower here, unlike the paper).")
        + " Gaussian noise: " + ", ".join(f"stddev {k}: {_pct(v)}" for k, v in g.items())
        + " mean error" + (", far below adversarial transfer at a similar or larger distortion."
                           if g_low < s["transfer_between_fc"] else "."),
    ]
    if amp is not None:
        c = cfg["cross_training"]
        line = (f"- Across training sets, examples made for `{c[0]}` and amplified to RMS {cfg['amplify_rms']:g} "
                "fool " + ", ".join(f"`{m}`: {_pct(amp[m])}" for m in c) + ".")
        if len(c) >= 3:
            same, other = amp[c[1]], amp[c[-1]]
            line += (f" The model on the other half (`{c[-1]}`) is fooled less than the other architecture on the "
                     f"same half (`{c[1]}`), as in the paper." if other < same else
                     f" Unlike the paper, the model on the other half (`{c[-1]}`) is fooled as often as the other "
                     f"architecture on the same half (`{c[1]}`).")
        base = cross_tr.iloc[0]
        line += (" Non-amplified examples transfer at " + ", ".join(f"{_pct(base[m])}" for m in c[1:])
                 + f"; Gaussian noise of stddev {cfg['amplify_rms']:g} errs at "
                 + ", ".join(f"{_pct(cross_tr.iloc[-1][m])}" for m in c) + ".")
        out.append(line)
    return "\n".join(out)
