"""Stage obfuscated: defenses that obfuscate gradients, under the naive attack they were
evaluated with and under the adaptive attack that breaks them (Athalye, Carlini, Wagner 2018).

    python -m pipeline.obfuscated

Every defense wraps a classifier: the thermometer encoding wraps its own classifier (stage
train_thermometer); bit-depth reduction, JPEG, total-variance minimisation, stochastic activation
pruning and random resize-and-pad wrap the naturally trained `obfuscated.model` (Guo et al. and
Xie et al. used their defenses in front of ordinary networks too). Linf PGD at `eps`:

- naive: plain PGD on the defense's real forward pass (zero gradient through the quantisers,
  one random draw per step for the random defenses);
- adaptive: BPDA (forward exact, backward through a differentiable stand-in: identity, or the
  thermometer's ramp) and, for random defenses, EoT (the gradient averaged over `eot_samples`
  fresh draws per step).

Accuracy counts a point as correct when the defended model labels it right (random defenses: in
a strict majority of `eval_samples` passes). The LID detector (Ma et al.) is fitted on clean,
noisy and minimal (DeepFool) adversarial training images of `obfuscated.model`; a point counts
as defended when it is classified correctly or flagged. Its naive attack is PGD on the
cross-entropy; the adaptive one is PGD on the C&W margin with confidence `lid.kappa` (Athalye et
al.: high-confidence examples are not flagged).
"""
from __future__ import annotations

import sys
import time

import pandas as pd
import torch

from advlab.attacks import deepfool
from advlab.attacks.bpda import bpda_eot_pgd
from advlab.defenses import JPEG, SAP, BitDepth, LIDDetector, RandomResizePad, Thermometer, TVMinimization
from advlab.models import load_checkpoint
from pipeline import paths
from pipeline.artifacts import device, load_frozen, load_prepared
from pipeline.io import write_csv, write_json
from pipeline.stage import run_stage

RANDOM = ("tv", "sap", "resize_pad")


def build_defenses(params: dict, natural, thermo_clf, thermo_meta) -> dict:
    d, seed = params["obfuscated"]["defenses"], params["seed"]
    out = {"thermometer": Thermometer(thermo_clf, levels=thermo_meta["levels"],
                                      relax_shift=thermo_meta["relax_shift"]),
           "bitdepth": BitDepth(natural, bits=d["bitdepth"]["bits"]),
           "jpeg": JPEG(natural, quality=d["jpeg"]["quality"]),
           "tv": TVMinimization(natural, keep_prob=d["tv"]["keep_prob"], lambda_tv=d["tv"]["lambda_tv"],
                                steps=d["tv"]["steps"], seed=seed),
           "sap": SAP(natural, ratio=d["sap"]["ratio"], seed=seed),
           "resize_pad": RandomResizePad(natural, out_size=d["resize_pad"]["out_size"],
                                         min_size=d["resize_pad"]["min_size"],
                                         pad_value=d["resize_pad"]["pad_value"], seed=seed)}
    return {name: out[name] for name in params["obfuscated"]["run"]}


def _attack(model, x, y, cfg: dict, seed: int, *, eot: int, eval_samples: int, **kw):
    return bpda_eot_pgd(model, x, y, cfg["eps"], steps=cfg["steps"], step_size=cfg["step_size"],
                        eot_samples=eot, eval_samples=eval_samples,
                        generator=torch.Generator().manual_seed(seed), **kw)


def run_defense(name, defense, x, y, cfg, seed) -> dict:
    random = name in RANDOM
    ev = cfg["eval_samples"] if random else 1
    eot = cfg["defenses"][name]["eot_samples"] if random else 1
    began = time.perf_counter()
    # Clean accuracy: an attack of zero steps and no start judges x itself the same way.
    clean = bpda_eot_pgd(defense, x, y, 0.0, steps=0, random_start=False, eval_samples=ev,
                         generator=torch.Generator().manual_seed(seed))
    naive = _attack(defense, x, y, cfg, seed, eot=1, eval_samples=ev)
    t_naive = time.perf_counter() - began
    began = time.perf_counter()
    # BPDA view where the defense has a non-differentiable step; random resize-and-pad is
    # differentiable and is attacked through its own forward with EoT only.
    source = defense if name == "resize_pad" else defense.bpda()
    adaptive = _attack(source, x, y, cfg, seed, eot=eot, eval_samples=ev)
    t_adaptive = time.perf_counter() - began
    kind = ("BPDA" if name != "resize_pad" else "") + (" + " if random and name != "resize_pad" else "") + \
           (f"EoT x{eot}" if random else "")
    return {"defense": name, "adaptive_attack": kind.strip(), "clean_acc": 1 - float(clean.success.float().mean()),
            "naive_acc": 1 - float(naive.success.float().mean()),
            "adaptive_acc": 1 - float(adaptive.success.float().mean()),
            "median_linf": float(adaptive.norms["linf"].median()),
            "naive_seconds": t_naive, "adaptive_seconds": t_adaptive}


def run_lid(natural, data, x, y, cfg, seed, dev) -> dict:
    lc = cfg["lid"]
    g = torch.Generator().manual_seed(seed)
    n_fit = min(lc["n_fit"], len(data.x_train))
    idx = torch.randperm(len(data.x_train), generator=g)[:n_fit]
    x_fit, y_fit = data.x_train[idx].to(dev), data.y_train[idx].to(dev)
    began = time.perf_counter()
    adv_fit = deepfool(natural, x_fit, y_fit, max_iter=50).x_adv
    # noisy negatives with the adversarial perturbations' L2 size, as Ma et al. do
    r = (adv_fit - x_fit).flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    noise = torch.randn(x_fit.shape, generator=g).to(dev)
    noise = noise / noise.flatten(1).norm(dim=1).view(-1, 1, 1, 1).clamp_min(1e-12) * r
    noisy = (x_fit + noise).clamp(0, 1)
    det = LIDDetector(natural, k=lc["k"], batch_size=lc["batch_size"]).fit(x_fit, adv_fit, noisy)
    fit_seconds = time.perf_counter() - began

    def defended(result) -> tuple[float, float]:
        flagged = det.predict_proba(result.x_adv, x) > det.threshold
        with torch.no_grad():
            correct = natural(result.x_adv).argmax(1) == y
        return float((correct | flagged).float().mean()), float(flagged[result.success].float().mean()) \
            if bool(result.success.any()) else float("nan")

    clean_flag = float((det.predict_proba(x, x) > det.threshold).float().mean())
    with torch.no_grad():
        clean_acc = float((natural(x).argmax(1) == y).float().mean())
    began = time.perf_counter()
    naive = _attack(natural, x, y, cfg, seed, eot=1, eval_samples=1)
    naive_acc, naive_det = defended(naive)
    t_naive = time.perf_counter() - began
    began = time.perf_counter()
    adaptive = _attack(natural, x, y, cfg, seed, eot=1, eval_samples=1, loss="cw", kappa=lc["kappa"])
    adaptive_acc, adaptive_det = defended(adaptive)
    return {"defense": "lid", "adaptive_attack": f"C&W margin, kappa {lc['kappa']}", "clean_acc": clean_acc,
            "naive_acc": naive_acc, "adaptive_acc": adaptive_acc, "median_linf": float(adaptive.norms["linf"].median()),
            "naive_seconds": t_naive + fit_seconds, "adaptive_seconds": time.perf_counter() - began,
            "clean_flagged": clean_flag, "naive_detected": naive_det, "adaptive_detected": adaptive_det}


def main(params: dict, args) -> dict:
    preset, cfg, seed = params["preset"], params["obfuscated"], params["seed"]
    dev = device()
    data = load_prepared(preset)
    natural = load_frozen(preset, cfg["model"], dev)
    thermo_clf, thermo_meta = load_checkpoint(paths.path(paths.THERMO_MODEL, preset=preset))
    thermo_clf = thermo_clf.to(dev).eval()
    for p in thermo_clf.parameters():
        p.requires_grad_(False)
    n = min(cfg["n_points"], len(data.x_test))
    x, y = data.x_test[:n].to(dev), data.y_test[:n].to(dev)
    rows = [run_defense(name, d.to(dev), x, y, cfg, seed)
            for name, d in build_defenses(params, natural, thermo_clf, thermo_meta).items()]
    if cfg["lid"]["run"]:
        rows.append(run_lid(natural, data, x, y, cfg, seed, dev))
    with torch.no_grad():
        undefended = float((natural(x).argmax(1) == y).float().mean())
    frame = pd.DataFrame(rows)
    write_csv(paths.path(paths.OBFUSCATED_TABLE, preset=preset), frame)
    metrics = {f"{r['defense']}.{k}": r[k] for r in rows for k in ("clean_acc", "naive_acc", "adaptive_acc")}
    metrics["undefended.clean_acc"] = undefended
    write_json(paths.path(paths.OBFUSCATED_METRICS, preset=preset),
               {"model": cfg["model"], "n_points": n, "eps": cfg["eps"], "accuracy": metrics,
                "thermometer_test_accuracy": thermo_meta["test_accuracy"]})
    return {"params": {"obfuscated": cfg, "n_points": n, "seed": seed}, "metrics": metrics,
            "artifacts": [paths.path(paths.OBFUSCATED_TABLE, preset=preset)]}


if __name__ == "__main__":
    sys.exit(run_stage("obfuscated", main))
