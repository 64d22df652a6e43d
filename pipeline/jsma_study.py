"""Stage jsma_study: Papernot et al. 2016's JSMA evaluation on one model.

    python -m pipeline.jsma_study --model lenet

The first `jsma_study.n_points` correctly classified test images, each driven towards every
other class (the paper: 10,000 images x 9 targets), once per entry of `runs` (theta and the
output differentiated: logits "JSMA-Z" or softmax "JSMA-F"). Reported per run: success rate and
the mean share of features changed over the successes (paper: 97.1%, 4.02%). For the first run:
the success rate per (source, target) pair; the hardness matrix, the paper's area under the
distortion-vs-success-rate curve over the budgets `hardness_gammas` (a run with budget g is the
first floor(D g / 2) iterations of the run with the largest budget, so one run gives them all);
and the adversarial distance A(X, t), the share of features with zero saliency towards t,
averaged per pair, with the robustness R(F) = mean over X of min_t A(X, t).
"""
from __future__ import annotations

import math
import sys
import time

import pandas as pd
import torch

from advlab.attacks.jsma import all_targets, jsma
from advlab.metrics import (adversarial_distance_matrix, hardness_from_run, mean_by_source, robustness,
                            success_matrix)
from advlab.models import predict
from pipeline import paths
from pipeline.artifacts import device, load_frozen, load_prepared
from pipeline.io import write_csv, write_json
from pipeline.stage import run_stage


def _nan_to_none(t: torch.Tensor) -> list:
    return [[None if math.isnan(v) else v for v in row] for row in t.tolist()]


def main(params: dict, args) -> dict:
    preset, cfg, name = params["preset"], params["jsma_study"], args.model
    dev = device()
    data = load_prepared(preset)
    model = load_frozen(preset, name, dev)
    c = data.num_classes
    x_test, y_test = data.x_test.to(dev), data.y_test.to(dev)
    pred = predict(model, x_test).to(dev)
    idx = (pred == y_test).nonzero().flatten()[:cfg["n_points"]]
    x, y = x_test[idx], y_test[idx]
    ai, at = all_targets(y, c)
    ax_, ay = x[ai], y[ai]
    d = x[0].numel()

    rows, runs, first, ms_per_attack = [], {}, None, {}
    for k, run in enumerate(cfg["runs"]):
        # MLflow metric names allow no "+": theta_1_logits, theta_m1_logits
        label = f"theta_{run['theta']:g}_{run['variant']}".replace("-", "m")
        began = time.perf_counter()
        r = jsma(model, ax_, ay, target=at, theta=run["theta"], gamma=cfg["gamma"], variant=run["variant"],
                 max_pair_elements=cfg["max_pair_elements"])
        seconds = time.perf_counter() - began
        ok = r.success
        frac = r.extra["pixels_changed_fraction"]
        runs[label] = {"theta": run["theta"], "variant": run["variant"], "success": float(ok.float().mean()),
                       "pixels_changed": float(frac[ok].mean()) if bool(ok.any()) else None}
        ms_per_attack[label] = 1000 * seconds / len(ax_)
        rows.append(pd.DataFrame({"run": label, "index": idx[ai].cpu().numpy(), "source": ay.cpu().numpy(),
                                  "target": at.cpu().numpy(), "success": ok.cpu().numpy(),
                                  "iterations": r.extra["iterations"].cpu().numpy(),
                                  "pixels_changed": frac.cpu().numpy()}))
        if k == 0:
            first = (label, r)
    label, r = first
    ok, iters, frac = r.success.cpu(), r.extra["iterations"].cpu(), r.extra["pixels_changed_fraction"].cpu()
    succ = success_matrix(ay.cpu(), at.cpu(), ok, c)
    gammas = sorted(g for g in cfg["hardness_gammas"] if g <= cfg["gamma"])
    hard = hardness_from_run(ay.cpu(), at.cpu(), ok, iters, frac, gammas, num_features=d, num_classes=c) \
        if len(gammas) >= 2 else None
    a = adversarial_distance_matrix(model, x, y, variant=cfg["runs"][0]["variant"]).cpu()
    a_pair = mean_by_source(a, y.cpu(), c)
    write_csv(paths.path(paths.JSMA_TABLE, preset=preset, model=name), pd.concat(rows, ignore_index=True))
    summary = {"model": name, "n_points": len(x), "attacks_per_run": len(ax_), "gamma": cfg["gamma"], "runs": runs,
               "matrices_run": label, "success_matrix": _nan_to_none(succ),
               "hardness_gammas": gammas, "hardness": _nan_to_none(hard) if hard is not None else None,
               "adversarial_distance": _nan_to_none(a_pair), "robustness": robustness(a)}
    write_json(paths.path(paths.JSMA_METRICS, preset=preset, model=name), summary)
    # wall times beside, not in, the metrics JSON (which is bit-identical across runs on CPU)
    write_json(paths.path(paths.JSMA_TIMING, preset=preset, model=name), {"ms_per_attack": ms_per_attack})
    metrics = {f"{k}.{m}": v[m] for k, v in runs.items() for m in ("success", "pixels_changed") if v[m] is not None}
    metrics["robustness"] = summary["robustness"]
    return {"params": {"model": name, "jsma_study": cfg, "seed": params["seed"]}, "metrics": metrics,
            "artifacts": [paths.path(paths.JSMA_TABLE, preset=preset, model=name)]}


if __name__ == "__main__":
    sys.exit(run_stage("jsma_study", main, arguments=("model",)))
