"""Stage physical: do adversarial images survive printing and photographing? Destruction rates
under a simulated print-and-photo path (Kurakin, Goodfellow, Bengio 2016, "Adversarial
examples in the physical world", §3-4).

    python -m pipeline.physical --model lenet

On `physical.n_points` random test images (seeded: the paper's "average case"), for each eps
of `physical.eps` and each method (fast = FGSM, iterative basic = BIM, iterative least-likely
class = ILLC, with alpha = 1/255 and Kurakin's N steps), the adversarial images are made
8-bit (a print is) and sent through the print-and-photo simulator built from
`physical.print_photo` (advlab.transforms.PrintPhoto). The destruction rate

    d = #(clean correct, adversarial wrong, transformed correct) / #(clean correct, adversarial wrong)

is reported with top-1 and top-5 correctness, for the average case and the "prefiltered case"
(clean correct and adversarial wrong, both with top-1 probability above
`physical.prefilter_confidence`). The ablation (`physical.ablation`) does the same with one
transformation at a time (brightness, contrast, Gaussian blur, Gaussian noise, JPEG) at several
strengths. EoT (`physical.eot`): the iterative basic method with each step's gradient averaged
over `samples` draws of the differentiable simulator, so that its images are made to survive
it; destruction is then measured on fresh draws (another seed), beside the plain methods'.

Writes the destruction table, the ablation table, and one test image after each simulator step.
"""
from __future__ import annotations

import sys
import time

import pandas as pd
import torch
from torch import nn

from advlab.attacks import bim, bpda_eot_pgd, fgsm, illc, kurakin_steps
from advlab.metrics import destruction_rate, eligible, prefiltered, topk_correct
from advlab.models import predict_logits
from advlab.transforms import PrintPhoto, quantize, single_transform
from pipeline import paths
from pipeline.artifacts import device, load_frozen, load_prepared
from pipeline.io import save_tensors, write_csv, write_json
from pipeline.stage import run_stage

METHODS = {"fast": fgsm, "basic_iterative": bim, "least_likely": illc}
TOP_K = (1, 5)


def _rates(case_mask: dict, clean_logits, adv_logits, t_logits, y) -> dict:
    """Destruction rate and its denominator per case and k."""
    out = {}
    for k in TOP_K:
        k_eff = min(k, clean_logits.shape[1])
        c, a, t = (topk_correct(v, y, k_eff) for v in (clean_logits, adv_logits, t_logits))
        for case, mask in case_mask.items():
            out[f"{case}_top{k}"] = destruction_rate(c, a, t, mask=mask)
            out[f"{case}_top{k}_n"] = int(eligible(c, a, mask).sum())
    return out


def main(params: dict, args) -> dict:
    preset, cfg, name, seed = params["preset"], params["physical"], args.model, params["seed"]
    dev = device()
    data = load_prepared(preset)
    model = load_frozen(preset, name, dev)
    chain = PrintPhoto.from_params(cfg["print_photo"])  # fails on a bad key before any work
    eot_chain = PrintPhoto.from_params(cfg["print_photo"], seed=seed + 1, differentiable=True)
    n = min(cfg["n_points"], len(data.x_test))
    pick = torch.randperm(len(data.x_test), generator=torch.Generator().manual_seed(seed))[:n]
    x, y = data.x_test[pick].to(dev), data.y_test[pick].to(dev)
    x = quantize(x)
    clean_logits = predict_logits(model, x)

    def photographed(images: torch.Tensor, transform: PrintPhoto) -> torch.Tensor:
        # the same draws of the simulator for every method: seeded per evaluation
        return predict_logits(model, transform.apply(images, torch.Generator().manual_seed(seed)))

    adversarial = {}
    rows, timings = [], {}
    for eps in cfg["eps"]:
        for method, attack in METHODS.items():
            began = time.perf_counter()
            adversarial[(method, eps)] = quantize(attack(model, x, y, eps).x_adv)
            timings[f"{method}.{eps * 255:g}"] = time.perf_counter() - began
    eot = cfg["eot"]
    eot_model = nn.Sequential(eot_chain, model).eval()
    for eps in eot["eps"]:
        began = time.perf_counter()
        r = bpda_eot_pgd(eot_model, x, y, eps, steps=kurakin_steps(eps), step_size=1 / 255, random_start=False,
                         eot_samples=eot["samples"], generator=torch.Generator().manual_seed(seed + 2))
        adversarial[("basic_iterative_eot", eps)] = quantize(r.x_adv)
        timings[f"basic_iterative_eot.{eps * 255:g}"] = time.perf_counter() - began

    began = time.perf_counter()
    for (method, eps), x_adv in adversarial.items():
        adv_logits = predict_logits(model, x_adv)
        cases = {"average": None, "prefiltered": prefiltered(clean_logits, adv_logits, y, cfg["prefilter_confidence"])}
        rows.append({"method": method, "eps": eps, "eps_255": round(eps * 255, 2),
                     "adv_top1_accuracy": float(topk_correct(adv_logits, y, 1).float().mean()),
                     **_rates(cases, clean_logits, adv_logits, photographed(x_adv, chain), y)})  # fmt: skip
    timings["print_photo"] = time.perf_counter() - began

    ablation = []
    abl = cfg["ablation"]
    for (method, eps), x_adv in adversarial.items():
        if not any(abs(eps - e) < 1e-12 for e in abl["eps"]):
            continue
        adv_logits = predict_logits(model, x_adv)
        for transform, strengths in abl["transforms"].items():
            for strength in strengths:
                t_logits = photographed(x_adv, single_transform(transform, strength))
                rates = _rates({"average": None}, clean_logits, adv_logits, t_logits, y)
                ablation.append({"method": method, "eps": eps, "eps_255": round(eps * 255, 2), "transform": transform,
                                 "strength": strength, **rates})  # fmt: skip

    frame = pd.DataFrame(rows)
    write_csv(paths.path(paths.PHYSICAL_TABLE, preset=preset, model=name), frame)
    write_csv(paths.path(paths.PHYSICAL_ABLATION, preset=preset, model=name), pd.DataFrame(ablation))
    trace = chain.trace(x[:1].cpu(), torch.Generator().manual_seed(seed))
    save_tensors(paths.path(paths.PHYSICAL_TRACE, preset=preset, model=name),
                 {"names": [s for s, _ in trace], "images": torch.cat([t for _, t in trace])})
    metrics = {"clean.top1": float(topk_correct(clean_logits, y, 1).float().mean())}
    for r in rows:
        for key in ("average_top1", "average_top5", "prefiltered_top1", "prefiltered_top5"):
            metrics[f"{r['method']}.{r['eps_255']:g}.{key}"] = r[key]
    write_json(paths.path(paths.PHYSICAL_METRICS, preset=preset, model=name),
               {"model": name, "n_points": n, "destruction": metrics})
    write_json(paths.path(paths.PHYSICAL_TIMING, preset=preset, model=name), {"seconds": timings})
    return {"params": {"model": name, "physical": cfg, "seed": seed}, "metrics": metrics,
            "artifacts": [paths.path(paths.PHYSICAL_TABLE, preset=preset, model=name),
                          paths.path(paths.PHYSICAL_ABLATION, preset=preset, model=name)]}


if __name__ == "__main__":
    sys.exit(run_stage("physical", main, arguments=("model",)))
