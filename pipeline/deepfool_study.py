"""Stage deepfool_study: DeepFool's Tables 1-3 and Figures 6-7 for one naturally trained model.

    python -m pipeline.deepfool_study --model lenet

- Tables 1 and 2: rho_adv (L2) and rho_adv^inf of DeepFool, of FGSM at the smallest eps that
  misclassifies `fgsm_rate` of the test points, and of L-BFGS, with the time per point.
- Figure 6 / Table 3: the model fine-tuned for `finetune.epochs` extra epochs at `lr_factor` x its
  learning rate on DeepFool-perturbed, and separately on FGSM-perturbed, training images
  (perturbations computed once, on the model before fine-tuning); DeepFool's rho_adv on the
  test points and the test error after every epoch.
- Figure 7: the same fine-tuning on DeepFool perturbations magnified by each alpha.
"""
from __future__ import annotations

import copy
import sys
import time

import pandas as pd
import torch

from advlab.attacks import deepfool, fgsm_direction, fgsm_eps_for_rate, fgsm_minimal_eps, lbfgs
from advlab.metrics import attack_summary
from advlab.models.inference import accuracy
from advlab.training import fine_tune
from pipeline import paths
from pipeline.artifacts import device, load_model, load_prepared
from pipeline.io import write_csv, write_json
from pipeline.stage import run_stage
from pipeline.train import effective_train_config


TRAIN_CHUNK = 500  # training images perturbed per DeepFool call


def _chunks(n: int, size: int):
    return [(s, min(s + size, n)) for s in range(0, n, size)]


def _summary(model, x, y, x_adv, mean_image) -> dict:
    with torch.no_grad():
        clean, adv = model(x).argmax(1), model(x_adv).argmax(1)
    d = (x_adv - x).flatten(1)
    flat = x.flatten(1)
    return attack_summary(y, clean, adv, d.norm(dim=1), d.abs().amax(dim=1), flat.norm(dim=1),
                          flat.abs().amax(dim=1), (x - mean_image).flatten(1).norm(dim=1))


def deepfool_points(model, x, y, cfg: dict, norm: str, batch: int) -> tuple[torch.Tensor, float]:
    """DeepFool's x_adv for every point (chunked), and seconds per point."""
    out, began = [], time.perf_counter()
    for s, e in _chunks(len(x), batch):
        out.append(deepfool(model, x[s:e], y[s:e], norm=norm, overshoot=cfg["overshoot"],
                            max_iter=cfg["max_iter"]).x_adv)
    return torch.cat(out), (time.perf_counter() - began) / max(len(x), 1)


def main(params: dict, args) -> dict:
    preset, name, cfg = params["preset"], args.model, params["deepfool_study"]
    dev = device()
    data = load_prepared(preset)
    model, _ = load_model(preset, name)
    model = model.to(dev).eval()
    n = min(cfg["n_points"], len(data.x_test))
    x, y = data.x_test[:n].to(dev), data.y_test[:n].to(dev)
    mean_image = data.x_train.mean(dim=0, keepdim=True).to(dev)
    batch = params["eval"]["batch_size"]
    x_test, y_test = data.x_test.to(dev), data.y_test.to(dev)

    # Tables 1 and 2.
    table, timing = {"n_points": n, "test_error": 1 - accuracy(model, x_test, y_test)}, {}
    for norm in ("l2", "linf"):
        x_adv, sec = deepfool_points(model, x, y, cfg, norm, batch)
        table[f"deepfool_{norm}"] = _summary(model, x, y, x_adv, mean_image)
        timing[f"deepfool_{norm}_ms"] = 1000 * sec
    began = time.perf_counter()
    direction = fgsm_direction(model, x, y)
    eps = fgsm_eps_for_rate(model, x, y, cfg["fgsm_rate"], direction=direction)
    fgsm_adv = (x + eps * direction).clamp(0, 1) if eps != float("inf") else x
    timing["fgsm_ms"] = 1000 * (time.perf_counter() - began) / n
    table["fgsm"] = {"eps": eps, "rate": cfg["fgsm_rate"], **_summary(model, x, y, fgsm_adv, mean_image)}
    # rho_adv over ALL points at that eps (the paper's FGSM column), not only the fooled ones
    d = (fgsm_adv - x).flatten(1)
    table["fgsm"]["rho_adv_all"] = float((d.norm(dim=1) / x.flatten(1).norm(dim=1)).mean())
    table["fgsm"]["rho_adv_linf_all"] = float((d.abs().amax(1) / x.flatten(1).abs().amax(1)).mean())
    per_point = fgsm_minimal_eps(model, x, y, direction=direction)
    ok = torch.isfinite(per_point) & (per_point > 0)
    pp_adv = (x + per_point.nan_to_num(posinf=0).view(-1, 1, 1, 1) * direction).clamp(0, 1)
    dp = (pp_adv - x).flatten(1)
    table["fgsm_per_point"] = {
        "found": float(ok.float().mean()),
        "rho_adv": float((dp.norm(dim=1) / x.flatten(1).norm(dim=1))[ok].mean()) if ok.any() else float("nan"),
        "rho_adv_linf": float((dp.abs().amax(1) / x.flatten(1).abs().amax(1))[ok].mean()) if ok.any() else float("nan"),
    }
    lb = cfg["lbfgs"]
    if lb["n_points"] > 0:
        m = min(lb["n_points"], n)
        began = time.perf_counter()
        res = lbfgs(model, x[:m], y[:m], initial_const=lb["initial_const"],
                    binary_search_steps=lb["binary_search_steps"], max_iter=lb["max_iter"])
        timing["lbfgs_ms"] = 1000 * (time.perf_counter() - began) / m
        table["lbfgs"] = _summary(model, x[:m], y[:m], res.x_adv, mean_image)

    # Figure 6 / Table 3 and Figure 7: fine-tuning on perturbed training images.
    ft = cfg["finetune"]
    tcfg = effective_train_config(params["train"], name)
    n_train = len(data.x_train) if ft["n_train"] is None else min(ft["n_train"], len(data.x_train))
    xt, yt = data.x_train[:n_train].to(dev), data.y_train[:n_train].to(dev)
    began = time.perf_counter()
    # The training set goes in larger chunks: DeepFool's per-iteration overhead dominates small batches.
    df_train, _ = deepfool_points(model, xt, yt, cfg, "l2", max(batch, TRAIN_CHUNK))
    r_train = df_train - xt
    fgsm_train = torch.cat([(xt[s:e] + eps * fgsm_direction(model, xt[s:e], yt[s:e])).clamp(0, 1)
                            for s, e in _chunks(n_train, max(batch, TRAIN_CHUNK))]) if eps != float("inf") else xt
    timing["perturb_train_seconds"] = time.perf_counter() - began

    def probe(epoch: int, net) -> dict:
        x_adv, _ = deepfool_points(net, x, y, cfg, "l2", batch)
        s = _summary(net, x, y, x_adv, mean_image)
        return {"rho_adv": s["rho_adv"], "rho_adv_centered": s["rho_adv_centered"],
                "deepfool_success": s["success_rate"], "test_error": 1 - accuracy(net, x_test, y_test)}

    runs = [("deepfool", 1.0, xt + r_train), ("fgsm", None, fgsm_train)]
    if name in ft["alpha_models"]:
        runs += [(f"deepfool_x{alpha:g}", float(alpha), xt + alpha * r_train) for alpha in ft["alphas"] if alpha != 1]
    start = {"epoch": 0, **probe(0, model)}
    curves, finals = [], {}
    for run, alpha, x_pert in runs:
        net = copy.deepcopy(model)
        began = time.perf_counter()
        _, rows = fine_tune(net, x_pert.clamp(0, 1).cpu(), yt.cpu(), epochs=ft["epochs"],
                            lr=tcfg["lr"] * ft["lr_factor"], batch_size=tcfg["batch_size"], seed=params["seed"], on_epoch=probe,
                            optimizer=tcfg["optimizer"], momentum=tcfg["momentum"],
                            weight_decay=tcfg["weight_decay"], accelerator=tcfg["accelerator"])
        timing[f"finetune_{run}_seconds"] = time.perf_counter() - began
        method = "fgsm" if run == "fgsm" else "deepfool"
        for row in [start, *rows]:
            curves.append({"run": run, "method": method, "alpha": alpha, **row})
        finals[run] = {"alpha": alpha, "rho_adv": rows[-1]["rho_adv"], "test_error": rows[-1]["test_error"]}
        del net
    table["finetune"] = {"epochs": ft["epochs"], "lr": tcfg["lr"] * ft["lr_factor"], "n_train": n_train,
                         "before": {k: start[k] for k in ("rho_adv", "test_error")}, "after": finals}

    where = dict(preset=preset, model=name)
    write_csv(paths.path(paths.DF_FINETUNE, **where), pd.DataFrame(curves))
    write_json(paths.path(paths.DF_STUDY_METRICS, **where), table)
    timing.update(device=dev.type, threads=torch.get_num_threads())
    write_json(paths.path(paths.DF_STUDY_TIMING, **where), timing)
    flat = {"test_error": table["test_error"], "deepfool.rho_adv": table["deepfool_l2"]["rho_adv"],
            "deepfool.rho_adv_linf": table["deepfool_linf"]["rho_adv_linf"], "fgsm.eps": eps,
            "fgsm.rho_adv": table["fgsm"]["rho_adv_all"], "fgsm.rho_adv_linf": table["fgsm"]["rho_adv_linf_all"],
            **{f"finetune.{run}.{k}": v for run, f in finals.items() for k, v in f.items() if k != "alpha"},
            **{k: v for k, v in timing.items() if isinstance(v, float)}}
    if "lbfgs" in table:
        flat["lbfgs.rho_adv"] = table["lbfgs"]["rho_adv"]
    return {
        "params": {"model": name, "deepfool_study": cfg, "seed": params["seed"], "n_points": n},
        "metrics": flat,
        "artifacts": [paths.path(paths.DF_FINETUNE, **where)],
    }


if __name__ == "__main__":
    sys.exit(run_stage("deepfool_study", main, arguments=("model",)))
