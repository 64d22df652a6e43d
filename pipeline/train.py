"""Stage train: natural training of one architecture with Lightning; best epoch by val accuracy."""
from __future__ import annotations

import sys
import tempfile

from advlab.models import build_model, save_checkpoint
from advlab.models.inference import accuracy
from advlab.training import ArrayDataModule, fit_classifier
from pipeline import paths
from pipeline.artifacts import load_prepared
from pipeline.io import write_csv, write_json
from pipeline.stage import run_stage


def effective_train_config(train: dict, model: str) -> dict:
    """The shared training keys with this architecture's `per_model` overrides applied."""
    cfg = {k: v for k, v in train.items() if k != "per_model"}
    cfg.update((train.get("per_model") or {}).get(model, {}))
    return cfg


def main(params: dict, args) -> dict:
    preset, name = params["preset"], args.model
    cfg = effective_train_config(params["train"], name)
    data = load_prepared(preset)
    channels, size = data.x_train.shape[1], data.x_train.shape[-1]
    # Normalisation lives inside the model (per-channel statistics of the training split).
    mean = data.x_train.mean(dim=(0, 2, 3)).tolist()
    std = data.x_train.std(dim=(0, 2, 3)).tolist()
    model = build_model(name, in_channels=channels, image_size=size, num_classes=data.num_classes,
                        mean=mean, std=std, init_seed=params["seed"])
    datamodule = ArrayDataModule(data.x_train, data.y_train, val_fraction=cfg["val_fraction"],
                                 batch_size=cfg["batch_size"], seed=params["seed"])
    with tempfile.TemporaryDirectory(prefix="advlab-train-") as log_dir:
        result = fit_classifier(
            model, datamodule, epochs=cfg["epochs"], lr=cfg["lr"], optimizer=cfg["optimizer"],
            momentum=cfg["momentum"], weight_decay=cfg["weight_decay"],
            lr_schedule=None if cfg["lr_schedule"] == "none" else cfg["lr_schedule"],
            seed=params["seed"], accelerator=cfg["accelerator"], log_dir=log_dir,
        )
    model.load_state_dict(result.best_state_dict)
    model = model.cpu().eval()
    test_acc = accuracy(model, data.x_test, data.y_test, batch_size=1000)
    metrics = {
        "test_accuracy": test_acc,
        "test_error": 1.0 - test_acc,
        "best_val_accuracy": float(result.best_val_acc),
        "best_epoch": int(result.best_epoch),
        "epochs": int(cfg["epochs"]),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
    }
    meta = {"preset": preset, "model": name, "training": "natural", "dataset": data.meta["dataset"],
            "data_checksum": data.meta["checksum"], "seed": params["seed"], "train": cfg, **metrics}
    save_checkpoint(paths.path(paths.MODEL, preset=preset, model=name), model, meta)
    write_json(paths.path(paths.TRAIN_METRICS, preset=preset, model=name), metrics)
    history = result.history
    write_csv(paths.path(paths.TRAIN_HISTORY, preset=preset, model=name), history)
    curves = {col: history[col].tolist() for col in ("train_loss", "train_acc", "val_loss", "val_acc")
              if col in history}
    return {
        "params": {"model": name, "seed": params["seed"], "train": cfg},
        "metrics": metrics,
        "curves": curves,
        "artifacts": [paths.path(paths.TRAIN_HISTORY, preset=preset, model=name)],
    }


if __name__ == "__main__":
    sys.exit(run_stage("train", main, arguments=("model",)))
