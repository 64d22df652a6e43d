"""PixelDefend and Defense-GAN, and how Athalye, Carlini & Wagner (2018) broke them."""
from __future__ import annotations

import math

import matplotlib.pyplot as plt
import pandas as pd

from pipeline import paths
from pipeline.io import load_tensors
from pipeline.report_sections.context import fmt, table

_NAME = {"pixeldefend": "PixelDefend (Song et al.)", "defensegan": "Defense-GAN (Samangouei et al.)"}


def _pct(value) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def _grid(ctx, rows: list[tuple[str, object]], name: str, alt: str) -> str:
    k = len(rows[0][1])
    fig, axes = plt.subplots(len(rows), k, figsize=(1.1 * k + 1.6, 1.15 * len(rows)), squeeze=False)
    for r, (label, images) in enumerate(rows):
        for c in range(k):
            ax = axes[r][c]
            if images.shape[1] == 3:  # RGB: height x width x colour
                ax.imshow(images[c].permute(1, 2, 0).clamp(0, 1).numpy())
            else:
                ax.imshow(images[c, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.tight_layout()
    out = ctx.figure(fig, name, alt)
    plt.close(fig)
    return out


def _adaptive(acc: dict, defense: str) -> float:
    return min(v for k, v in acc.items() if k.startswith(f"{defense}.adaptive_"))


def _why(cfg: dict, acc: dict, gan: dict) -> str:
    """The reasons, as these numbers show them (they differ between MNIST and CIFAR-10)."""
    eps, ball = cfg["pixeldefend"]["attack"]["eps"], cfg["pixeldefend"]["eps_levels"]
    text = ("Why: neither defense removes what makes an image adversarial; each hides the gradient that would find "
            "it. Naive PGD gets a zero gradient and stays at its random start, which the defenses do undo. With BPDA "
            "the attacker steps along the classifier's gradient at the defended image. ")
    if eps * 255 > ball + 1e-6:
        text += f"PixelDefend: perturbations of {fmt(eps)} are more than its ±{ball}/255 ball can take back. "
    else:
        text += (f"PixelDefend: its ±{ball}/255 ball is wide enough to take back perturbations of {fmt(eps)}, but "
                 "purification moves each pixel to the level its PixelCNN finds likely, not back to the clean image: "
                 f"purified adversarial images stay adversarial (transfer PGD: {_pct(acc['pixeldefend.transfer_acc'])}). ")
    gan_clean, clean = acc["defensegan.clean_acc"], acc["undefended.clean_acc"]
    if gan_clean < clean - 0.2:
        text += (f"Defense-GAN: the generator's range covers these images poorly (projection error "
                 f"{gan['test_projection_mse']:.4f} per pixel, clean accuracy {_pct(gan_clean)} against {_pct(clean)} "
                 "undefended): the projection throws away much of each image, perturbation and class alike, and what "
                 "is left moves little under any attack; not a defense worth having here.")
    else:
        text += ("Defense-GAN: the perturbation moves the projection onto an image of another class in the generator's "
                 "range (the reconstructions below)")
        if _adaptive(acc, "defensegan") > _adaptive(acc, "pixeldefend"):
            text += "; it keeps more than PixelDefend because its random restarts make each projection, and so each "
            text += "gradient, a sample"
        text += "."
    return text


def _curves(ctx, pixel_hist: pd.DataFrame, gan_hist: pd.DataFrame) -> str:
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 2.8))
    a.plot(pixel_hist["epoch"] + 1, pixel_hist["train_bpd"], marker="o", label="training")
    if "val_bpd" in pixel_hist:
        a.plot(pixel_hist["epoch"] + 1, pixel_hist["val_bpd"], marker="o", label="test images")
    a.set_xlabel("epoch")
    a.set_ylabel("bits / dim")
    a.set_title("PixelCNN")
    a.legend(fontsize=8)
    b.plot(gan_hist["epoch"] + 1, gan_hist["d_loss"], label="discriminator loss")
    b.plot(gan_hist["epoch"] + 1, gan_hist["g_loss"], label="generator loss")
    b.set_xlabel("epoch")
    b.set_title("DCGAN")
    b.legend(fontsize=8)
    fig.tight_layout()
    out = ctx.figure(fig, "generative_training", "PixelCNN bits per dimension and DCGAN losses per epoch")
    plt.close(fig)
    return out


def render(ctx) -> str | None:
    cfg = ctx.params["generative"]
    if not cfg["run"]:
        return None
    frame = ctx.csv(paths.GENERATIVE_TABLE)
    summary = ctx.json(paths.GENERATIVE_METRICS)
    pixel, gan = ctx.json(paths.PIXELCNN_METRICS), ctx.json(paths.GAN_METRICS)
    if frame is None or summary is None or pixel is None or gan is None:
        return None
    paper = ctx.paper()["generative"]
    acc = summary["accuracy"]
    pc, gc, proj = cfg["pixelcnn"], cfg["gan"], cfg["defensegan"]["project"]
    rows = []
    for _, r in frame.iterrows():
        p = paper[r["defense"]]
        adaptive = r["attack"].startswith("BPDA")
        rows.append({
            "defense": _NAME[r["defense"]], "attack": r["attack"], "eps (Linf)": fmt(r["eps"]),
            "accuracy": _pct(r["accuracy"]),
            "undefended acc. (same images)": _pct(r.get("undefended_accuracy")),
            "median Linf": fmt(r["median_linf"]), "mean sq. L2 / pixel": fmt(r["mean_sq_l2_per_pixel"]),
            "paper (adaptive)": f"{p['accuracy']:.0%} ({p['dataset']}, {p['threat']})" if adaptive else "",
            "seconds": fmt(r["seconds"]),
        })
    clean_rows = frame[frame["attack"] == "none"].set_index("defense")
    cost = {d: float(clean_rows.loc[d, "defense_ms_per_image"]) for d in ("pixeldefend", "defensegan")}
    ad = cfg["defensegan"]["attack"]
    rgb = summary.get("image", [1])[0] == 3
    colour_note = ", R -> G -> B inside each pixel" if rgb else ""
    lines = [
        "## Generative defenses: PixelDefend and Defense-GAN (Athalye, Carlini, Wagner 2018)",
        "",
        f"Both defenses sit in front of the naturally trained `{cfg['model']}` (clean accuracy "
        f"{_pct(acc['undefended.clean_acc'])} on these {summary['n_points']} test images) and project the input back "
        "towards the data before it is classified.",
        "",
        f"- **PixelDefend**: a gated PixelCNN ({pc['channels']} channels, {pc['layers']} layers, {pc['epochs']} "
        f"epoch{'s' if pc['epochs'] > 1 else ''}) reaches **{pixel['test_bits_per_dim']:.3f} bits/dim** on the test images "
        f"({pixel['parameters']:,} parameters{colour_note}). Purification moves each pixel, in raster order, to its "
        f"most likely level within ±{cfg['pixeldefend']['eps_levels']}/255 of the input's: "
        f"**{cost['pixeldefend']:.1f} ms per image** here.",
        f"- **Defense-GAN**: a DCGAN (z in R^{gc['z_dim']}, {gc['epochs']} epochs); the input is replaced by G(z*), "
        f"z* from {proj['steps']} Adam steps on ||G(z) - x||² from {proj['restarts']} random starts (the paper: "
        f"200 from 10): **{cost['defensegan']:.1f} ms per image** here. Projections of test images are "
        f"{gan['test_projection_mse']:.4f} from them in mean squared error per pixel.",
        "",
        "Naive: white-box PGD on the defended model, with the gradient autograd gives it. The exact defenses give "
        "none (PixelDefend's argmax over levels; Defense-GAN's inner optimisation, not unrolled): its largest entry "
        "is " + ", ".join(f"{fmt(v)} for {_NAME[d]}" for d, v in frame.dropna(subset=["exact_gradient_max"])
                           [["defense", "exact_gradient_max"]].itertuples(index=False)) +
        ", so the iterate never leaves its random start, and the defense looks robust. The undefended classifier "
        "under the same PGD (its own gradient, all steps) is the baseline. Transfer: those images of the classifier, "
        "then the defense (how the defenses were evaluated against attacks that ignore them). Adaptive: PGD with "
        "BPDA, the exact defense forward and the identity backward (PixelDefend moves a pixel by at most its ball, "
        "so g(x) ≈ x), or for Defense-GAN also the projection onto the generator's tangent space at G(z*); "
        "PixelDefend's points stop at their first misclassification, Defense-GAN (random) runs every step with "
        f"the gradient averaged over {ad['eot_samples']} set(s) of fresh restarts (EoT).",
        "",
        table(pd.DataFrame(rows)),
        "",
    ]
    for d in ("pixeldefend", "defensegan"):
        part = frame[frame["defense"] == d]
        naive = part[part["attack"].str.startswith("naive")].iloc[0]
        transfer = part[part["attack"].str.startswith("transfer")].iloc[0]
        best = part[part["attack"].str.startswith("BPDA")].sort_values("accuracy").iloc[0]
        lines.append(f"- {_NAME[d]}: naive PGD leaves **{_pct(naive['accuracy'])}** where the undefended classifier "
                     f"keeps {_pct(naive['undefended_accuracy'])} "
                     f"({100 * (naive['accuracy'] - naive['undefended_accuracy']):+.0f} points); the adaptive attack "
                     f"({best['attack']}) brings it to **{_pct(best['accuracy'])}** "
                     f"({100 * (best['accuracy'] - naive['accuracy']):+.0f} points), the transfer attack to "
                     f"{_pct(transfer['accuracy'])}. "
                     f"The paper: {_pct(paper[d]['accuracy'])} ({paper[d]['dataset']}, {paper[d]['threat']}).")
    lines += ["", _why(cfg, acc, gan)]
    if rgb:
        same = (f"PixelDefend's {_pct(paper['pixeldefend']['accuracy'])} is for CIFAR-10 at 8/255 with a ±16/255 "
                f"ball and a PixelCNN++ (2.92 bits/dim); ours: eps {fmt(cfg['pixeldefend']['attack']['eps'])}, "
                f"±{cfg['pixeldefend']['eps_levels']}/255, {pixel['test_bits_per_dim']:.2f} bits/dim. Defense-GAN's "
                "is MNIST in L2 with a latent-space C&W attack, not this setting.")
    else:
        same = ("The paper's numbers are for its own data and threat models (PixelDefend on CIFAR-10 at 8/255; "
                "Defense-GAN on MNIST in L2, with a latent-space C&W attack); ours use this preset's data, Linf "
                "PGD and the budgets above, so compare the direction and size of the drop, not the digits.")
    lines += ["", same]
    ex = ctx.path(paths.GENERATIVE_EXAMPLES)
    if ex.exists():
        e = load_tensors(ex)
        lines += ["", _grid(ctx, [("clean", e["x"]), ("purified", e["pixeldefend_clean"]),
                                  ("transfer PGD", e["pixeldefend_transfer_adv"]),
                                  ("purified", e["pixeldefend_transfer_cleaned"]),
                                  ("BPDA", e["pixeldefend_identity_adv"]), ("purified", e["pixeldefend_identity_cleaned"])],
                            "pixeldefend_examples", "PixelDefend: clean, transfer and BPDA adversarial images, each purified")]
        gan_rows = [("clean", e["x"]), ("G(z*)", e["defensegan_clean"]), ("transfer PGD", e["defensegan_transfer_adv"]),
                    ("G(z*)", e["defensegan_transfer_cleaned"])]
        for approx in cfg["defensegan"]["approx"]:
            if f"defensegan_{approx}_adv" in e:
                gan_rows += [(f"BPDA {approx}", e[f"defensegan_{approx}_adv"]),
                             ("G(z*)", e[f"defensegan_{approx}_cleaned"])]
        lines += ["", _grid(ctx, gan_rows, "defensegan_reconstructions",
                            "Defense-GAN: clean and adversarial images with their reconstructions G(z*)")]
    pixel_hist, gan_hist = ctx.csv(paths.PIXELCNN_HISTORY), ctx.csv(paths.GAN_HISTORY)
    if pixel_hist is not None and gan_hist is not None:
        lines += ["", _curves(ctx, pixel_hist, gan_hist)]
    return "\n".join(lines)
