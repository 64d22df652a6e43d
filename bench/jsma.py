"""JSMA against torchattacks' on the same LeNet, points and targets.

    python -m bench.jsma [--points 100] [--repeat 3] [--checkpoint PATH] [--skip-torchattacks]

The model is the pipeline's LeNet (``bench.deepfool.lenet_and_test_set``: models/mnist5k/
lenet.pt, or a LeNet trained with the default params when the pipeline has not made one),
or ``--checkpoint``. Points: the first N correctly classified test images, one batch;
targets: uniform over the wrong classes, seeded (``random_targets``, seed 0). Both
libraries run theta = +1, gamma = 0.145 on the logits (torchattacks' only choice).

Each library runs in a fresh subprocess, so that its peak resident memory (VmHWM, the
per-process high-water mark; see ``_rss_mb``) is its own; the table also shows the
memory after loading torch, the model and the points, before attacking ("loaded"), and
the difference ("attack"). Time is the best of ``--repeat`` runs for advlab and one run for
torchattacks (about 1 s per image). The row "advlab-57" runs ours with torchattacks'
iteration budget (it takes ceil(784 * 0.145 / 2) = 57, the paper floor() = 56), for the
success comparison; its time is not the one compared. Success = final prediction is the target; "% pixels"
= mean fraction of the 784 features changed, over the successful points (the paper's
4.02%). The issue's targets: advlab >= 5x faster than torchattacks, peak <= 1 GB for 100
points, at equal success. Writes bench/out/jsma.json.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

THETA, GAMMA = 1.0, 0.145
D = 784


def _gamma_with_ceil_budget() -> float:
    """A gamma whose floor(D * gamma / 2) is torchattacks' ceil(D * 0.145 / 2) = 57."""
    k = math.ceil(D * GAMMA / 2)
    g = 2 * k / D
    while math.floor(D * g / 2) < k:
        g = math.nextafter(g, 1.0)
    return g
SPEEDUP_TARGET, PEAK_TARGET_MB = 5.0, 1024.0


def _rss_mb() -> float:
    """Peak resident memory of this process, MiB. Linux: VmHWM of /proc/self/status, the
    high-water mark of this process's own address space. Not ru_maxrss there: Linux keeps
    ru_maxrss across execve, so a worker forked from this (large) parent would report
    the parent's size. Elsewhere ru_maxrss (KiB on Linux, bytes on macOS)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024.0 * 1024.0) if sys.platform == "darwin" else rss / 1024.0


def worker(library: str, data: Path, repeat: int, threads: int | None) -> int:
    """Run one library on the saved points; print one JSON line."""
    if threads:
        torch.set_num_threads(threads)
    from advlab.models import load_checkpoint

    model, _ = load_checkpoint(data / "model.pt")  # weights only, like every checkpoint
    for p in model.parameters():
        p.requires_grad_(False)
    pts = torch.load(data / "points.pt", weights_only=True)
    x, y, t = pts["x"], pts["y"], pts["target"]
    if library.startswith("advlab"):
        from advlab.attacks.jsma import jsma

        gamma = GAMMA if library == "advlab" else _gamma_with_ceil_budget()

        def run():
            return jsma(model, x, y, target=t, theta=THETA, gamma=gamma).x_adv
    else:
        import torchattacks

        attack = torchattacks.JSMA(model, theta=THETA, gamma=GAMMA)
        attack.set_mode_targeted_by_function(lambda images, labels: t, quiet=True)

        def run():
            return attack(x, y)
    loaded_mb = _rss_mb()
    best, x_adv = float("inf"), None
    for _ in range(repeat):
        began = time.perf_counter()
        x_adv = run()
        best = min(best, time.perf_counter() - began)
    torch.save(x_adv.detach().cpu(), data / f"{library}_x_adv.pt")
    print(json.dumps({"seconds": best, "peak_mb": _rss_mb(), "loaded_mb": loaded_mb,
                      "threads": torch.get_num_threads()}))  # fmt: skip
    return 0


def _load_model_and_points(checkpoint: str | None):
    if checkpoint is None:
        from bench.deepfool import lenet_and_test_set

        return lenet_and_test_set()
    from advlab.data import load_dataset
    from advlab.models import load_checkpoint
    from pipeline.config import ROOT, load_params

    params = load_params(ROOT / "params.yaml")
    ds = load_dataset("mnist5k", n_train=params["data"]["n_train"], n_test=params["data"]["n_test"],
                      seed=params["seed"])  # fmt: skip
    model, _ = load_checkpoint(checkpoint)
    model = model.cpu().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    print(f"model: {checkpoint}")
    return model, ds.x_test, ds.y_test


def _summary(library: str, out: dict, n: int, x, x_adv, target, model) -> dict:
    from advlab.models.inference import predict

    ok = predict(model, x_adv, batch_size=1000) == target
    changed = (x_adv != x).flatten(1).sum(1).double() / x[0].numel()
    return {
        "library": library,
        "ms_per_image": 1000 * out["seconds"] / n,
        "success_rate": float(ok.double().mean()),
        "pixels_changed_pct": float(100 * changed[ok].mean()) if ok.any() else float("nan"),
        "peak_mb": out["peak_mb"],
        "loaded_mb": out["loaded_mb"],
        "attack_mb": out["peak_mb"] - out["loaded_mb"],
        "threads": out["threads"],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3, help="best of N for advlab (torchattacks: 1)")
    parser.add_argument("--checkpoint", default=None, help="a LeNet checkpoint instead of the pipeline's")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in the workers")
    parser.add_argument("--skip-torchattacks", action="store_true")
    parser.add_argument("--snap", action="store_true",
                        help="set pixels >= 0.99 to 1 for both libraries, where their search domains coincide")
    parser.add_argument("--worker", choices=["advlab", "advlab-57", "torchattacks"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.data, args.repeat, args.threads)

    from advlab.attacks.jsma import random_targets
    from advlab.models.inference import predict
    from pipeline.config import ROOT

    torch.manual_seed(0)
    model, x_test, y_test = _load_model_and_points(args.checkpoint)
    correct = predict(model, x_test, batch_size=1000) == y_test
    idx = torch.nonzero(correct).flatten()[: args.points]
    x, y = x_test[idx].contiguous(), y_test[idx].contiguous()
    if args.snap:
        # torchattacks searches only pixels < 0.99, the paper (and advlab) pixels < 1: with the
        # pixels in [0.99, 1) set to 1 the two algorithms coincide (tests/attacks/test_jsma.py)
        x = torch.where(x >= 0.99, torch.ones_like(x), x)
    target = random_targets(y, 10, generator=torch.Generator().manual_seed(0))
    n = len(x)
    print(f"points: the first {n} correctly classified test images, random targets (seed 0); "
          f"theta={THETA}, gamma={GAMMA} (max {int(784 * GAMMA / 2)} iterations)")  # fmt: skip

    rows = []
    libraries = ["advlab"] + ([] if args.skip_torchattacks else ["advlab-57", "torchattacks"])
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        from advlab.models import save_checkpoint

        save_checkpoint(data / "model.pt", model)
        torch.save({"x": x, "y": y, "target": target}, data / "points.pt")
        for lib in libraries:
            cmd = [sys.executable, "-m", "bench.jsma", "--worker", lib, "--data", str(data),
                   "--repeat", str(args.repeat if lib.startswith("advlab") else 1)]  # fmt: skip
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                raise SystemExit(f"{lib} worker failed")
            out = json.loads(proc.stdout.strip().splitlines()[-1])
            x_adv = torch.load(data / f"{lib}_x_adv.pt", weights_only=True)
            rows.append(_summary(lib, out, n, x, x_adv, target, model))

    ours = rows[0]
    print(f"\n{'library':<14}{'ms/image':>10}{'success':>9}{'% pixels':>10}{'peak MB':>9}{'loaded MB':>11}"
          f"{'attack MB':>11}{'speed-up':>10}")  # fmt: skip
    for r in rows:
        r["advlab_speedup"] = r["ms_per_image"] / ours["ms_per_image"]
        print(f"{r['library']:<14}{r['ms_per_image']:>10.1f}{r['success_rate']:>9.1%}{r['pixels_changed_pct']:>10.2f}"
              f"{r['peak_mb']:>9.0f}{r['loaded_mb']:>11.0f}{r['attack_mb']:>11.0f}{r['advlab_speedup']:>9.1f}x")
    checks = {"advlab_peak_mb_le_1024": ours["peak_mb"] <= PEAK_TARGET_MB}
    if len(rows) > 1:
        same_budget, ta = rows[1], rows[2]
        checks["advlab_speedup_ge_5"] = ta["ms_per_image"] / ours["ms_per_image"] >= SPEEDUP_TARGET
        # at torchattacks' budget (57 iterations, its ceil) the algorithms differ only in
        # its x < 0.99 domain (ours x < 1): success within 2 points
        checks["success_within_2_points_at_equal_budget"] = (
            abs(ta["success_rate"] - same_budget["success_rate"]) <= 0.02 + 1e-12)
    print("\n" + "  ".join(f"{k}: {'ok' if v else 'NO'}" for k, v in checks.items()))
    out_dir = ROOT / "bench" / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "jsma_snap.json" if args.snap else "jsma.json"
    (out_dir / name).write_text(json.dumps(
        {"points": n, "theta": THETA, "gamma": GAMMA, "snap": args.snap, "rows": rows, "checks": checks},
        indent=2))  # fmt: skip
    print(f"written: {(out_dir / name).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
