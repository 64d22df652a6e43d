"""Stage onepixel_study: Su, Vargas, Sakurai 2019's one-pixel attack table for one model.

    python -m pipeline.onepixel_study --model lenet

On the first `onepixel_study.n_points` correctly classified test images, for each pixel count of
`pixels`: the non-targeted success rate; the targeted success rate (each image towards one
random other class, or towards every other class with `targets: all`, as the paper); and the
confidence, the mean probability the model gives the adversarial class on the successful
non-targeted examples. Differential evolution as the paper: `popsize` candidates, F = 0.5, no
crossover, up to `max_iter` generations (`strategy: best1bin` is the Hyperparticle variant).
"""
from __future__ import annotations

import sys
import time

import pandas as pd
import torch

from advlab.attacks.jsma import all_targets, random_targets
from advlab.attacks.onepixel import one_pixel
from advlab.models import predict
from pipeline import paths
from pipeline.artifacts import device, load_frozen, load_prepared
from pipeline.io import write_csv, write_json
from pipeline.stage import run_stage


def main(params: dict, args) -> dict:
    preset, cfg, name, seed = params["preset"], params["onepixel_study"], args.model, params["seed"]
    dev = device()
    data = load_prepared(preset)
    model = load_frozen(preset, name, dev)
    x_test, y_test = data.x_test.to(dev), data.y_test.to(dev)
    pred = predict(model, x_test).to(dev)
    origin_acc = float((pred == y_test).float().mean())
    idx = (pred == y_test).nonzero().flatten()[:cfg["n_points"]]
    x, y = x_test[idx], y_test[idx]
    if cfg["targets"] == "all":
        ti, targets = all_targets(y, data.num_classes)
        tx, ty = x[ti], y[ti]
    else:
        targets = random_targets(y, data.num_classes, generator=torch.Generator().manual_seed(seed))
        tx, ty = x, y
    kw = dict(popsize=cfg["popsize"], max_iter=cfg["max_iter"], strategy=cfg["strategy"])
    rows = []
    for k in cfg["pixels"]:
        began = time.perf_counter()
        u = one_pixel(model, x, y, pixels=k, generator=torch.Generator().manual_seed(seed), **kw)
        t_u = time.perf_counter() - began
        began = time.perf_counter()
        t = one_pixel(model, tx, ty, pixels=k, target=targets, generator=torch.Generator().manual_seed(seed + 1), **kw)
        t_t = time.perf_counter() - began
        with torch.no_grad():
            probs = model(u.x_adv).softmax(1)
        adv_class_prob = probs.gather(1, probs.argmax(1, keepdim=True)).squeeze(1)
        confidence = float(adv_class_prob[u.success].mean()) if bool(u.success.any()) else float("nan")
        rows.append({"pixels": k, "n_points": len(x), "targeted_attacks": len(tx),
                     "non_targeted": float(u.success.float().mean()), "targeted": float(t.success.float().mean()),
                     "confidence": confidence,
                     "forwards_per_image": float(u.counts["forward"].float().mean()),
                     "ms_per_image_non_targeted": 1000 * t_u / len(x), "ms_per_attack_targeted": 1000 * t_t / len(tx),
                     "generations_mean": float(u.extra["generations"].float().mean())})
    frame = pd.DataFrame(rows)
    write_csv(paths.path(paths.ONEPIXEL_TABLE, preset=preset, model=name), frame)
    metrics = {"origin_acc": origin_acc}
    for r in rows:
        for key in ("non_targeted", "targeted", "confidence"):
            metrics[f"pixels_{r['pixels']}.{key}"] = r[key]
    write_json(paths.path(paths.ONEPIXEL_METRICS, preset=preset, model=name),
               {"model": name, "n_points": len(x), "targets": cfg["targets"], **metrics})
    return {"params": {"model": name, "onepixel_study": cfg, "seed": seed}, "metrics": metrics,
            "artifacts": [paths.path(paths.ONEPIXEL_TABLE, preset=preset, model=name)]}


if __name__ == "__main__":
    sys.exit(run_stage("onepixel_study", main, arguments=("model",)))
