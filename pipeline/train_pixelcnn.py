"""Stage train_pixelcnn: the density model behind PixelDefend (Song et al. 2018).

    python -m pipeline.train_pixelcnn

A gated PixelCNN (`generative.pixelcnn`: channels, layers, kernel; R -> G -> B inside a pixel on
colour data) trained with Lightning on the prepared training images for `epochs`, minimising the
negative log-likelihood of the 256 intensity levels. Its figure is bits per dimension (pixel and
colour) on the test images, the usual density-model measure; the history holds training and test
bits/dim per epoch, which MLflow gets as curves.
"""
from __future__ import annotations

import sys

import torch

from advlab.defenses.generative_checkpoint import generative_payload
from advlab.defenses.pixeldefend import GatedPixelCNN
from advlab.training.generative import fit_pixelcnn
from pipeline import paths
from pipeline.artifacts import load_prepared
from pipeline.io import atomic_path, torch_save, write_csv, write_json
from pipeline.stage import run_stage


def check_enabled(params: dict, stage: str) -> None:
    """Refuse before any work when the preset turns the generative stages off (DVC runs every stage)."""
    if not params["generative"]["run"]:
        raise ValueError(f"{stage}: generative.run is false in this preset; leave this stage out "
                         "(`dvc repro -s <stage>` for the others)")


def check_images(data, stage: str, params: dict) -> None:
    """The generative networks take square grayscale or RGB images whose side the DCGAN can halve
    twice (28 x 28 MNIST, 32 x 32 CIFAR-10); the colour PixelCNN splits its channels into R, G, B."""
    c, h, w = tuple(data.x_train.shape[1:])
    if c not in (1, 3) or h != w or h % 4 or h < 8:
        raise ValueError(f"{stage}: the generative defenses take square grayscale or RGB images with a side that is a "
                         f"multiple of 4 (28 x 28, 32 x 32), this preset's data is {(c, h, w)}; "
                         "set generative.run: false for it")
    channels = params["generative"]["pixelcnn"]["channels"]
    if channels % c:
        raise ValueError(f"{stage}: generative.pixelcnn.channels must be a multiple of 3 for RGB data (one group "
                         f"of channels per colour), got {channels}")


def main(params: dict, args) -> dict:
    preset, seed = params["preset"], params["seed"]
    check_enabled(params, "train_pixelcnn")
    cfg = params["generative"]["pixelcnn"]
    data = load_prepared(preset)
    check_images(data, "train_pixelcnn", params)
    arch = {"channels": cfg["channels"], "layers": cfg["layers"], "kernel": cfg["kernel"],
            "colours": int(data.x_train.shape[1])}
    torch.manual_seed(seed)
    model = GatedPixelCNN(**arch)
    x_val = data.x_test[:cfg["n_val"]]
    history = fit_pixelcnn(model, data.x_train, x_val, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                           lr=cfg["lr"], seed=seed)
    with torch.no_grad():
        test_bpd = float(torch.cat([model.bits_per_dim(data.x_test[i:i + 500])
                                    for i in range(0, len(data.x_test), 500)]).mean())
    # The metrics JSON is deterministic (compared bit for bit across runs); wall times go to the
    # history CSV and MLflow only.
    metrics = {"test_bits_per_dim": test_bpd, "train_bits_per_dim": float(history["train_bpd"].iloc[-1]),
               "epochs": int(cfg["epochs"]), "parameters": sum(p.numel() for p in model.parameters())}
    meta = {"preset": preset, "seed": seed, "data_checksum": data.meta["checksum"], "pixelcnn": cfg, **metrics}
    with atomic_path(paths.path(paths.PIXELCNN_MODEL, preset=preset)) as tmp:
        torch_save(generative_payload("pixelcnn", {"pixelcnn": arch}, {"pixelcnn": model}, meta), tmp)
    write_csv(paths.path(paths.PIXELCNN_HISTORY, preset=preset), history)
    write_json(paths.path(paths.PIXELCNN_METRICS, preset=preset), metrics)
    return {"params": {"pixelcnn": cfg, "seed": seed},
            "metrics": {**metrics, "seconds_per_epoch": float(history["seconds"].mean())},
            "curves": {c: history[c].tolist() for c in ("train_bpd", "val_bpd", "seconds")},
            "artifacts": [paths.path(paths.PIXELCNN_HISTORY, preset=preset)]}


if __name__ == "__main__":
    sys.exit(run_stage("train_pixelcnn", main))
