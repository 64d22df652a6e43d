"""Stage evaluate: clean accuracy and, per model and attack, the robustness summary.

Writes metrics/<preset>/robustness.json (deterministic on CPU: what `dvc metrics diff` compares),
metrics/<preset>/timing.json (wall times, which vary run to run) and a flat summary CSV.
"""
from __future__ import annotations

import sys

import pandas as pd
import torch

from advlab.metrics import attack_summary
from advlab.models.inference import accuracy
from pipeline import paths
from pipeline.artifacts import load_model, load_prepared
from pipeline.io import read_json, write_csv, write_json
from pipeline.stage import run_stage


def main(params: dict, args) -> dict:
    preset = params["preset"]
    data = load_prepared(preset)
    robustness, timing, rows = {}, {}, []
    for model_name in params["eval"]["models"]:
        model, _ = load_model(preset, model_name)
        model.eval()
        with torch.no_grad():
            clean = accuracy(model, data.x_test, data.y_test, batch_size=1000)
        entry = {"clean_accuracy": clean, "test_error": 1 - clean, "n_test": int(len(data.y_test)), "attacks": {}}
        timing[model_name] = {}
        for attack_name in params["eval"]["attacks"]:
            where = dict(preset=preset, model=model_name, attack=attack_name)
            table = pd.read_csv(paths.path(paths.ADV_TABLE, **where))
            summary = attack_summary(table["label"], table["clean_pred"], table["adv_pred"],
                                     table["l2"], table["linf"], table["x_l2"], table["x_linf"],
                                     table["x_centered_l2"])
            cfg = params["attacks"][attack_name]
            summary["attack_type"] = cfg["type"]
            entry["attacks"][attack_name] = summary
            t = read_json(paths.path(paths.ADV_TIMING, **where))
            timing[model_name][attack_name] = {"seconds_per_image": t["seconds_per_image"],
                                               "ms_per_image": 1000 * t["seconds_per_image"],
                                               "device": t["device"]}
            rows.append({"model": model_name, "attack": attack_name, "type": cfg["type"],
                         "clean_accuracy": clean, **summary,
                         "ms_per_image": 1000 * t["seconds_per_image"]})
        robustness[model_name] = entry
    write_json(paths.path(paths.ROBUSTNESS, preset=preset), robustness)
    write_json(paths.path(paths.TIMING, preset=preset), timing)
    summary_frame = pd.DataFrame(rows)
    write_csv(paths.path(paths.SUMMARY, preset=preset), summary_frame)
    flat = {}
    for row in rows:
        key = f"{row['model']}.{row['attack']}"
        for metric in ("success_rate", "robust_accuracy", "median_l2", "rho_adv", "ms_per_image"):
            flat[f"{key}.{metric}"] = row[metric]
    for model_name, entry in robustness.items():
        flat[f"{model_name}.clean_accuracy"] = entry["clean_accuracy"]
    return {
        "params": {"eval": params["eval"]},
        "metrics": flat,
        "artifacts": [paths.path(paths.SUMMARY, preset=preset), paths.path(paths.ROBUSTNESS, preset=preset)],
    }


if __name__ == "__main__":
    sys.exit(run_stage("evaluate", main))
