"""Stage transfer: Szegedy et al. 2014's Tables 1, 2 and 4 from the transfer.models.

    python -m pipeline.transfer

For each source model, box-constrained L-BFGS (targeted, one random wrong class per test point)
makes adversarial examples of the first `n_points` test images; only successful ones are kept,
as in the paper. Each row gives the error rate of every column model on the examples made for
the row's model (the diagonal is 100% by construction; the success rate is reported apart),
and their mean distortion, RMS = sqrt(sum(r^2) / n_pixels) with pixels in [0, 1]. Gaussian
rows add N(0, stddev^2) noise (clipped to [0, 1]) to the same test images. Error rates count
every point, so a column model's clean mistakes on those images are included.
Table 4 (cross-training-set): examples made for the first `cross_training` model, the same
perturbations rescaled to RMS `amplify_rms`, and Gaussian noise of that stddev.
"""
from __future__ import annotations

import sys

import pandas as pd
import torch

from advlab.attacks import lbfgs
from advlab.metrics import rms_distortion as rms
from advlab.models import load_checkpoint
from pipeline import paths
from pipeline.artifacts import device, load_prepared
from pipeline.io import read_json, write_csv, write_json
from pipeline.stage import run_stage


def error_rate(model, x: torch.Tensor, y: torch.Tensor) -> float:
    if len(x) == 0:
        return float("nan")
    with torch.no_grad():
        return float((model(x).argmax(1) != y).float().mean())


def main(params: dict, args) -> dict:
    preset, cfg, seed = params["preset"], params["transfer"], params["seed"]
    dev = device()
    data = load_prepared(preset)
    n = min(cfg["n_points"], len(data.x_test))
    x, y = data.x_test[:n].to(dev), data.y_test[:n].to(dev)
    names = list(dict.fromkeys(cfg["cross_model"] + cfg["cross_training"]))
    models = {}
    for name in names:
        model, _ = load_checkpoint(paths.path(paths.TRANSFER_MODEL, preset=preset, tmodel=name))
        models[name] = model.to(dev).eval()
        for p in models[name].parameters():
            p.requires_grad_(False)
    gen = torch.Generator().manual_seed(seed)
    target = (y.cpu() + torch.randint(1, data.num_classes, (n,), generator=gen)).remainder(data.num_classes).to(dev)

    made = {}
    for name in names:
        res = lbfgs(models[name], x, y, target=target, **cfg["lbfgs"])
        with torch.no_grad():
            correct = models[name](x).argmax(1) == y
        # Only points the model gets right clean count as its adversarial examples (as in the paper).
        made[name] = type(res)(res.x_adv, res.success & correct, res.norms, res.counts, res.extra)
        made[name].extra["clean_correct"] = correct
    specs = {m["name"]: m for m in cfg["models"]}
    stats = []
    for name in names:
        m = read_json(paths.path(paths.TRANSFER_TRAIN_METRICS, preset=preset, tmodel=name))
        ok = made[name].success
        stats.append({"model": name, "arch": specs[name]["arch"],
                      "weight_decay": specs[name]["weight_decay"], "half": specs[name]["half"],
                      "train_error": m["train_error"], "test_error": m["test_error"],
                      "attack_success": float(ok.sum() / made[name].extra["clean_correct"].sum().clamp_min(1)),
                      "av_min_distortion": float(rms(made[name].x_adv - x)[ok].mean()) if ok.any() else float("nan")})

    def row(label: str, x_rows: torch.Tensor, y_rows: torch.Tensor, dist: float, columns: list[str]) -> dict:
        return {"examples": label, **{c: error_rate(models[c], x_rows, y_rows) for c in columns},
                "n_examples": int(len(x_rows)), "av_distortion": dist}

    def noise(std: float) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed + int(round(std * 1e6)))
        return (x + std * torch.randn(x.shape, generator=g).to(dev)).clamp(0, 1)

    def table(sources: list[str], columns: list[str], extra_rows) -> pd.DataFrame:
        out = []
        for s in sources:
            ok = made[s].success
            out.append(row(f"adversarial for {s}", made[s].x_adv[ok], y[ok],
                           float(rms(made[s].x_adv - x)[ok].mean()) if ok.any() else float("nan"), columns))
        out += [f(columns) for f in extra_rows]
        return pd.DataFrame(out)

    def gauss_row(std: float, cols: list[str]) -> dict:
        noisy = noise(std)
        return row(f"gaussian stddev {std:g}", noisy, y, float(rms(noisy - x).mean()), cols)

    gauss_rows = [lambda cols, s=s: gauss_row(s, cols) for s in cfg["noise_std"]]
    cross_model = table(cfg["cross_model"], cfg["cross_model"], gauss_rows)

    src = cfg["cross_training"][0]
    ok = made[src].success
    r = (made[src].x_adv - x)[ok]
    amplified = (x[ok] + r * (cfg["amplify_rms"] / rms(r).clamp_min(1e-12)).view(-1, 1, 1, 1)).clamp(0, 1)
    amp_row = lambda cols: row(f"adversarial for {src}, amplified to RMS {cfg['amplify_rms']:g}",  # noqa: E731
                               amplified, y[ok], float(rms(amplified - x[ok]).mean()), cols)
    cross_training = table([src], cfg["cross_training"],
                           [amp_row, lambda cols: gauss_row(cfg["amplify_rms"], cols)])

    write_csv(paths.path(paths.TRANSFER_STATS, preset=preset), pd.DataFrame(stats))
    write_csv(paths.path(paths.TRANSFER_CROSS_MODEL, preset=preset), cross_model)
    write_csv(paths.path(paths.TRANSFER_CROSS_TRAINING, preset=preset), cross_training)

    # Headline numbers for the qualitative checks: transfer among FC nets vs to the autoencoder
    # model, and Gaussian noise at a comparable distortion.
    adv = cross_model[cross_model["examples"].str.startswith("adversarial")].set_index("examples")
    cm = cfg["cross_model"]
    ae = [m for m in cm if specs[m]["arch"] == "ae400_10"]
    fc = [m for m in cm if m not in ae]
    off = lambda rows, cols: [float(adv.loc[f"adversarial for {a}", b]) for a in rows for b in cols if a != b]  # noqa: E731
    mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
    summary = {
        "transfer_between_fc": mean(off(fc, fc)),
        "transfer_to_autoencoder": mean(off(fc, ae)),
        "gaussian_error": {f"{s:g}": mean([float(v) for v in cross_model.loc[
            cross_model["examples"] == f"gaussian stddev {s:g}", cm].iloc[0]]) for s in cfg["noise_std"]},
        "cross_training": {str(r["examples"]): {c: float(r[c]) for c in cfg["cross_training"]}
                           for r in cross_training.to_dict(orient="records")},
    }
    metrics = {"n_points": n, "models": {s["model"]: s for s in stats}, "summary": summary,
               "cross_model": cross_model.to_dict(orient="records"),
               "cross_training": cross_training.to_dict(orient="records")}
    write_json(paths.path(paths.TRANSFER_METRICS, preset=preset), metrics)
    flat = {"transfer_between_fc": summary["transfer_between_fc"],
            "transfer_to_autoencoder": summary["transfer_to_autoencoder"],
            **{f"gaussian_error.{k}": v for k, v in summary["gaussian_error"].items()},
            **{f"{s['model']}.av_min_distortion": s["av_min_distortion"] for s in stats},
            **{f"{s['model']}.attack_success": s["attack_success"] for s in stats}}
    return {"params": {"transfer": cfg, "n_points": n, "seed": seed}, "metrics": flat,
            "artifacts": [paths.path(p, preset=preset) for p in
                          (paths.TRANSFER_STATS, paths.TRANSFER_CROSS_MODEL, paths.TRANSFER_CROSS_TRAINING)]}


if __name__ == "__main__":
    sys.exit(run_stage("transfer", main))
