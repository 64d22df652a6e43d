"""Moosavi-Dezfooli et al. 2017 (universal adversarial perturbations) and the "UAPs and
adversarial training" study: fooling rates beside the paper's, same-norm baselines, fooling vs
xi, the cross-model matrix, dominant labels, spectra, fine-tuning rounds, gradients along PGD
trajectories, and the perturbations themselves."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pipeline import paths
from pipeline.io import load_tensors
from pipeline.report_sections.context import table

UAP = "universal (Algorithm 1)"
_NORM = {"l2": "l2", "linf": "l∞"}


def _pct(v) -> str:
    return "–" if v is None or v != v else f"{v:.1%}"


def _main_table(metrics: dict, delta: float, timings: dict) -> pd.DataFrame:
    rows = []
    for model, m in metrics.items():
        u = m["uap"]
        seconds = (timings.get(model) or {}).get("seconds", {})
        for norm in _NORM:
            if f"{norm}.xi" not in u:
                continue
            rows.append({"model": model, "norm": _NORM[norm], "xi": f"{u[f'{norm}.xi']:g}",
                         "fooling on X": _pct(u[f"{norm}.fooling_train"]),
                         "fooling on test": _pct(u[f"{norm}.fooling_test"]),
                         f"reached 1 - delta = {1 - delta:g}": "yes" if u[f"{norm}.reached_target"] else "no",
                         "random noise, same norm (test)": _pct(u[f"{norm}.random_test"]),
                         "best baseline (test)": _pct(u[f"{norm}.best_baseline_test"]),
                         "passes": u[f"{norm}.passes"],
                         "build (s)": f"{seconds.get(f'{norm}.build', float('nan')):.1f}"})  # fmt: skip
    return pd.DataFrame(rows)


def _paper_table(paper: dict) -> pd.DataFrame:
    nets = list(paper.get("l2", {}))
    return pd.DataFrame([{"norm": _NORM[n], **{net: f"{paper[n][net][0]:.1%} / {paper[n][net][1]:.1%}" for net in nets}}
                         for n in ("l2", "linf") if n in paper])  # fmt: skip


def _acceptance(metrics: dict, delta: float) -> list[str]:
    lines = []
    for model, m in metrics.items():
        u = m["uap"]
        for norm in _NORM:
            if f"{norm}.xi" not in u:
                continue
            tr, te, rnd, best = (u[f"{norm}.{k}"] for k in ("fooling_train", "fooling_test", "random_test",
                                                             "best_baseline_test"))  # fmt: skip
            head = f"{model}, {_NORM[norm]} xi {u[f'{norm}.xi']:g}:"
            if u[f"{norm}.reached_target"]:
                ok = te >= (1 - delta) - 0.10
                lines.append(f"{head} fooling {tr:.1%} on X (>= {1 - delta:g}) and {te:.1%} on unseen test points "
                             f"(>= {1 - delta - 0.10:.2f}: {'yes' if ok else 'no'}); random noise of the same norm "
                             f"{rnd:.1%}")  # fmt: skip
            else:
                lines.append(f"{head} the fooling rate on X stayed at {tr:.1%} (< {1 - delta:g}) within the passes; "
                             f"{te:.1%} on test, random noise {rnd:.1%}")  # fmt: skip
            lines.append(f"{head} the UAP beats every same-norm baseline on test: "
                         f"{'yes' if te > best else 'no'} ({te:.1%} vs best baseline {best:.1%}, "
                         f"{100 * (te - best):+.1f} points)")  # fmt: skip
    return lines


def _baselines(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.assign(norm=frame["norm"].map(_NORM), xi=frame["xi"].map("{:g}".format))
    out["fooling on X"] = out["fooling_train"].map(_pct)
    spread = zip(out["fooling_test"], out["fooling_test_sd"], out["count"])
    out["fooling on test"] = [f"{_pct(m)} ± {s:.1%}" if c > 1 else _pct(m) for m, s, c in spread]
    return out[["norm", "xi", "perturbation", "count", "fooling on X", "fooling on test"]]


def _xi_at(curve: pd.DataFrame, level: float) -> float:
    """Smallest xi at which the test fooling rate reaches ``level`` (linear interpolation), NaN if never."""
    c = curve.sort_values("xi")
    xs, ys = c["xi"].to_numpy(), c["fooling_test"].to_numpy()
    for i in range(len(xs)):
        if ys[i] >= level:
            if i == 0:
                return float(xs[0])
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            return float(x0 + (level - y0) * (x1 - x0) / (y1 - y0)) if y1 > y0 else float(x1)
    return math.nan


def _curve_figure(ctx, curves: dict) -> str:
    norms = [n for n in _NORM if any((c["norm"] == n).any() for c in curves.values())]
    fig, axes = plt.subplots(1, len(norms), figsize=(4.2 * len(norms), 3.2), squeeze=False)
    for ax, norm in zip(axes[0], norms):
        for i, (model, curve) in enumerate(curves.items()):
            c = curve[curve["norm"] == norm].sort_values("xi")
            line, = ax.plot(c["xi"], c["fooling_test"], marker="o", label=f"{model} UAP")
            ax.plot(c["xi"], c["random_test"], ls="--", color=line.get_color(), alpha=0.6, label=f"{model} random")
        ax.set_xlabel(f"xi ({_NORM[norm]}, [0, 1] pixels)")
        ax.set_ylabel("fooling rate on test")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(_NORM[norm], fontsize=9)
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    out = ctx.figure(fig, "uap_fooling_vs_xi", "fooling rate on unseen test points against xi, UAP and random noise")
    plt.close(fig)
    return out


def _labels(ctx, labels: dict) -> tuple[str, pd.DataFrame]:
    fig, axes = plt.subplots(1, len(labels), figsize=(2.6 * len(labels), 2.4), squeeze=False)
    rows = []
    for ax, (model, frame) in zip(axes[0], labels.items()):
        sub = frame[frame["norm"] == frame["norm"].iloc[0]]
        dist = sub.groupby("perturbed")["count"].sum()
        total = max(int(dist.sum()), 1)
        ax.bar(dist.index, dist.to_numpy() / total)
        ax.set_title(f"{model} ({_NORM.get(sub['norm'].iloc[0], '')})", fontsize=8)
        ax.set_xticks(list(dist.index))
        ax.set_xlabel("label after the UAP", fontsize=7)
        for norm, part in frame.groupby("norm", sort=False):
            d = part.groupby("perturbed")["count"].sum()
            n = max(int(d.sum()), 1)
            top = d.sort_values(ascending=False)
            rows.append({"model": model, "norm": _NORM.get(norm, norm), "fooled test points": int(d.sum()),
                         "dominant label": int(top.index[0]), "its share": _pct(top.iloc[0] / n),
                         "top 2 labels' share": _pct(top.iloc[:2].sum() / n),
                         "uniform share": _pct(1 / len(d)) if len(d) else "–"})  # fmt: skip
    axes[0][0].set_ylabel("share of fooled points")
    fig.tight_layout()
    out = ctx.figure(fig, "uap_dominant_labels", "labels that the points fooled by each model's UAP fall into")
    plt.close(fig)
    return out, pd.DataFrame(rows)


def _spectrum_figure(ctx, spectra: dict) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.0))
    for model, s in spectra.items():
        line, = axes[0].plot(s["k"], s["normals"] / s["normals"].iloc[0], label=f"{model} boundary normals")
        axes[0].plot(s["k"], s["random"] / s["random"].iloc[0], ls=":", color=line.get_color(), alpha=0.7)
        axes[1].semilogy(s["k"], s["normals"] ** 2, label=model)
    axes[0].set_xlabel("k")
    axes[0].set_ylabel("sigma_k / sigma_1")
    axes[0].set_title("singular values (dotted: random unit vectors)", fontsize=8)
    axes[0].legend(fontsize=6)
    axes[1].set_xlabel("k")
    axes[1].set_ylabel("eigenvalue sigma_k^2 of N^T N")
    axes[1].set_title("eigenvalue spectra", fontsize=8)
    axes[1].legend(fontsize=6)
    fig.tight_layout()
    out = ctx.figure(fig, "uap_spectra", "singular values of the matrix of decision-boundary normals vs random vectors")
    plt.close(fig)
    return out


def _trajectory_figure(ctx, traj: pd.DataFrame) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.0))
    final = traj["step"].max()
    for (role, model), part in traj.groupby(["role", "model"], sort=False):
        by_step = part.groupby("step")
        mean, lo, hi = (by_step["to_mean_final"].quantile(q) for q in (0.5, 0.1, 0.9))
        line, = axes[0].plot(mean.index, mean.to_numpy(), label=f"{model} ({role})")
        axes[0].fill_between(mean.index, lo.to_numpy(), hi.to_numpy(), color=line.get_color(), alpha=0.2)
        axes[1].plot(by_step["to_own_final"].mean(), color=line.get_color(), label=f"{model} ({role})")
        per_image = part.groupby("image")["to_mean_final"].mean()
        axes[2].hist(per_image, bins=30, range=(-1, 1), alpha=0.5, color=line.get_color(), label=model)
    axes[0].set_title("cos to the class's average gradient at the final step\n(median, 10-90%)", fontsize=8)
    axes[1].set_title("cos to the image's own final gradient (mean)", fontsize=8)
    axes[2].set_title(f"per image: mean over steps 0-{final} of the left panel", fontsize=8)
    for ax in axes[:2]:
        ax.set_xlabel("PGD step")
        ax.set_ylim(-1.02, 1.02)
    axes[2].set_xlabel("cosine")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    out = ctx.figure(fig, "uap_gradient_alignment", "cosine of input gradients along PGD trajectories")
    plt.close(fig)
    return out


def _perturbation_figure(ctx, perts: dict) -> str:
    models = list(perts)
    norms = [n for n in _NORM if any(f"uap_{n}" in p for p in perts.values())]
    fig, axes = plt.subplots(len(norms), len(models), figsize=(1.9 * len(models), 2.0 * len(norms)), squeeze=False)
    for j, model in enumerate(models):
        for i, norm in enumerate(norms):
            ax = axes[i][j]
            ax.axis("off")
            v = perts[model].get(f"uap_{norm}")
            if v is None:
                continue
            img = v.permute(1, 2, 0).numpy()
            scale = max(float(np.abs(img).max()), 1e-12)
            shown = 0.5 + 0.5 * img / scale  # grey = 0, scaled so the largest entry spans the range
            ax.imshow(shown.squeeze(-1) if shown.shape[-1] == 1 else shown, cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"{model}\n{_NORM[norm]} (±{scale:.2g})", fontsize=7)
    fig.tight_layout()
    out = ctx.figure(fig, "uap_perturbations", "each model's universal perturbations, scaled for view (grey = 0)")
    plt.close(fig)
    return out


def render(ctx) -> str | None:
    cfg = ctx.params.get("uap")
    if not cfg:
        return None
    metrics = {m: ctx.json(paths.UAP_METRICS, model=m) for m in cfg["models"]}
    metrics = {m: v for m, v in metrics.items() if v is not None}
    if not metrics:
        return None
    delta = cfg["delta"]
    paper = ctx.paper()
    lines = [
        "## Universal adversarial perturbations (Moosavi-Dezfooli et al. 2017) and UAPs vs adversarial training",
        "",
        f"Algorithm 1 on X = the first {cfg['n_build']} training images: passes over X (at most "
        f"{cfg['max_passes']}), DeepFool's minimal l2 perturbation of every point that x + v does not fool yet "
        f"({cfg['max_iter']} iterations at most, overshoot {cfg['overshoot']}, {cfg['chunk']} points per batched "
        f"call), projection onto the xi-ball; it stops at fooling rate 1 - delta = {1 - delta:g} on X. The fooling "
        f"rate counts points whose prediction on clip(x + v, 0, 1) differs from the clean prediction; 'test' is the "
        f"first {cfg['n_test']} test images, which the algorithm never sees. xi is in [0, 1] pixel units: an MNIST "
        "digit has l2 norm ~9, so MNIST needs a far larger xi relative to the image than ImageNet (the paper's "
        "xi_2 = 2000 is ~4% of an ImageNet image's norm).",
        "",
        table(_main_table(metrics, delta, {m: ctx.json(paths.UAP_TIMING, model=m) for m in metrics})),
        "",
    ]
    if paper.get("uap_imagenet"):
        lines += ["The paper's Table 1 (ImageNet, fooling on X / on the validation set):", "",
                  table(_paper_table(paper["uap_imagenet"])), ""]
    lines += [f"- {line}" for line in _acceptance(metrics, delta)]

    lines += ["", "### Fooling rate of perturbations of the same norm", "",
              f"Beside the UAP: random directions ({cfg['baselines']['n_random']} draws, mean ± sd; uniform on the "
              "sphere, and Gaussian coordinates), the normalised mean of the per-image DeepFool perturbations of X, "
              f"their top {cfg['baselines']['svd_k']} singular vectors in both signs (SVD's sign is arbitrary), and "
              f"random vectors in the span of the top {cfg['baselines']['subspace_dim']} singular vectors of the "
              "boundary normals at test points (the paper's subspace S)."]
    sub = paper.get("uap_subspace")
    if sub:
        lines[-1] += (f" The paper (ImageNet, l2 2000): random vectors in S fool {sub['random_in_s']:.0%}, random "
                      f"vectors in the full space {sub['random_full']:.0%}.")
    for model in metrics:
        frame = ctx.csv(paths.UAP_TABLE, model=model)
        if frame is not None:
            lines += ["", f"**{model}**", "", table(_baselines(frame))]

    curves = {m: c for m in metrics if (c := ctx.csv(paths.UAP_CURVE, model=m)) is not None}
    if curves:
        cb = cfg["curve_build"]
        lines += ["", "### Fooling rate against xi", "",
                  f"Each point a UAP built on the first {cb['n_build']} points of X with at most {cb['max_passes']} "
                  "passes; dashed: random noise of the same norm.", "", _curve_figure(ctx, curves), ""]
        study = ctx.params.get("uap_study", {})
        nat, rob = study.get("natural"), study.get("robust")
        if nat in curves and rob in curves:
            for norm in _NORM:
                cn, cr = (curves[m][curves[m]["norm"] == norm] for m in (nat, rob))
                if not len(cn) or not len(cr):
                    continue
                for level in (0.3, 0.5):
                    a, b = _xi_at(cn, level), _xi_at(cr, level)
                    if math.isnan(a):
                        continue
                    verdict = ("yes: it never gets there on the curve" if math.isnan(b)
                               else f"{'yes' if b > a else 'no'} ({b:.3g} vs {a:.3g})")  # fmt: skip
                    lines.append(f"- {_NORM[norm]}: xi for {level:.0%} test fooling: {nat} {a:.3g}; does {rob} "
                                 f"need a larger xi? {verdict}")

    cross = ctx.csv(paths.UAP_CROSS)
    if cross is not None and len(cross):
        lines += ["", "### Doubly universal: the UAP of each model (rows) on each model (columns), test fooling", ""]
        for norm, part in cross.groupby("norm", sort=False):
            wide = part.pivot_table(index="source", columns="target", values="fooling_test", sort=False)
            lines += [f"{_NORM.get(norm, norm)}:", "", table(wide.map(_pct).reset_index()), ""]

    labels = {m: f for m in metrics if (f := ctx.csv(paths.UAP_LABELS, model=m)) is not None and len(f)}
    if labels:
        fig, frame = _labels(ctx, labels)
        lines += ["### Dominant labels", "",
                  "Where the test points that the UAP fools land (the paper: a few dominant labels take most):", "",
                  fig, "", table(frame), ""]

    spectra = {m: s for m in metrics if (s := ctx.csv(paths.UAP_SPECTRUM, model=m)) is not None}
    if spectra:
        lines += ["### The decision boundary near the data is correlated", "",
                  f"Singular values of the matrix of DeepFool boundary normals at {cfg['baselines']['n_spectrum']} "
                  "test points, beside those of as many random unit vectors; right, the eigenvalue spectra (the "
                  "student study's plot) for every model.", "", _spectrum_figure(ctx, spectra), ""]
        for m, v in metrics.items():
            u = v["uap"]
            if "spectrum.normals.dim90" in u:
                lines.append(f"- {m}: 90% of the normals' energy in {u['spectrum.normals.dim90']} directions, "
                             f"random unit vectors need {u['spectrum.random.dim90']} (of {u['spectrum.n_normals']})")

    ft = ctx.csv(paths.UAP_FINETUNE)
    if ft is not None and len(ft):
        f = ctx.params["uap_study"]["finetune"]
        show = ft.assign(**{"test accuracy": ft["test_accuracy"].map(_pct),
                            "fresh UAP's test fooling": ft["fooling_test"].map(_pct),
                            "previous round's UAP": ft["previous_uap_fooling_test"].map(_pct)})
        lines += ["", "### Fine-tuning on universal perturbations (\"feedbacking does not help\")", "",
                  f"{f['model']} fine-tuned {f['epochs']} epochs per round on {f['n_train'] or 'all'} training images, "
                  f"{f['fraction']:.0%} of them carrying one of {f['pool']} UAP(s) of the current network "
                  f"({f['norm']}, xi {cfg['norms'][f['norm']]['xi']:g}); then a fresh UAP is built on the fine-tuned "
                  "network.", "",
                  table(show[["round", "test accuracy", "fresh UAP's test fooling", "previous round's UAP"]]), ""]
        first, last = ft.iloc[0], ft.iloc[-1]
        lines.append(f"- fresh UAP fooling {first['fooling_test']:.1%} before, {last['fooling_test']:.1%} after "
                     f"{int(last['round'])} round(s); the previous round's UAP fools "
                     f"{last['previous_uap_fooling_test']:.1%} "
                     "of the fine-tuned network: a new universal perturbation is found again")

    traj = ctx.csv(paths.UAP_TRAJECTORY)
    if traj is not None and len(traj):
        t = ctx.params["uap_study"]["trajectories"]
        lines += ["", "### Loss-landscape smoothing along PGD trajectories", "",
                  f"PGD ({t['norm']}, eps {t['eps']:g}, {t['steps']} steps of {t['step_size']:g}) on {t['n_points']} "
                  "test images; at each step the cosine of every image's input gradient to the average gradient at "
                  "the final step over the images of its class (a shared, class-universal direction), and to its "
                  "own final gradient.", "",
                  _trajectory_figure(ctx, traj), ""]
        for (role, model), part in traj.groupby(["role", "model"], sort=False):
            start = part[part["step"] == 0]["to_mean_final"].mean()
            lines.append(f"- {model} ({role}): mean cosine to the class's final average gradient "
                         f"{part['to_mean_final'].mean():.3f}; at step 0 {start:.3f}")

    perts = {}
    for m in metrics:
        p = ctx.path(paths.UAP_PERTURBATIONS, model=m)
        if p.exists():
            perts[m] = load_tensors(p)
    if perts:
        lines += ["", "### The perturbations", "", _perturbation_figure(ctx, perts)]
    return "\n".join(lines)
