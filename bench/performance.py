"""Time per training epoch, attack milliseconds per image and peak GPU memory for a preset's models,
on the GPU when there is one: the figures of docs/performance.md.

    python -m bench.performance                          # preset mnist (full MNIST; offline: --data-root)
    python -m bench.performance --data-root ../shared/data --epochs 2 --points 1000
    python -m bench.performance --device cpu --epochs 1  # the CPU column

Trains each of the preset's `models` for `--epochs` with the preset's training settings (Lightning,
the pipeline's fit), then attacks `--points` test images with FGSM, PGD (the preset's eps / steps),
DeepFool L2 and C&W L2 (9 binary-search steps x 1000 iterations, `--cw-points`). Writes bench/out/performance.json
and prints the markdown rows for docs/performance.md. Timings include nothing but the fit or the
attack call (CUDA synchronised before the clock stops).
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from advlab.attacks import cw_l2, deepfool, fgsm, pgd
from advlab.data import load_dataset
from advlab.models.inference import accuracy
from advlab.training import ArrayDataModule, fit_classifier
from pipeline.config import ROOT, deep_merge, load_params, preset_path, read_yaml
from pipeline.train import effective_train_config, new_model, optimizer_kwargs

OUT = ROOT / "bench" / "out"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (torch {torch.__version__})"
    cpu = platform.processor() or platform.machine()
    return f"CPU: {cpu}, {torch.get_num_threads()} threads (torch {torch.__version__})"


def timed_attack(name, fn, model, x, y, device, batch):
    _reset_peak(device)
    _sync(device)
    t0 = time.perf_counter()
    success = 0
    for i in range(0, len(x), batch):
        res = fn(model, x[i:i + batch].to(device), y[i:i + batch].to(device))
        success += int(res.success.sum())
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"attack": name, "points": len(x), "ms_per_image": 1000 * seconds / len(x),
            "success_rate": success / len(x), "peak_gpu_mib": _peak_mib(device)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist")
    parser.add_argument("--data-root", help="torchvision root holding MNIST/raw (offline)")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--points", type=int, default=1000)
    parser.add_argument("--cw-points", type=int, default=100, help="C&W L2 points (of --points)")
    parser.add_argument("--models", nargs="*", help="default: the preset's models")
    args = parser.parse_args(argv)

    params = deep_merge(load_params(ROOT / "params.yaml"), read_yaml(preset_path(args.preset)))
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    data = params["data"]
    root = args.data_root or (data["root"] if data["root"].startswith("/") else str(ROOT / data["root"]))
    ds = load_dataset(data["dataset"], root=root, download=data["download"] and not args.data_root,
                      n_train=data["n_train"], n_test=data["n_test"], seed=params["seed"])

    class _Data:  # what pipeline.train.new_model reads
        x_train, num_classes = ds.x_train, ds.num_classes

    print(f"device: {device_name(device)}; {args.preset}: {len(ds.x_train)} train / {len(ds.x_test)} test images")
    x, y = ds.x_test[:args.points], ds.y_test[:args.points]
    atk = params["attacks"]
    rows = []
    for arch in args.models or params["models"]:
        cfg = effective_train_config(params["train"], arch, epochs=args.epochs)
        model = new_model(arch, _Data, params["seed"])
        dm = ArrayDataModule(ds.x_train, ds.y_train, val_fraction=cfg["val_fraction"], batch_size=cfg["batch_size"],
                             seed=params["seed"])
        kwargs = optimizer_kwargs(cfg)
        kwargs.update(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, strategy="auto")
        _reset_peak(device)
        result = fit_classifier(model, dm, seed=params["seed"], **kwargs)
        epoch_s = [float(s) for s in result.history["seconds"]]
        train_peak = _peak_mib(device)
        model = model.to(device).eval()
        test_acc = accuracy(model, ds.x_test.to(device), ds.y_test.to(device), batch_size=1000)
        row = {"model": arch, "epochs": args.epochs, "batch_size": cfg["batch_size"],
               "seconds_per_epoch": epoch_s, "train_peak_gpu_mib": train_peak, "test_accuracy": test_acc,
               "attacks": []}
        batch = params["eval"]["batch_size"]
        pgd_cfg = atk["pgd"]
        row["attacks"].append(timed_attack("fgsm", lambda m, a, b: fgsm(m, a, b, eps=atk["fgsm"]["eps"]),
                                           model, x, y, device, batch))
        row["attacks"].append(timed_attack(
            f"pgd ({pgd_cfg['steps']} x {pgd_cfg['step_size']})",
            lambda m, a, b: pgd(m, a, b, eps=pgd_cfg["eps"], norm=pgd_cfg["norm"], steps=pgd_cfg["steps"],
                                step_size=pgd_cfg["step_size"], random_start=pgd_cfg["random_start"]),
            model, x, y, device, batch))
        df = atk["deepfool"]
        row["attacks"].append(timed_attack("deepfool l2", lambda m, a, b: deepfool(
            m, a, b, norm="l2", overshoot=df["overshoot"], max_iter=df["max_iter"]), model, x, y, device, batch))
        n_cw = min(args.cw_points, len(x))
        row["attacks"].append(timed_attack(
            "cw l2 (9 x 1000)", lambda m, a, b: cw_l2(m, a, b, binary_search_steps=9, max_iter=1000),
            model, x[:n_cw], y[:n_cw], device, batch))
        rows.append(row)
        print(f"{arch}: {sum(epoch_s) / len(epoch_s):.1f} s/epoch, test accuracy {test_acc:.4f} after {args.epochs}"
              + "".join(f"; {a['attack']} {a['ms_per_image']:.2f} ms/image" for a in row["attacks"]))
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"device": device_name(device), "preset": args.preset, "n_train": len(ds.x_train),
              "points": len(x), "models": rows}
    (OUT / "performance.json").write_text(json.dumps(report, indent=2))
    columns = [a["attack"] + " ms/img" for a in rows[0]["attacks"]]
    print("\n| model | s/epoch | peak GPU MiB (train) | " + " | ".join(columns) + " |")
    print("|" + "---|" * (3 + len(rows[0]["attacks"])))
    for r in rows:
        mean = sum(r["seconds_per_epoch"]) / len(r["seconds_per_epoch"])
        peak = "–" if r["train_peak_gpu_mib"] is None else f"{r['train_peak_gpu_mib']:.0f}"
        print(f"| {r['model']} | {mean:.1f} | {peak} | " + " | ".join(f"{a['ms_per_image']:.2f}" for a in r["attacks"])
              + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
