"""Stage cw_study: Carlini & Wagner 2017 on one model: the 10 x 10 grids and Table IV.

    python -m pipeline.cw_study --model lenet

For each of L2, L0 and Linf (settings under `cw_study.<norm>`):

- the grid (for the models listed in `cw_study.grid`): the first correctly classified test image of every class,
  driven to each of the other classes (the paper's Figure: source digit per row, target per
  column, the diagonal the original image);
- Table IV: the first `cw_study.n_points` correctly classified test images, each attacked
  towards all of the other classes; per image the best (smallest distance among the successful
  targets), average and worst case, then their means and success rates over the images (a case
  succeeds when its target(s) are reached: the worst case only when every target is);
- untargeted success rate and median distance on the same images.

Distances: L2 in the [0, 1] pixel unit (equal to the paper's [-0.5, 0.5] one), Linf likewise,
L0 in pixels (positions where any channel changed). A failed attack is counted as failed and
never enters a distance average.
"""
from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
import torch

from advlab.attacks.cw import cw_l0, cw_l2, cw_linf
from advlab.attacks.jsma import all_targets
from advlab.metrics import target_cases
from advlab.models import predict
from pipeline import paths
from pipeline.artifacts import device, load_frozen, load_prepared
from pipeline.io import save_tensors, write_csv, write_json
from pipeline.stage import run_stage

ATTACKS = {"l2": cw_l2, "l0": cw_l0, "linf": cw_linf}


def distance(norm: str, x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    d = x_adv - x
    if norm == "l0":  # pixels, as the paper counts them
        return (d != 0).any(dim=1).flatten(1).sum(1).double()
    if norm == "l2":
        return d.flatten(1).norm(dim=1).double()
    return d.flatten(1).abs().amax(1).double()


def first_of_each_class(y: torch.Tensor, correct: torch.Tensor, num_classes: int) -> list[int]:
    out = []
    for c in range(num_classes):
        hits = ((y == c) & correct).nonzero().flatten()
        if len(hits) == 0:
            raise ValueError(f"no correctly classified test image of class {c}: the grid needs one per class")
        out.append(int(hits[0]))
    return out


def main(params: dict, args) -> dict:
    preset, cfg, name = params["preset"], params["cw_study"], args.model
    dev = device()
    data = load_prepared(preset)
    model = load_frozen(preset, name, dev)
    c = data.num_classes
    x_test, y_test = data.x_test.to(dev), data.y_test.to(dev)
    correct = predict(model, x_test).to(dev) == y_test
    grid_idx = first_of_each_class(y_test, correct, c)
    table_idx = correct.nonzero().flatten()[:cfg["n_points"]]
    gi, gt = all_targets(y_test[grid_idx], c)
    ti, tt = all_targets(y_test[table_idx], c)
    gx, gy = x_test[grid_idx][gi], y_test[grid_idx][gi]
    tx, ty = x_test[table_idx][ti], y_test[table_idx][ti]
    ux, uy = x_test[table_idx], y_test[table_idx]

    grids, rows, summary = {}, [], {"model": name, "n_points": len(table_idx), "norms": {}}
    ms_per_attack = {}
    for norm, attack in ATTACKS.items():
        kw = dict(cfg[norm])
        began = time.perf_counter()
        n_grid = 0
        if name in cfg["grid"]:
            g = attack(model, gx, gy, target=gt, **kw)
            n_grid = len(gx)
            grid = x_test[grid_idx].unsqueeze(1).repeat(1, c, 1, 1, 1)  # [source, target, C, H, W]
            # a failed cell stays black: the grid never shows a failure as an adversarial example
            grid[gi, gt] = torch.where(g.success.view(-1, 1, 1, 1), g.x_adv, torch.zeros_like(g.x_adv))
            grids[f"{norm}_grid"] = grid.cpu()
            grids[f"{norm}_grid_success"] = torch.eye(c, dtype=torch.bool).index_put((gi.cpu(), gt.cpu()),
                                                                                     g.success.cpu())
        t = attack(model, tx, ty, target=tt, **kw)
        seconds_targeted = time.perf_counter() - began
        dist = distance(norm, tx, t.x_adv).cpu().numpy().reshape(len(table_idx), c - 1)
        ok = t.success.cpu().numpy().reshape(len(table_idx), c - 1)
        began = time.perf_counter()
        u = attack(model, ux, uy, **kw)
        seconds_untargeted = time.perf_counter() - began
        ud = distance(norm, ux, u.x_adv)[u.success].cpu().numpy()
        rows.append(pd.DataFrame({"norm": norm, "index": table_idx[ti].cpu().numpy(), "label": ty.cpu().numpy(),
                                  "target": tt.cpu().numpy(), "success": ok.reshape(-1),
                                  "distance": np.where(ok.reshape(-1), dist.reshape(-1), np.nan)}))
        ms_per_attack[norm] = 1000 * (seconds_targeted + seconds_untargeted) / (n_grid + len(tx) + len(ux))
        summary["norms"][norm] = {
            "targeted": target_cases(dist, ok),
            "untargeted": {"success": float(u.success.float().mean()),
                           "median": float(np.median(ud)) if len(ud) else None},
            "grid_success": float(g.success.float().mean()) if n_grid else None,
            "settings": kw,
        }
    save_tensors(paths.path(paths.CW_GRIDS, preset=preset, model=name), grids)
    write_csv(paths.path(paths.CW_TABLE, preset=preset, model=name), pd.concat(rows, ignore_index=True))
    write_json(paths.path(paths.CW_METRICS, preset=preset, model=name), summary)
    # wall times beside, not in, the metrics JSON (which is bit-identical across runs on CPU)
    write_json(paths.path(paths.CW_TIMING, preset=preset, model=name), {"ms_per_attack": ms_per_attack})
    metrics = {}
    for norm, s in summary["norms"].items():
        for case, v in s["targeted"].items():
            metrics[f"{norm}.{case}.success"] = v["success"]
            if v["mean"] is not None:
                metrics[f"{norm}.{case}.mean"] = v["mean"]
        metrics[f"{norm}.untargeted.success"] = s["untargeted"]["success"]
    return {"params": {"model": name, "cw_study": cfg, "seed": params["seed"]}, "metrics": metrics,
            "artifacts": [paths.path(paths.CW_TABLE, preset=preset, model=name)]}


if __name__ == "__main__":
    sys.exit(run_stage("cw_study", main, arguments=("model",)))
