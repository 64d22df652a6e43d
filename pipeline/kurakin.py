"""Stage kurakin: fast, basic iterative and iterative least-likely class attacks across eps
(Kurakin, Goodfellow, Bengio 2016, "Adversarial examples in the physical world", §2-3).

    python -m pipeline.kurakin --model lenet

For each eps of `kurakin.eps` (pixel unit [0, 1]; the paper's 2, 4, 8, 16 are /255), top-1 and
top-5 accuracy on the first `kurakin.n_points` test images of the clean images and of the
adversarial images of each method, with the paper's alpha = 1/255 and N = min(255 eps + 4,
1.25 * 255 eps) steps for the iterative ones. Accuracy counts a clean error as an error, as the
paper's accuracy-vs-eps figure does.
"""
from __future__ import annotations

import sys
import time

import pandas as pd
import torch

from advlab.attacks import bim, fgsm, illc, kurakin_steps
from advlab.metrics import topk_correct
from pipeline import paths
from pipeline.artifacts import device, load_frozen, load_prepared
from pipeline.io import write_csv, write_json
from pipeline.stage import run_stage

METHODS = {"fast": fgsm, "basic_iterative": bim, "least_likely": illc}


def topk(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    return topk_correct(logits, y, min(k, logits.shape[1]))  # top-5 of fewer classes is top-all


def main(params: dict, args) -> dict:
    preset, cfg, model_name = params["preset"], params["kurakin"], args.model
    dev = device()
    data = load_prepared(preset)
    model = load_frozen(preset, model_name, dev)
    n = min(cfg["n_points"], len(data.x_test))
    x_all, y_all = data.x_test[:n], data.y_test[:n]
    batches = [(x_all[s:s + cfg["batch_size"]].to(dev), y_all[s:s + cfg["batch_size"]].to(dev))
               for s in range(0, n, cfg["batch_size"])]

    def accuracy(make) -> tuple[float, float, float]:
        top1 = top5 = 0
        began = time.perf_counter()
        for x, y in batches:
            x_eval = make(x, y)
            with torch.no_grad():
                logits = model(x_eval)
            top1 += int(topk(logits, y, 1).sum())
            top5 += int(topk(logits, y, 5).sum())
        return top1 / n, top5 / n, time.perf_counter() - began

    clean1, clean5, _ = accuracy(lambda x, y: x)
    rows = [{"method": "clean", "eps": 0.0, "eps_255": 0.0, "steps": 0, "top1": clean1, "top5": clean5,
             "seconds": 0.0}]
    for eps in cfg["eps"]:
        for method, attack in METHODS.items():
            top1, top5, seconds = accuracy(lambda x, y: attack(model, x, y, eps).x_adv)
            rows.append({"method": method, "eps": eps, "eps_255": round(eps * 255, 2),
                         "steps": 1 if method == "fast" else kurakin_steps(eps), "top1": top1, "top5": top5,
                         "seconds": seconds})
    frame = pd.DataFrame(rows)
    write_csv(paths.path(paths.KURAKIN_TABLE, preset=preset, model=model_name), frame)
    metrics = {"clean.top1": clean1, "clean.top5": clean5}
    for r in rows[1:]:
        metrics[f"{r['method']}.{r['eps_255']:g}.top1"] = r["top1"]
        metrics[f"{r['method']}.{r['eps_255']:g}.top5"] = r["top5"]
    write_json(paths.path(paths.KURAKIN_METRICS, preset=preset, model=model_name),
               {"model": model_name, "n_points": n, "accuracy": metrics})
    return {"params": {"model": model_name, "kurakin": cfg, "n_points": n},
            "metrics": metrics,
            "artifacts": [paths.path(paths.KURAKIN_TABLE, preset=preset, model=model_name)]}


if __name__ == "__main__":
    sys.exit(run_stage("kurakin", main, arguments=("model",)))
