"""Stage uap_study: what universal perturbations say across models (Moosavi-Dezfooli et al. 2017;
the "UAPs and adversarial training" study).

    python -m pipeline.uap_study

- Doubly universal: the UAP built on each model of `uap_study.cross` (by stage uap), measured on
  every model of the list (fooling rate on the first `uap.n_test` test images, against each
  target's own clean predictions).
- Fine-tuning on universal perturbations ("feedbacking does not help"): `finetune.model` is
  fine-tuned for `epochs` at `lr_factor` x its learning rate on `n_train` training images of
  which a share `fraction` carries a UAP drawn from a pool of `pool` UAPs of the current
  network; then a fresh UAP is built on the fine-tuned network. Repeated for `rounds`. Reported:
  the fresh UAP's fooling rate each round, the previous round's UAP on the new network, and
  clean test accuracy.
- Loss-landscape smoothing: PGD (`trajectories`) on test images of the natural and the robust
  model; at every step the cosine of each image's input gradient to the average gradient at the
  final step over the images of its class, and to its own final gradient.
"""
from __future__ import annotations

import copy
import sys
import time

import pandas as pd
import torch

from advlab.analysis import alignment, pgd_gradients
from advlab.attacks.uap import fooling_rate, perturb
from advlab.models import accuracy, predict
from advlab.training import fine_tune
from pipeline import paths
from pipeline.artifacts import device, load_frozen, load_model, load_prepared
from pipeline.io import load_tensors, write_csv, write_json
from pipeline.stage import run_stage
from pipeline.train import effective_train_config
from pipeline.uap import build


def cross_model(preset: str, cfg: dict, xt: torch.Tensor, dev) -> list[dict]:
    models = {m: load_frozen(preset, m, dev) for m in cfg["cross"]}
    preds = {m: predict(net, xt) for m, net in models.items()}
    rows = []
    for source in cfg["cross"]:
        uaps = load_tensors(paths.path(paths.UAP_PERTURBATIONS, preset=preset, model=source))
        for key, v in uaps.items():
            if not key.startswith("uap_"):
                continue
            for target, net in models.items():
                rows.append({"norm": key.removeprefix("uap_"), "source": source, "target": target,
                             "fooling_test": fooling_rate(net, xt, v.to(dev), clean_pred=preds[target])})  # fmt: skip
    return rows


def finetune_rounds(params: dict, x_build, x_train, y_train, xt, yt, dev) -> list[dict]:
    ucfg, ft, seed = params["uap"], params["uap_study"]["finetune"], params["seed"]
    xi = float(ucfg["norms"][ft["norm"]]["xi"])
    net, _ = load_model(params["preset"], ft["model"])  # trainable
    net = net.to(dev).eval()
    arch = ft["model"].split("-")[0]
    tcfg = effective_train_config(params["train"], arch)
    g = torch.Generator().manual_seed(seed + 3)
    n = min(ft["n_train"] or len(x_train), len(x_train))
    xs, ys = x_train[:n], y_train[:n]

    def fresh(model, s):
        model.eval()
        return build(model, x_build, xi, ft["norm"], ucfg, s, n_build=ft["n_build"], max_passes=ft["max_passes"]).v

    rows = []
    current = fresh(net, seed)
    rows.append({"round": 0, "test_accuracy": accuracy(net, xt, yt), "fooling_test": fooling_rate(net, xt, current),
                 "previous_uap_fooling_test": float("nan"), "seconds": 0.0})  # fmt: skip
    for rnd in range(1, ft["rounds"] + 1):
        began = time.perf_counter()
        pool = [current] + [fresh(net, seed + 100 * rnd + j) for j in range(1, ft["pool"])]
        carries = torch.rand(n, generator=g) < ft["fraction"]
        which = torch.randint(len(pool), (n,), generator=g)
        stack = torch.stack(pool).to(xs)
        x_pert = torch.where(carries.view(-1, 1, 1, 1).to(xs.device), perturb(xs, stack[which.to(xs.device)]), xs)
        net = copy.deepcopy(net)
        fine_tune(net, x_pert.cpu(), ys.cpu(), epochs=ft["epochs"], lr=tcfg["lr"] * ft["lr_factor"],
                  batch_size=tcfg["batch_size"], seed=seed + rnd, optimizer=tcfg["optimizer"],
                  momentum=tcfg["momentum"], weight_decay=tcfg["weight_decay"], accelerator=tcfg["accelerator"])
        net = net.to(dev).eval()
        previous = current
        current = fresh(net, seed + 100 * rnd)
        rows.append({"round": rnd, "test_accuracy": accuracy(net, xt, yt),
                     "fooling_test": fooling_rate(net, xt, current),
                     "previous_uap_fooling_test": fooling_rate(net, xt, previous),
                     "seconds": time.perf_counter() - began})  # fmt: skip
    return rows


def trajectories(preset: str, cfg: dict, xt, yt, dev) -> pd.DataFrame:
    tc = cfg["trajectories"]
    n = min(tc["n_points"], len(xt))
    frames = []
    for role in ("natural", "robust"):
        name = cfg[role]
        net = load_frozen(preset, name, dev)
        grads = pgd_gradients(net, xt[:n], yt[:n], eps=tc["eps"], steps=tc["steps"], step_size=tc["step_size"],
                              norm=tc["norm"])  # fmt: skip
        cos = alignment(grads, yt[:n])  # the class's average final gradient
        steps, images = cos["to_mean_final"].shape
        frames.append(pd.DataFrame({
            "model": name, "role": role,
            "step": torch.arange(steps).repeat_interleave(images).numpy(),
            "image": torch.arange(images).repeat(steps).numpy(),
            "to_mean_final": cos["to_mean_final"].flatten().numpy(),
            "to_own_final": cos["to_own_final"].flatten().numpy(),
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)


def main(params: dict, args) -> dict:
    preset, cfg = params["preset"], params["uap_study"]
    dev = device()
    data = load_prepared(preset)
    ucfg = params["uap"]
    xt, yt = data.x_test[: ucfg["n_test"]].to(dev), data.y_test[: ucfg["n_test"]].to(dev)
    timings = {}

    began = time.perf_counter()
    cross = pd.DataFrame(cross_model(preset, cfg, xt, dev))
    timings["cross_model"] = time.perf_counter() - began

    began = time.perf_counter()
    x_build = data.x_train[: ucfg["n_build"]].to(dev)
    finetune = pd.DataFrame(finetune_rounds(params, x_build, data.x_train.to(dev), data.y_train.to(dev), xt, yt,
                                            dev))  # fmt: skip
    timings["finetune"] = time.perf_counter() - began

    began = time.perf_counter()
    traj = trajectories(preset, cfg, xt, yt, dev)
    timings["trajectories"] = time.perf_counter() - began

    metrics = {}
    for norm, part in cross.groupby("norm"):
        off = part[part["source"] != part["target"]]
        on = part[part["source"] == part["target"]]
        metrics[f"cross.{norm}.mean_own"] = float(on["fooling_test"].mean())
        metrics[f"cross.{norm}.mean_transfer"] = float(off["fooling_test"].mean())
    first, last = finetune.iloc[0], finetune.iloc[-1]
    metrics.update({"finetune.fooling_before": float(first["fooling_test"]),
                    "finetune.fooling_after": float(last["fooling_test"]),
                    "finetune.accuracy_before": float(first["test_accuracy"]),
                    "finetune.accuracy_after": float(last["test_accuracy"])})  # fmt: skip
    final_step = traj["step"].max()
    for role, part in traj.groupby("role"):
        mid = part[part["step"] == final_step // 2]
        metrics[f"trajectory.{role}.mean_cos_to_mean_final"] = float(part["to_mean_final"].mean())
        metrics[f"trajectory.{role}.mid_cos_to_own_final"] = float(mid["to_own_final"].mean())

    write_csv(paths.path(paths.UAP_CROSS, preset=preset), cross)
    write_csv(paths.path(paths.UAP_FINETUNE, preset=preset), finetune)
    write_csv(paths.path(paths.UAP_TRAJECTORY, preset=preset), traj)
    write_json(paths.path(paths.UAP_STUDY_METRICS, preset=preset), {"metrics": metrics})
    write_json(paths.path(paths.UAP_STUDY_TIMING, preset=preset), {"seconds": timings})
    return {"params": {"uap_study": cfg, "uap": ucfg, "seed": params["seed"]}, "metrics": metrics,
            "artifacts": [paths.path(paths.UAP_CROSS, preset=preset), paths.path(paths.UAP_FINETUNE, preset=preset)]}


if __name__ == "__main__":
    sys.exit(run_stage("uap_study", main))
