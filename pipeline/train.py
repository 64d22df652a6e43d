"""Stage train: natural training of one architecture with Lightning; best epoch by val accuracy."""
from __future__ import annotations

import math
import os
import sys
import tempfile

from advlab.models import build_model
from advlab.models.inference import accuracy
from advlab.training import ArrayDataModule, fit_classifier
from pipeline import paths
from pipeline.artifacts import Prepared, load_prepared
from pipeline.io import save_model, write_csv, write_json
from pipeline.stage import run_stage


def effective_train_config(train: dict, model: str, **overrides) -> dict:
    """The shared training keys with this architecture's `per_model` overrides (and `overrides`) applied."""
    cfg = {k: v for k, v in train.items() if k != "per_model"}
    cfg.update((train.get("per_model") or {}).get(model, {}))
    cfg.update(overrides)
    return cfg


def fit_devices(params: dict, args) -> int:
    """Devices (GPUs, or DDP processes) the fit of `args.model` takes; distillation takes one."""
    cfg = effective_train_config(params["train"], args.model)
    if cfg["accelerator"] == "cpu":
        return 0
    if getattr(args, "defense", None) == "distilled":
        return 1
    return cfg["devices"]


def optimizer_kwargs(cfg: dict) -> dict:
    """The training keys as advlab.training's fit functions take them."""
    return {"epochs": cfg["epochs"], "lr": cfg["lr"], "optimizer": cfg["optimizer"], "momentum": cfg["momentum"],
            "weight_decay": cfg["weight_decay"],
            "lr_schedule": None if cfg["lr_schedule"] == "none" else cfg["lr_schedule"],
            "accelerator": cfg["accelerator"], "devices": cfg["devices"], "strategy": cfg["strategy"]}


def resume_point(params: dict, stage: str, model_id: str, data: Prepared, seed: int, **described) -> dict:
    """Keyword arguments of advlab's fit functions for a resumable fit: its resume folder
    checkpoints/<preset>/<stage>/<model_id> (scratch: no stage's output, emptied when the fit ends),
    whether to continue from it (ADVLAB_RESUME=1), and the stage's description of the fit (a resume
    point of another description is discarded with a warning)."""
    return {"resume_dir": paths.path(paths.RESUME_DIR, preset=params["preset"], stage=stage, model=model_id),
            "resume": os.environ.get("ADVLAB_RESUME") == "1",
            "fingerprint": {"stage": stage, "model": model_id, "seed": seed, "data_checksum": data.meta["checksum"],
                            **described}}


def new_model(arch: str, data: Prepared, seed: int):
    """An untrained `arch` for this data; normalisation (per-channel training statistics) inside."""
    channels, size = data.x_train.shape[1], data.x_train.shape[-1]
    mean = data.x_train.mean(dim=(0, 2, 3)).tolist()
    std = data.x_train.std(dim=(0, 2, 3)).tolist()
    return build_model(arch, in_channels=channels, image_size=size, num_classes=data.num_classes,
                       mean=mean, std=std, init_seed=seed)


def save_trained(params: dict, model_id: str, model, result, data: Prepared, cfg: dict, training: str,
                 extra_metrics: dict | None = None, stage_params: dict | None = None,
                 outputs: tuple[str, str, str] | None = None, seed: int | None = None) -> dict:
    """Write checkpoint, metrics JSON and history of a finished training; return the MLflow record.

    ``outputs``: (model, metrics, history) path patterns with a {model} wildcard; default the
    models/<preset>/ ones. ``seed``: the training seed when it is not params' seed (copies).
    """
    preset = params["preset"]
    model_pat, metrics_pat, history_pat = outputs or (paths.MODEL, paths.TRAIN_METRICS, paths.TRAIN_HISTORY)
    seed = params["seed"] if seed is None else seed
    model.load_state_dict(result.best_state_dict)
    model = model.cpu().eval()
    test_acc = accuracy(model, data.x_test, data.y_test, batch_size=1000)
    metrics = {
        "test_accuracy": test_acc,
        "test_error": 1.0 - test_acc,
        # null, not NaN, without a validation split (the transfer models): NaN is not JSON
        "best_val_accuracy": None if math.isnan(result.best_val_acc) else float(result.best_val_acc),
        "best_epoch": int(result.best_epoch),
        "epochs": int(cfg["epochs"]),
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "world_size": int(result.world_size),  # processes that trained (DDP ranks), as Lightning counted them
        **(extra_metrics or {}),
    }
    meta = {"preset": preset, "model": model_id, "training": training, "dataset": data.meta["dataset"],
            "data_checksum": data.meta["checksum"], "seed": seed, "train": cfg, **metrics}
    save_model(paths.path(model_pat, preset=preset, model=model_id), model, meta)
    # Wall time stays out of the metrics JSON (deterministic); it is the history's `seconds` column.
    write_json(paths.path(metrics_pat, preset=preset, model=model_id), metrics)
    history = result.history
    write_csv(paths.path(history_pat, preset=preset, model=model_id), history)
    curves = {col: history[col].tolist() for col in history.columns if col not in ("epoch",)}
    return {
        "params": stage_params or {"model": model_id, "seed": seed, "train": cfg},
        "metrics": {**metrics, "train_seconds": float(history["seconds"].sum()) if "seconds" in history else None},
        "curves": curves,
        "artifacts": [paths.path(history_pat, preset=preset, model=model_id)],
    }


def fit_natural(params: dict, name: str, data: Prepared, seed: int, stage: str = "train"):
    """Natural training of architecture `name` with `seed`: (model, result, cfg). `stage` names the
    resume folder (train_copy trains the same recipe with another seed)."""
    cfg = effective_train_config(params["train"], name)
    model = new_model(name, data, seed)
    datamodule = ArrayDataModule(data.x_train, data.y_train, val_fraction=cfg["val_fraction"],
                                 batch_size=cfg["batch_size"], seed=seed)
    with tempfile.TemporaryDirectory(prefix="advlab-train-") as log_dir:
        result = fit_classifier(model, datamodule, seed=seed, log_dir=log_dir, **optimizer_kwargs(cfg),
                                **resume_point(params, stage, name, data, seed, train=cfg))
    return model, result, cfg


def main(params: dict, args) -> dict:
    name = args.model
    data = load_prepared(params["preset"])
    model, result, cfg = fit_natural(params, name, data, params["seed"])
    return save_trained(params, name, model, result, data, cfg, training="natural")


if __name__ == "__main__":
    sys.exit(run_stage("train", main, arguments=("model",), gpus=fit_devices))
