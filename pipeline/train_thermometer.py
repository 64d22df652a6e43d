"""Stage train_thermometer: the classifier behind Buckman et al.'s thermometer encoding.

    python -m pipeline.train_thermometer

`obfuscated.thermometer.arch` is built for `levels` x channels binary inputs and trained with
Lightning on the encoded training images (the encoding sits inside the model, so the training
loop sees ordinary images). The checkpoint holds the inner classifier; `levels` and
`relax_shift` are in its meta, and the obfuscated stage wraps it again.
"""
from __future__ import annotations

import sys
import tempfile

from advlab.defenses import build_thermometer_model
from advlab.models.inference import accuracy
from advlab.training import ArrayDataModule, fit_classifier
from pipeline import paths
from pipeline.artifacts import load_prepared
from pipeline.io import save_model, write_csv, write_json
from pipeline.stage import run_stage
from pipeline.train import effective_train_config, optimizer_kwargs, resume_point


def main(params: dict, args) -> dict:
    preset, seed = params["preset"], params["seed"]
    tcfg = params["obfuscated"]["thermometer"]
    data = load_prepared(preset)
    cfg = effective_train_config(params["train"], tcfg["arch"], epochs=tcfg["epochs"])
    model = build_thermometer_model(tcfg["arch"], in_channels=data.x_train.shape[1],
                                    image_size=data.x_train.shape[-1], levels=tcfg["levels"],
                                    relax_shift=tcfg["relax_shift"], num_classes=data.num_classes, init_seed=seed)
    dm = ArrayDataModule(data.x_train, data.y_train, val_fraction=cfg["val_fraction"],
                         batch_size=cfg["batch_size"], seed=seed)
    with tempfile.TemporaryDirectory(prefix="advlab-thermo-") as log_dir:
        result = fit_classifier(model, dm, seed=seed, log_dir=log_dir, **optimizer_kwargs(cfg),
                                **resume_point(params, "train_thermometer", "thermometer", data, seed, train=cfg,
                                               thermometer=tcfg))
    model.load_state_dict(result.best_state_dict)
    model = model.cpu().eval()
    test_acc = accuracy(model, data.x_test, data.y_test, batch_size=1000)
    metrics = {"test_accuracy": test_acc, "best_epoch": int(result.best_epoch), "epochs": int(cfg["epochs"])}
    meta = {"preset": preset, "model": f"{tcfg['arch']}-thermometer", "training": "natural on thermometer codes",
            "levels": tcfg["levels"], "relax_shift": tcfg["relax_shift"], "data_checksum": data.meta["checksum"],
            "seed": seed, "train": cfg, **metrics}
    save_model(paths.path(paths.THERMO_MODEL, preset=preset), model.classifier, meta)
    write_json(paths.path(paths.THERMO_METRICS, preset=preset), metrics)
    write_csv(paths.path(paths.THERMO_HISTORY, preset=preset), result.history)
    return {"params": {"thermometer": tcfg, "train": cfg, "seed": seed}, "metrics": metrics,
            "curves": {c: result.history[c].tolist() for c in result.history.columns if c != "epoch"},
            "artifacts": [paths.path(paths.THERMO_HISTORY, preset=preset)]}


if __name__ == "__main__":
    sys.exit(run_stage("train_thermometer", main))
