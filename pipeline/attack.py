"""Stage attack: run one configured attack on the first eval.n_points test images of one model."""
from __future__ import annotations

import inspect
import sys
import time

import pandas as pd
import torch

from advlab.attacks import ATTACKS
from pipeline import paths
from pipeline.artifacts import device, load_model, load_prepared
from pipeline.io import save_tensors, write_csv, write_json
from pipeline.stage import run_stage


# Keys of an `attacks.<name>` entry that steer the stage rather than the attack function.
STAGE_KEYS = ("type", "n_points", "targets")


def attack_kwargs(cfg: dict, seed: int) -> dict:
    """The attack function's keyword arguments from its params entry; attacks that draw random
    numbers get a generator seeded from the global seed, so reruns give the same points."""
    kwargs = {k: v for k, v in cfg.items() if k not in STAGE_KEYS}
    if "generator" in inspect.signature(ATTACKS[cfg["type"]]).parameters:
        kwargs["generator"] = torch.Generator().manual_seed(seed)
    return kwargs


def random_targets(y: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """A uniformly drawn wrong class per point, from its own seeded stream (so the same points
    get the same targets on every model, and the attack's own randomness is untouched)."""
    g = torch.Generator().manual_seed(seed + 7919)
    shift = torch.randint(1, num_classes, (len(y),), generator=g)
    return (y + shift) % num_classes


def main(params: dict, args) -> dict:
    preset, model_name, attack_name = params["preset"], args.model, args.attack
    cfg = params["attacks"][attack_name]
    evalcfg = params["eval"]
    data = load_prepared(preset)
    model, _ = load_model(preset, model_name)
    dev = device()
    model = model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    n = min(cfg.get("n_points", evalcfg["n_points"]), len(data.x_test))
    x_all, y_all = data.x_test[:n], data.y_test[:n]
    targeted = cfg.get("targets", "none") == "random"
    t_all = random_targets(y_all, data.num_classes, params["seed"]) if targeted else None
    mean_image = data.x_train.mean(dim=0, keepdim=True).to(dev)  # for the paper's rho convention
    attack = ATTACKS[cfg["type"]]
    kwargs = attack_kwargs(cfg, params["seed"])

    # Streaming: one batch of eval.batch_size points is on the device at a time, so the attack's
    # working memory is bounded by that setting; the results land in one preallocated tensor
    # (no list of chunks concatenated at the end, which would briefly hold them twice).
    x_adv = torch.empty_like(x_all)
    tables = []
    seconds = 0.0
    for start in range(0, n, evalcfg["batch_size"]):
        x = x_all[start:start + evalcfg["batch_size"]].to(dev)
        y = y_all[start:start + evalcfg["batch_size"]].to(dev)
        with torch.no_grad():
            clean_pred = model(x).argmax(1)
        began = time.perf_counter()
        if targeted:
            kwargs["target"] = t_all[start:start + evalcfg["batch_size"]].to(dev)
        result = attack(model, x, y, **kwargs)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - began
        with torch.no_grad():
            adv_pred = model(result.x_adv).argmax(1)
        flat = x.flatten(1)
        x_adv[start:start + len(x)] = result.x_adv.cpu()
        tables.append(pd.DataFrame({
            "index": torch.arange(start, start + len(x)).numpy(),
            "label": y.cpu().numpy(),
            "target": (kwargs["target"].cpu().numpy() if targeted else -1),
            "clean_pred": clean_pred.cpu().numpy(),
            "adv_pred": adv_pred.cpu().numpy(),
            "success": result.success.cpu().numpy(),
            "l0": result.norms["l0"].cpu().numpy(),
            "l2": result.norms["l2"].cpu().numpy(),
            "linf": result.norms["linf"].cpu().numpy(),
            "x_l2": flat.norm(dim=1).cpu().numpy(),
            "x_linf": flat.abs().amax(dim=1).cpu().numpy(),
            "x_centered_l2": (x - mean_image).flatten(1).norm(dim=1).cpu().numpy(),
            "forward": result.counts["forward"].cpu().numpy(),
            "backward": result.counts["backward"].cpu().numpy(),
        }))
    table = pd.concat(tables, ignore_index=True)
    where = dict(preset=preset, model=model_name, attack=attack_name)
    save_tensors(paths.path(paths.ADV_EXAMPLES, **where), {"x_adv": x_adv, "index": torch.arange(n)})
    write_csv(paths.path(paths.ADV_TABLE, **where), table)
    timing = {"seconds": seconds, "seconds_per_image": seconds / n, "n_points": n, "device": dev.type,
              "threads": torch.get_num_threads()}
    write_json(paths.path(paths.ADV_TIMING, **where), timing)
    correct = table["clean_pred"] == table["label"]
    return {
        "params": {"model": model_name, "attack": attack_name, **{f"attack.{k}": v for k, v in cfg.items()},
                   "n_points": n, "batch_size": evalcfg["batch_size"], "seed": params["seed"]},
        "metrics": {
            "success_rate": float((table["success"] & correct).sum() / max(int(correct.sum()), 1)),
            "seconds_per_image": timing["seconds_per_image"],
            "median_l2": float(table.loc[table["success"] & correct, "l2"].median()),
        },
        "artifacts": [paths.path(paths.ADV_TABLE, **where)],
    }


if __name__ == "__main__":
    # one thread: a job's own work is ~1 s against ~5 s of start-up, so two jobs at a time on 2 cores
    # (the rule declares `threads: 1` to match)
    sys.exit(run_stage("attack", main, arguments=("model", "attack"), threads=1))
