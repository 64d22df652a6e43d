"""What the two generative defenses cost: PixelCNN and DCGAN training seconds per epoch on mnist5k,
and milliseconds per image of PixelDefend's purification and of Defense-GAN's projection, on the GPU
when there is one (`--device cpu` for the CPU column). Writes bench/out/generative.json (or
$OUT/generative.json when OUT is set; generative_<npz name>.json with --npz) and prints one line per measure.

    python -m bench.generative --points 200
    python -m bench.generative --device cpu --points 20
    python -m bench.generative --npz ../shared/data/cifar10-subset.npz   # RGB: R -> G -> B, 32 x 32 DCGAN
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from advlab.data import load_dataset
from advlab.defenses.defensegan import DCGANDiscriminator, DCGANGenerator, project
from advlab.defenses.pixeldefend import GatedPixelCNN, pixeldefend
from advlab.training.generative import fit_gan, fit_pixelcnn


def _timed(fn, device: torch.device) -> tuple[object, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--npz", help="an npz dataset (e.g. the CIFAR-10 subset) instead of mnist5k")
    parser.add_argument("--channels", type=int, default=None, help="PixelCNN feature maps (32; 48 for RGB)")
    parser.add_argument("--layers", type=int, default=5, help="PixelCNN gated layers")
    parser.add_argument("--eps-levels", type=int, default=16)
    parser.add_argument("--restarts", type=int, default=10)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args(argv)
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if cuda else "cpu")
    accelerator = "gpu" if cuda else "cpu"
    name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
    ds = load_dataset("npz", npz_path=args.npz, seed=0) if args.npz else load_dataset("mnist5k", seed=0)
    colours, size = int(ds.x_train.shape[1]), int(ds.x_train.shape[2])
    channels = args.channels or (32 if colours == 1 else 48)
    x = ds.x_test[:args.points].to(device)
    noisy = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)).to(device)).clamp(0, 1)
    out: dict = {"device": f"{name} (torch {torch.__version__})", "points": len(x), "n_train": len(ds.x_train),
                 "data": args.npz or "mnist5k", "image": [colours, size, size]}

    torch.manual_seed(0)
    pcnn = GatedPixelCNN(channels=channels, layers=args.layers, colours=colours)
    hist = fit_pixelcnn(pcnn, ds.x_train, ds.x_test[:500], epochs=args.epochs, accelerator=accelerator)
    pcnn = pcnn.to(device).eval()
    with torch.no_grad():
        purified, sec = _timed(lambda: pixeldefend(pcnn, noisy, eps_levels=args.eps_levels), device)
        bpd_noisy = float(pcnn.bits_per_dim(noisy).mean())
        bpd_pure = float(pcnn.bits_per_dim(purified).mean())
    out["pixelcnn"] = {"channels": channels, "layers": args.layers,
                       "seconds_per_epoch": float(hist["seconds"].mean()),
                       "val_bpd": float(hist["val_bpd"].iloc[-1]),
                       "purify_ms_per_image": 1000 * sec / len(x), "bpd_noisy": bpd_noisy, "bpd_purified": bpd_pure}

    torch.manual_seed(0)
    gen, disc = DCGANGenerator(channels=colours, size=size), DCGANDiscriminator(channels=colours, size=size)
    hist = fit_gan(gen, disc, ds.x_train, epochs=args.epochs, accelerator=accelerator)
    gen = gen.to(device).eval()
    (recon, _), sec = _timed(lambda: project(gen, noisy, restarts=args.restarts, steps=args.steps, seed=0), device)
    out["defensegan"] = {"restarts": args.restarts, "steps": args.steps,
                         "seconds_per_epoch": float(hist["seconds"].mean()),
                         "project_ms_per_image": 1000 * sec / len(x),
                         "mse_noisy_to_clean": float((noisy - x).pow(2).mean()),
                         "mse_projection_to_clean": float((recon - x).pow(2).mean())}
    for key in ("pixelcnn", "defensegan"):
        print(key, json.dumps(out[key]))
    print("device:", out["device"])
    dest = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).parent / "out"
    dest.mkdir(parents=True, exist_ok=True)
    stem = "generative" + (f"_{Path(args.npz).stem}" if args.npz else "")
    (dest / f"{stem}.json").write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
