"""DeepFool (L2) against torchattacks' and foolbox's on the same LeNet and the same points.

    make bench            # or: python -m bench.deepfool [--points 200] [--repeat 3]

Uses models/mnist5k/lenet.pt when the pipeline has made it, else trains the same LeNet on
mnist5k with the default params first. Prints time per image, success rate and median L2 for
each library, and the speed ratios. torchattacks and foolbox are bench/dev dependencies only.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from advlab.attacks import deepfool
from advlab.data import load_dataset
from advlab.models import build_model, load_checkpoint
from advlab.models.inference import predict
from advlab.training import ArrayDataModule, fit_classifier
from pipeline.config import ROOT, load_params

OUT = ROOT / "bench" / "out"


def lenet_and_test_set():
    params = load_params(ROOT / "params.yaml")
    data = params["data"]
    ds = load_dataset("mnist5k", n_train=data["n_train"], n_test=data["n_test"], seed=params["seed"])
    ckpt = ROOT / "models" / "mnist5k" / "lenet.pt"
    if ckpt.exists():
        model, _ = load_checkpoint(ckpt)
        print(f"model: {ckpt.relative_to(ROOT)}")
    else:
        print("model: training LeNet on mnist5k with the default params (no models/mnist5k/lenet.pt yet)")
        from pipeline.train import effective_train_config

        cfg = effective_train_config(params["train"], "lenet")
        x = ds.x_train
        model = build_model("lenet", in_channels=1, image_size=28, num_classes=10,
                            mean=x.mean(dim=(0, 2, 3)).tolist(), std=x.std(dim=(0, 2, 3)).tolist(),
                            init_seed=params["seed"])
        dm = ArrayDataModule(ds.x_train, ds.y_train, val_fraction=cfg["val_fraction"],
                             batch_size=cfg["batch_size"], seed=params["seed"])
        import tempfile

        with tempfile.TemporaryDirectory() as log_dir:
            res = fit_classifier(model, dm, epochs=cfg["epochs"], lr=cfg["lr"], optimizer=cfg["optimizer"],
                                 momentum=cfg["momentum"], weight_decay=cfg["weight_decay"],
                                 lr_schedule=None if cfg["lr_schedule"] == "none" else cfg["lr_schedule"],
                                 seed=params["seed"], accelerator="cpu", log_dir=log_dir)
        model.load_state_dict(res.best_state_dict)
    model = model.cpu().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, ds.x_test, ds.y_test


def timed(fn, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - began)
    return best, out


def summarize(name, seconds, n, x, x_adv, model, y):
    with torch.no_grad():
        fooled = predict(model, x_adv, batch_size=1000) != y
    l2 = (x_adv - x).flatten(1).norm(dim=1)
    return {"library": name, "ms_per_image": 1000 * seconds / n, "success_rate": float(fooled.float().mean()),
            "median_l2": float(l2[fooled].median()) if fooled.any() else float("nan"),
            "rho_adv": float((l2[fooled] / x.flatten(1).norm(dim=1)[fooled]).mean()) if fooled.any() else float("nan")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for advlab and foolbox")
    parser.add_argument("--skip-torchattacks", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model, x_test, y_test = lenet_and_test_set()
    with torch.no_grad():
        correct = predict(model, x_test, batch_size=1000) == y_test
    idx = torch.nonzero(correct).flatten()[: args.points]
    x, y = x_test[idx].contiguous(), y_test[idx].contiguous()
    n = len(x)
    print(f"points: the first {n} correctly classified test images; threads: {torch.get_num_threads()}")
    rows = []

    seconds, res = timed(lambda: deepfool(model, x, y, norm="l2", overshoot=0.02, max_iter=50, candidates=10),
                         args.repeat)
    rows.append(summarize("advlab", seconds, n, x, res.x_adv, model, y))

    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    attack = fb.attacks.L2DeepFoolAttack(steps=50, candidates=10, overshoot=0.02, loss="logits")
    seconds, (_, clipped, _) = timed(lambda: attack(fmodel, x, y, epsilons=None), args.repeat)
    rows.append(summarize("foolbox", seconds, n, x, clipped, model, y))

    if not args.skip_torchattacks:
        import torchattacks

        ta = torchattacks.DeepFool(model, steps=50, overshoot=0.02)
        seconds, x_ta = timed(lambda: ta(x, y), 1)
        rows.append(summarize("torchattacks", seconds, n, x, x_ta, model, y))

    ours = rows[0]
    print(f"\n{'library':<14}{'ms/image':>10}{'success':>10}{'median L2':>11}{'rho_adv':>9}{'speed-up':>10}")
    for r in rows:
        r["advlab_speedup"] = r["ms_per_image"] / ours["ms_per_image"]
        print(f"{r['library']:<14}{r['ms_per_image']:>10.2f}{r['success_rate']:>10.1%}{r['median_l2']:>11.4f}"
              f"{r['rho_adv']:>9.4f}{r['advlab_speedup']:>9.1f}x")
    fool = next(r for r in rows if r["library"] == "foolbox")
    print(f"\nadvlab median L2 vs foolbox: {100 * (ours['median_l2'] / fool['median_l2'] - 1):+.2f}%")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "deepfool.json").write_text(json.dumps({"points": n, "rows": rows}, indent=2))
    print(f"written: {(OUT / 'deepfool.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
