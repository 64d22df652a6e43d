"""One-pixel attack (untargeted, differential evolution) against torchattacks' OnePixel on
the same CIFAR-10 net (AllConv, or LeNet with ``--arch lenet``) and the same points.

    python -m bench.onepixel                      # 100 points, 400 candidates x 100 generations
    python -m bench.onepixel --points 3 --iters 2 # a smoke run

Model: models/cifar10*/allconv.pt when the pipeline has made one, else a small AllConv
(``--widths``, default 16 32, batch norm) trained here with Adam for ``--epochs`` (10) on
the CIFAR-10 subset (/work/shared/data/cifar10-subset.npz or ``--npz``), seeded, cached
in bench/out/. On a CPU, both libraries spend nearly all their time in the model's
forward passes (up to 40,400 per image): with full forward passes the ratio there is the
ratio of forward passes, and ours gains what it does by computing only the part of each
forward that one pixel can change; torchattacks' per-candidate Python only dominates on
a GPU. Points:
the first ``--points`` correctly classified test images. Every library runs in a fresh
subprocess (peak resident memory = that process's ru_maxrss, torch import included) on
the same points with pixels=1 and 400 candidates per image (also reported: the resident
memory the attack adds, sampled, since ru_maxrss is set by importing torch):

* advlab ``one_pixel``: ``popsize=400``; the paper's ``rand1`` (F = 0.5, no crossover) and
  Hyperparticle's ``best1bin`` (dithered F, recombination 1) variants (``--strategies``).
  By default one-pixel candidates go through ``LocalForward`` (cached clean activations,
  only the window each pixel reaches is recomputed); ``--full-forward`` adds rows
  ``advlab:<strategy>:full`` with plain full forward passes.
* torchattacks ``OnePixel(popsize=400, steps=iters)``: scipy-style DE with ``best1bin``,
  dither (0.5, 1), recombination 1, uniform init; its ``popsize`` is divided by the
  number of DE parameters (2 + C per pixel = 5) into scipy's multiplier, 400 // 5 = 80,
  and scipy makes 80 x 5 = 400 members: the same 400 candidates per generation.
  ``--inf-batch`` (default 128, its own default) is its forward chunk.

Success is judged here, on the returned images, by the model's argmax. torchattacks is a
bench/dev dependency only. Writes bench/out/onepixel.json.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
NPZ = Path("/work/shared/data/cifar10-subset.npz")


# ------------------------------------------------------------------ model and points


def _train_allconv(x, y, widths, epochs: int, seed: int, device: str, arch: str = "allconv"):
    from advlab.models import build_model

    options = {"widths": list(widths), "batch_norm": True} if arch == "allconv" else {}
    model = build_model(arch, in_channels=3, image_size=32, num_classes=10,
                        mean=x.mean(dim=(0, 2, 3)).tolist(), std=x.std(dim=(0, 2, 3)).tolist(),
                        init_seed=seed, **options).to(device)  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        total = 0.0
        for s in range(0, len(x), 128):
            i = perm[s : s + 128]
            xb, yb = x[i].to(device), y[i].to(device)
            flip = torch.rand(len(i), generator=g) < 0.5  # horizontal flips
            xb[flip.to(device)] = xb[flip.to(device)].flip(-1)
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(i)
        print(f"  epoch {epoch + 1}/{epochs}: train loss {total / len(x):.3f}")
    return model.eval()


def model_and_test_set(args):
    from advlab.data import load_dataset
    from advlab.models import load_checkpoint, save_checkpoint

    ds = load_dataset("npz", npz_path=args.npz)
    found = sorted(glob.glob(str(ROOT / "models" / "cifar10*" / f"{args.arch}.pt")))
    cache = OUT / f"onepixel_{args.arch}.pt"
    want = {"arch": args.arch, "widths": list(args.widths), "batch_norm": True, "epochs": args.epochs,
            "seed": args.seed, "npz": str(args.npz)}  # fmt: skip
    if found and not args.retrain:
        path = Path(found[0])
        model, _ = load_checkpoint(path)
        print(f"model: {path.relative_to(ROOT)}")
    elif cache.exists() and not args.retrain and load_checkpoint(cache)[1].get("settings") == want:
        path = cache
        model, _ = load_checkpoint(cache)
        print(f"model: {cache.relative_to(ROOT)} (cached)")
    else:
        print(f"model: training {args.arch} for {args.epochs} epochs on {len(ds.x_train)} images")
        began = time.perf_counter()
        model = _train_allconv(ds.x_train, ds.y_train, args.widths, args.epochs, args.seed, "cpu", args.arch)
        print(f"  trained in {time.perf_counter() - began:.0f} s")
        OUT.mkdir(parents=True, exist_ok=True)
        path = save_checkpoint(cache, model.cpu(), {"settings": want})
    return path, model.cpu().eval(), ds.x_test, ds.y_test


# ------------------------------------------------------------------ one library per process


class _RssSampler:
    """Peak resident memory above the level at start, sampled every 5 ms in a thread: the
    process's ru_maxrss is set by importing torch (~600 MB) and hides the attack's own."""

    def __init__(self) -> None:
        import threading

        import psutil

        self._proc = psutil.Process()
        self._base = self._peak = self._proc.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.005):
            self._peak = max(self._peak, self._proc.memory_info().rss)

    def stop(self) -> float:
        self._done.set()
        self._thread.join()
        self._peak = max(self._peak, self._proc.memory_info().rss)
        return (self._peak - self._base) / 2**20


def worker(job: Path, library: str) -> None:
    from advlab.models import load_checkpoint

    spec = json.loads((job / "spec.json").read_text())
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = spec["device"]
    model, _ = load_checkpoint(spec["model"])
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    pts = torch.load(job / "points.pt", weights_only=True)
    x, y = pts["x"].to(device), pts["y"].to(device)
    extra = {}
    if library.startswith("advlab"):
        from advlab.attacks.onepixel import one_pixel

        strategy = library.split(":")[1]
        local = None if library.count(":") == 1 else False  # "advlab:<strategy>:full": full forwards

        def run():
            return one_pixel(model, x, y, pixels=spec["pixels"], popsize=spec["popsize"], max_iter=spec["iters"],
                             strategy=strategy, batch_size=spec["batch_size"], local_forward=local)  # fmt: skip
    else:
        import numpy as np
        import torchattacks

        np.random.seed(spec["seed"])  # scipy's DE draws from numpy's global RNG
        torch.manual_seed(spec["seed"])
        attack = torchattacks.OnePixel(model, pixels=spec["pixels"], steps=spec["iters"], popsize=spec["popsize"],
                                       inf_batch=spec["inf_batch"])  # fmt: skip

        def run():
            return attack(x, y)

    if device.startswith("cuda"):
        torch.cuda.synchronize()
    sampler = _RssSampler()
    began = time.perf_counter()
    out = run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - began
    attack_mb = sampler.stop()
    if library.startswith("advlab"):
        x_adv = out.x_adv
        extra = {"forwards_per_image": float(out.counts["forward"].double().mean()),
                 "mean_generations": float(out.extra["generations"].double().mean())}  # fmt: skip
    else:
        x_adv = out
    torch.save({"x_adv": x_adv.cpu()}, job / f"{library.replace(':', '_')}.pt")
    info = {"seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "attack_rss_mb": attack_mb, **extra}  # fmt: skip
    if device.startswith("cuda"):
        info["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    (job / f"{library.replace(':', '_')}.json").write_text(json.dumps(info))


def run_library(job: Path, library: str) -> dict:
    cmd = [sys.executable, "-m", "bench.onepixel", "--worker", library, "--job", str(job)]
    subprocess.run(cmd, check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    info = json.loads((job / f"{library.replace(':', '_')}.json").read_text())
    info["x_adv"] = torch.load(job / f"{library.replace(':', '_')}.pt", weights_only=True)["x_adv"]
    return info


# ------------------------------------------------------------------ main


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--iters", type=int, default=100, help="DE generations (torchattacks: steps)")
    parser.add_argument("--popsize", type=int, default=400, help="candidates per image")
    parser.add_argument("--pixels", type=int, default=1)
    parser.add_argument("--strategies", nargs="+", default=["rand1", "best1bin"], choices=["rand1", "best1bin"])
    parser.add_argument("--skip-torchattacks", action="store_true")
    parser.add_argument("--full-forward", action="store_true",
                        help="also run advlab with full forward passes (local_forward=False)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="advlab forward chunk (default: one_pixel's, 128 on a CPU, 4096 on a GPU)")
    parser.add_argument("--inf-batch", type=int, default=128, help="torchattacks forward chunk (its default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per process (0: torch's default)")
    parser.add_argument("--arch", default="allconv", choices=["allconv", "lenet"],
                        help="the CIFAR-10 net attacked: AllConv (the paper's) or the DeepFool paper's LeNet")
    parser.add_argument("--widths", type=int, nargs=2, default=[16, 32], help="AllConv widths if training here")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--retrain", action="store_true", help="ignore models/cifar10*/allconv.pt and the cache")
    parser.add_argument("--npz", type=Path, default=NPZ)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--job", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.job, args.worker)
        return 0

    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)
    model_path, model, x_test, y_test = model_and_test_set(args)
    with torch.no_grad():
        pred = torch.cat([model(x_test[s : s + 500]) for s in range(0, len(x_test), 500)]).argmax(1)
    correct = pred == y_test
    acc = float(correct.double().mean())
    idx = correct.nonzero().flatten()[: args.points]
    x, y = x_test[idx].contiguous(), y_test[idx].contiguous()
    n = len(x)
    print(f"test accuracy {acc:.1%}; points: the first {n} correctly classified test images; "
          f"{args.popsize} candidates x {args.iters} generations, pixels={args.pixels}, "
          f"device {args.device}")  # fmt: skip

    libraries = [f"advlab:{s}" for s in args.strategies]
    libraries += [f"advlab:{s}:full" for s in args.strategies] if args.full_forward else []
    libraries += [] if args.skip_torchattacks else ["torchattacks"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp)
        spec = {"model": str(model_path), "device": args.device, "threads": args.threads, "pixels": args.pixels,
                "popsize": args.popsize, "iters": args.iters, "batch_size": args.batch_size,
                "inf_batch": args.inf_batch, "seed": args.seed}  # fmt: skip
        (job / "spec.json").write_text(json.dumps(spec))
        torch.save({"x": x, "y": y}, job / "points.pt")
        for lib in libraries:
            print(f"running {lib} ...", flush=True)
            info = run_library(job, lib)
            x_adv = info.pop("x_adv")
            with torch.no_grad():
                fooled = model(x_adv).argmax(1) != y
            changed = (x_adv != x).any(1).flatten(1).sum(1)
            rows.append({"library": lib, "ms_per_image": 1000 * info.pop("seconds") / n,
                         "success_rate": float(fooled.double().mean()),
                         "max_pixels_changed": int(changed.max()), **info})  # fmt: skip

    ta = next((r for r in rows if r["library"] == "torchattacks"), None)
    print(f"\n{'library':<23}{'ms/image':>11}{'success':>9}{'peak RSS MB':>13}{'attack MB':>11}"
          f"{'forwards/img':>14}{'vs torchattacks':>17}")  # fmt: skip
    for r in rows:
        r["speedup_vs_torchattacks"] = ta["ms_per_image"] / r["ms_per_image"] if ta else None
        speed = f"{r['speedup_vs_torchattacks']:.1f}x" if ta else "-"
        fw = f"{r['forwards_per_image']:.0f}" if "forwards_per_image" in r else "-"
        print(f"{r['library']:<23}{r['ms_per_image']:>11.1f}{r['success_rate']:>9.1%}{r['peak_rss_mb']:>13.0f}"
              f"{r['attack_rss_mb']:>11.1f}{fw:>14}{speed:>17}")  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    model_name = str(model_path.relative_to(ROOT)) if model_path.is_relative_to(ROOT) else str(model_path)
    result = {"points": n, "test_accuracy": acc, "model": model_name, "popsize": args.popsize,
              "iters": args.iters, "pixels": args.pixels, "device": args.device,
              "threads": torch.get_num_threads(), "rows": rows}  # fmt: skip
    name = "onepixel.json" if args.arch == "allconv" else f"onepixel_{args.arch}.json"
    (OUT / name).write_text(json.dumps(result, indent=2))
    print(f"written: {(OUT / name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
