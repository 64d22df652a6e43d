"""Stage train_transfer: one of Szegedy et al.'s small MNIST models for the transfer tables.

    python -m pipeline.train_transfer --model fc10_1e-4

`transfer.models.<name>`: the architecture, its weight decay (the lambda of FC10(lambda), as the
coefficient of |w|^2 / 2 on the mean loss, i.e. PyTorch's weight_decay), and which training
images it sees: all, or one of two disjoint halves P1 / P2 (the cross-training-set table).
ae400_10 first pretrains a sparse autoencoder on the same images, then trains with the softmax.
All use `transfer.train`, without a validation split: the last epoch is kept.
"""
from __future__ import annotations

import sys
import tempfile

import torch

from advlab.models.inference import accuracy
from advlab.training import ArrayDataModule, fit_classifier, pretrain_autoencoder
from pipeline import paths
from pipeline.artifacts import load_prepared
from pipeline.stage import run_stage
from pipeline.train import new_model, resume_point, save_trained

OUTPUTS = (paths.TRANSFER_MODEL.replace("{tmodel}", "{model}"),
           paths.TRANSFER_TRAIN_METRICS.replace("{tmodel}", "{model}"),
           paths.TRANSFER_TRAIN_HISTORY.replace("{tmodel}", "{model}"))


def half_indices(n: int, half: str, seed: int) -> torch.Tensor:
    """Indices of the training images for `half`: all, or one of two disjoint random halves."""
    if half == "all":
        return torch.arange(n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[: n // 2] if half == "p1" else perm[n // 2:]


def main(params: dict, args) -> dict:
    name, tcfg = args.model, params["transfer"]
    specs = {m["name"]: m for m in tcfg["models"]}
    if name not in specs:
        raise SystemExit(f"error: transfer.models has no model named {name!r} (defined: {', '.join(specs)})")
    spec = specs[name]
    seed = params["seed"]
    data = load_prepared(params["preset"])
    idx = half_indices(len(data.x_train), spec["half"], seed)
    x, y = data.x_train[idx], data.y_train[idx]
    cfg = {**tcfg["train"], "epochs": spec.get("epochs", tcfg["train"]["epochs"]),
           "weight_decay": spec["weight_decay"], "val_fraction": 0.0, "accelerator": params["train"]["accelerator"]}
    model = new_model(spec["arch"], data, seed)
    extra = {"n_train_images": int(len(idx))}
    if spec.get("pretrain_epochs"):
        # Adam at 1e-2: at 1e-3 ten epochs reconstruct barely better than the mean image.
        pre = pretrain_autoencoder(model, x, epochs=spec["pretrain_epochs"], batch_size=cfg["batch_size"],
                                   lr=1e-2, seed=seed)
        extra["pretrain_recon_loss"] = float(pre.history["recon_loss"].iloc[-1])
        extra["pretrain_mean_activation"] = float(pre.history["mean_activation"].iloc[-1])
    datamodule = ArrayDataModule(x, y, val_fraction=0.0, batch_size=cfg["batch_size"], seed=seed)
    with tempfile.TemporaryDirectory(prefix="advlab-train-") as log_dir:
        result = fit_classifier(model, datamodule, epochs=cfg["epochs"], seed=seed, log_dir=log_dir, lr=cfg["lr"],
                                optimizer=cfg["optimizer"], momentum=cfg["momentum"],
                                weight_decay=cfg["weight_decay"],
                                lr_schedule=None if cfg["lr_schedule"] == "none" else cfg["lr_schedule"],
                                accelerator=cfg["accelerator"],
                                **resume_point(params, "train_transfer", name, data, seed, train=cfg, spec=spec))
    model.load_state_dict(result.best_state_dict)
    extra["train_error"] = 1 - accuracy(model.eval(), x, y)
    record = save_trained(params, name, model, result, data, cfg, training=f"transfer:{spec['arch']}",
                          extra_metrics=extra, outputs=OUTPUTS,
                          stage_params={"model": name, **{k: v for k, v in spec.items() if k != "name"}, "train": cfg,
                                        "seed": seed})
    return record


if __name__ == "__main__":
    # small fully connected nets: one thread each, two jobs at a time (the rule declares `threads: 1`)
    sys.exit(run_stage("train_transfer", main, arguments=("model",), threads=1))
