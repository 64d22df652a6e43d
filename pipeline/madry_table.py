"""Stage madry_table: Madry et al. 2018's MNIST table for `madry_table.model`.

    python -m pipeline.madry_table

Rows are attacks (method, steps, restarts, source), columns the models evaluated: the
defended model A and the naturally trained `madry_table.natural`. Sources, as in the paper:
A = white-box on the evaluated model itself; A' = examples made on an independently trained
copy of A (stage train_copy) and transferred; B = examples made on another, naturally trained
architecture (`madry_table.other`) and transferred. Accuracy is over all n_points test
images (a point misclassified clean counts as an error, as in Madry's code).
"""
from __future__ import annotations

import sys
import time

import pandas as pd
import torch

from advlab.attacks import fgsm, pgd
from advlab.models import load_checkpoint
from pipeline import paths
from pipeline.artifacts import device, load_prepared
from pipeline.io import write_csv, write_json
from pipeline.stage import run_stage


def rows(cfg: dict) -> list[dict]:
    """The paper's rows, with this params' eps, step counts and restarts."""
    s0, s1 = cfg["steps"][0], cfg["steps"][-1]
    r1 = cfg["restarts"][-1]
    out = [{"method": "FGSM", "steps": None, "restarts": None, "source": "A"}]
    out += [{"method": "PGD", "steps": s, "restarts": r, "source": "A"} for r in cfg["restarts"] for s in cfg["steps"]]
    out += [{"method": "Targeted", "steps": s0, "restarts": 1, "source": "A"},
            {"method": "CW", "steps": s0, "restarts": 1, "source": "A"},
            {"method": "CW+", "steps": s0, "restarts": 1, "source": "A"}]
    out += [{"method": m, "steps": s, "restarts": r, "source": "A'"}
            for m, s, r in (("FGSM", None, None), ("PGD", s0, 1), ("PGD", s1, r1), ("CW", s0, 1), ("CW+", s0, 1))]
    out += [{"method": m, "steps": s, "restarts": r, "source": "B"}
            for m, s, r in (("FGSM", None, None), ("PGD", s0, 1), ("CW+", s0, 1))]
    return out


def make_examples(model, x, y, row: dict, cfg: dict, seed: int, num_classes: int) -> torch.Tensor:
    """Adversarial examples of one row, made on `model` (the row's source)."""
    if row["method"] == "FGSM":
        return fgsm(model, x, y, cfg["eps"]).x_adv
    gen = torch.Generator().manual_seed(seed)
    kwargs = dict(norm="linf", steps=row["steps"], step_size=cfg["step_size"], random_start=True,
                  restarts=row["restarts"], generator=gen)
    if row["method"] == "Targeted":
        # A random wrong class per point, from the row's own generator (Madry et al. do not fix one).
        shift = torch.randint(1, num_classes, y.shape, generator=gen).to(y.device)
        kwargs["target"] = (y + shift) % num_classes
    elif row["method"] in ("CW", "CW+"):
        kwargs.update(loss="cw", kappa=cfg["kappa"] if row["method"] == "CW+" else 0.0)
    return pgd(model, x, y, cfg["eps"], **kwargs).x_adv


def _load(path, dev):
    model, _ = load_checkpoint(path)
    model = model.to(dev).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def main(params: dict, args) -> dict:
    preset, cfg = params["preset"], params["madry_table"]
    dev = device()
    data = load_prepared(preset)
    n = min(cfg["n_points"], len(data.x_test))
    x_all, y_all = data.x_test[:n], data.y_test[:n]
    targets = {"A": cfg["model"], "natural": cfg["natural"]}
    models = {name: _load(paths.path(paths.MODEL, preset=preset, model=name), dev) for name in targets.values()}
    sources = {"A'": _load(paths.path(paths.COPY_MODEL, preset=preset, model=cfg["model"]), dev),
               "B": _load(paths.path(paths.MODEL, preset=preset, model=cfg["other"]), dev)}

    def accuracy_on(model, x_adv_batches) -> float:
        correct = 0
        with torch.no_grad():
            for start, x_adv in x_adv_batches:
                y = y_all[start:start + len(x_adv)].to(dev)
                correct += int((model(x_adv).argmax(1) == y).sum())
        return correct / n

    table = [{"method": "Natural", "steps": None, "restarts": None, "source": "-",
              **{f"acc_{col}": accuracy_on(models[name], [(s, x_all[s:s + cfg["batch_size"]].to(dev))
                                                         for s in range(0, n, cfg["batch_size"])])
                 for col, name in targets.items()}, "seconds": 0.0}]
    for i, row in enumerate(rows(cfg)):
        seed = params["seed"] * 1000 + i
        began = time.perf_counter()
        accs = {}
        if row["source"] == "A":  # white-box: each column's model attacked directly
            for col, name in targets.items():
                batches = [(s, make_examples(models[name], x_all[s:s + cfg["batch_size"]].to(dev),
                                             y_all[s:s + cfg["batch_size"]].to(dev), row, cfg, seed,
                                             data.num_classes)) for s in range(0, n, cfg["batch_size"])]
                accs[f"acc_{col}"] = accuracy_on(models[name], batches)
        else:  # transfer: examples made once on the source, evaluated on every column's model
            src = sources[row["source"]]
            batches = [(s, make_examples(src, x_all[s:s + cfg["batch_size"]].to(dev),
                                         y_all[s:s + cfg["batch_size"]].to(dev), row, cfg, seed, data.num_classes))
                       for s in range(0, n, cfg["batch_size"])]
            accs = {f"acc_{col}": accuracy_on(models[name], batches) for col, name in targets.items()}
        table.append({**row, **accs, "seconds": time.perf_counter() - began})
    frame = pd.DataFrame(table)
    frame["steps"] = frame["steps"].astype("Int64")
    frame["restarts"] = frame["restarts"].astype("Int64")
    write_csv(paths.path(paths.MADRY_TABLE, preset=preset), frame)

    def key(r) -> str:
        if r["method"] == "Natural":
            return "clean"
        parts = [r["method"].lower().replace("+", "_plus"), r["source"].replace("'", "_prime")]
        if pd.notna(r["steps"]):
            parts[1:1] = [f"{r['steps']}x{r['restarts']}"]
        return ".".join(parts)

    metrics = {f"{key(r)}.{col}": float(r[f"acc_{col}"]) for r in table for col in targets}
    metrics_doc = {"model": cfg["model"], "natural": cfg["natural"], "other": cfg["other"], "n_points": n,
                   "eps": cfg["eps"], "accuracy": metrics}
    write_json(paths.path(paths.MADRY_METRICS, preset=preset), metrics_doc)
    return {
        "params": {"madry_table": cfg, "n_points": n, "seed": params["seed"]},
        "metrics": metrics,
        "artifacts": [paths.path(paths.MADRY_TABLE, preset=preset)],
        "tags": {"advlab.model": cfg["model"]},
    }


if __name__ == "__main__":
    sys.exit(run_stage("madry_table", main))
