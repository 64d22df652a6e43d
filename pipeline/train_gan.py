"""Stage train_gan: the DCGAN behind Defense-GAN (Samangouei et al. 2018).

    python -m pipeline.train_gan

Generator and discriminator (`generative.gan`: z_dim, width) trained with Lightning on the
prepared training images for `epochs` (non-saturating loss, Adam, seeded). Both networks go into
the checkpoint; Defense-GAN uses the generator. The history (discriminator and generator losses,
the discriminator's accuracy on real images) goes to MLflow as curves. The figure of merit is how
well the generator's range covers test images: the mean squared error of their projections.
"""
from __future__ import annotations

import sys

import torch

from advlab.defenses.defensegan import DCGANDiscriminator, DCGANGenerator, project
from advlab.defenses.generative_checkpoint import generative_payload
from advlab.training.generative import fit_gan
from pipeline import paths
from pipeline.artifacts import load_prepared
from pipeline.io import atomic_path, torch_save, write_csv, write_json
from pipeline.stage import run_stage
from pipeline.train_pixelcnn import check_enabled, check_images


def main(params: dict, args) -> dict:
    preset, seed = params["preset"], params["seed"]
    check_enabled(params, "train_gan")
    gen_cfg = params["generative"]
    cfg, proj = gen_cfg["gan"], gen_cfg["defensegan"]["project"]
    data = load_prepared(preset)
    check_images(data, "train_gan", params)
    shape = {"channels": int(data.x_train.shape[1]), "size": int(data.x_train.shape[2])}
    kwargs = {"generator": {"z_dim": cfg["z_dim"], "width": cfg["width"], **shape},
              "discriminator": {"width": cfg["width"], **shape}}
    torch.manual_seed(seed)
    generator, discriminator = DCGANGenerator(**kwargs["generator"]), DCGANDiscriminator(**kwargs["discriminator"])
    history = fit_gan(generator, discriminator, data.x_train, epochs=cfg["epochs"], batch_size=cfg["batch_size"],
                      lr=cfg["lr"], seed=seed)
    x = data.x_test[:cfg["n_val"]]
    recon, _ = project(generator, x, restarts=proj["restarts"], steps=proj["steps"], lr=proj["lr"], seed=seed)
    metrics = {"test_projection_mse": float((recon - x).pow(2).mean()), "d_loss": float(history["d_loss"].iloc[-1]),
               "g_loss": float(history["g_loss"].iloc[-1]), "d_real_acc": float(history["d_real_acc"].iloc[-1]),
               "epochs": int(cfg["epochs"])}  # deterministic; wall times: the history CSV and MLflow
    meta = {"preset": preset, "seed": seed, "data_checksum": data.meta["checksum"], "gan": cfg, **metrics}
    with atomic_path(paths.path(paths.GAN_MODEL, preset=preset)) as tmp:
        torch_save(generative_payload("dcgan", kwargs, {"generator": generator, "discriminator": discriminator},
                                      meta), tmp)
    write_csv(paths.path(paths.GAN_HISTORY, preset=preset), history)
    write_json(paths.path(paths.GAN_METRICS, preset=preset), metrics)
    return {"params": {"gan": cfg, "project": proj, "seed": seed},
            "metrics": {**metrics, "seconds_per_epoch": float(history["seconds"].mean())},
            "curves": {c: history[c].tolist() for c in ("d_loss", "g_loss", "d_real_acc", "seconds")},
            "artifacts": [paths.path(paths.GAN_HISTORY, preset=preset)]}


if __name__ == "__main__":
    sys.exit(run_stage("train_gan", main))
