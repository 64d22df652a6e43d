"""Stage units: Szegedy et al. 2014 §3, the natural basis is no more interpretable than a
random one.

    python -m pipeline.units

For `units.layer` of `units.model`, the held-out (test) images with the largest activation of
single units e_i, and those with the largest projection on random directions v, with the
label purity of each set (the fraction sharing its most common label). Units are drawn at
random (seeded) among those active on some test image; the report draws the image grids.
"""
from __future__ import annotations

import sys

import pandas as pd
import torch

from advlab.analysis import label_purity, layer_activations, random_directions, top_activating
from pipeline import paths
from pipeline.artifacts import load_model, load_prepared
from pipeline.io import write_csv, write_json
from pipeline.stage import run_stage


def main(params: dict, args) -> dict:
    preset, cfg, seed = params["preset"], params["units"], params["seed"]
    data = load_prepared(preset)
    model, _ = load_model(preset, cfg["model"])
    model.eval()
    acts = layer_activations(model, data.x_test, cfg["layer"]).flatten(1)
    gen = torch.Generator().manual_seed(seed)
    active = (acts.std(dim=0) > 0).nonzero().flatten()
    if len(active) == 0:
        raise RuntimeError(f"units.layer {cfg['layer']!r} of {cfg['model']} is constant on the test set")
    k = min(cfg["n_directions"], len(active))
    units = active[torch.randperm(len(active), generator=gen)[:k]].sort().values
    basis = torch.zeros(k, acts.shape[1])
    basis[torch.arange(k), units] = 1.0
    rand = random_directions(acts.shape[1], cfg["n_directions"], generator=gen)
    rows, purity = [], {}
    for kind, dirs, ids in (("unit", basis, units.tolist()), ("random", rand, list(range(len(rand))))):
        top = top_activating(acts, dirs, cfg["top_k"])
        pur = label_purity(data.y_test, top)
        purity[kind] = pur.tolist()
        proj = acts @ dirs.T
        for d, ident in enumerate(ids):
            for rank, idx in enumerate(top[d].tolist()):
                rows.append({"kind": kind, "direction": d, "unit": ident if kind == "unit" else -1, "rank": rank,
                             "index": idx, "label": int(data.y_test[idx]), "projection": float(proj[idx, d]),
                             "purity": float(pur[d])})
    write_csv(paths.path(paths.UNITS_TOP, preset=preset), pd.DataFrame(rows))
    summary = {"model": cfg["model"], "layer": cfg["layer"], "dim": int(acts.shape[1]), "units": units.tolist(),
               "purity": purity, "mean_purity_unit": sum(purity["unit"]) / len(purity["unit"]),
               "mean_purity_random": sum(purity["random"]) / len(purity["random"])}
    write_json(paths.path(paths.UNITS_METRICS, preset=preset), summary)
    return {"params": {"units": cfg, "seed": seed},
            "metrics": {"mean_purity_unit": summary["mean_purity_unit"],
                        "mean_purity_random": summary["mean_purity_random"]},
            "artifacts": [paths.path(paths.UNITS_TOP, preset=preset)]}


if __name__ == "__main__":
    sys.exit(run_stage("units", main))
