"""Carlini-Wagner L2 against foolbox's on the same LeNet and points; our L0 and Linf timed.

    python -m bench.cw                          # 100 points, 9 x 1000, abort early (the reference)
    python -m bench.cw --points 10 --steps 3 --iters 50 --extra-points 2 --extra-iters 20   # smoke

Uses models/mnist5k/lenet.pt when the pipeline has made it, else trains the same LeNet first
(see bench.deepfool). The first ``--points`` correctly classified test images are attacked
untargeted by every library with the same binary-search steps, iterations, step size, initial
constant and early abort. Each measurement runs in a fresh subprocess, so its peak resident
memory (ru_maxrss, which includes importing torch, about 1 GB here) is its own; "+MB" is
how much the attack itself raised that peak. Prints ms per image, success rate,
median norm of the successful points and peak memory; writes bench/out/cw.json.

foolbox returns an all-zero image where it found nothing (and may count it as a success);
those points are counted as failures here. foolbox aborts early on the loss summed over the
batch, we abort per point (the reference at batch size 1), and foolbox's Adam is PyTorch's
while ours defaults to the reference's TF Adam (``--torch-adam`` adds a row with ours on
PyTorch's). foolbox is a bench/dev dependency only.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

OUT_NAME = "cw.json"


def _prepare(points: int, path: Path) -> int:
    from advlab.models.inference import predict
    from bench.deepfool import lenet_and_test_set

    model, x_test, y_test = lenet_and_test_set()
    with torch.no_grad():
        correct = predict(model, x_test, batch_size=1000) == y_test
    idx = torch.nonzero(correct).flatten()[:points]
    x, y = x_test[idx].contiguous(), y_test[idx].contiguous()
    from advlab.models import save_checkpoint

    save_checkpoint(path.with_suffix(".model.pt"), model)
    torch.save({"x": x, "y": y}, path)
    return len(x)


def _worker(args) -> dict:
    if args.threads:
        torch.set_num_threads(args.threads)
    from advlab.models import load_checkpoint

    blob = torch.load(args.data, weights_only=True)
    model, _ = load_checkpoint(Path(args.data).with_suffix(".model.pt"))
    x, y = blob["x"], blob["y"]
    for p in model.parameters():
        p.requires_grad_(False)
    n = len(x) if args.job.startswith(("advlab-l2", "foolbox")) else min(len(x), args.extra_points)
    x, y = x[:n], y[:n]
    l2_kw = dict(binary_search_steps=args.steps, lr=args.lr, initial_const=args.initial_const)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    count = None
    if args.job == "foolbox-l2":
        import foolbox as fb

        fmodel = fb.PyTorchModel(model, bounds=(0, 1))
        attack = fb.attacks.L2CarliniWagnerAttack(steps=args.iters, stepsize=args.lr, confidence=0.0,
                                                  binary_search_steps=args.steps, initial_const=args.initial_const,
                                                  abort_early=True)  # fmt: skip
        _, x_adv, _ = attack(fmodel, x, y, epsilons=None)
        x_adv = x_adv.detach()
        found = x_adv.flatten(1).abs().amax(1) > 0  # all-zero image: nothing found
    else:
        from advlab.attacks.cw import cw_l0, cw_l2, cw_linf

        if args.job == "advlab-l2":
            r = cw_l2(model, x, y, max_iter=args.iters, **l2_kw)
        elif args.job == "advlab-l2-torch-adam":
            r = cw_l2(model, x, y, max_iter=args.iters, adam="torch", **l2_kw)
        elif args.job == "advlab-linf":
            r = cw_linf(model, x, y, max_iter=args.extra_iters)
        elif args.job == "advlab-l0":
            r = cw_l0(model, x, y, max_iter=args.extra_iters)
        else:
            raise SystemExit(f"unknown job {args.job}")
        x_adv, found = r.x_adv, torch.ones(n, dtype=torch.bool)
        count = int(r.counts["backward"].sum())
    seconds = time.perf_counter() - began
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with torch.no_grad():
        fooled = (model(x_adv).argmax(1) != y) & found
    d = (x_adv - x).flatten(1)
    norm = {"l2": d.norm(dim=1), "linf": d.abs().amax(1), "l0": (d != 0).sum(1).double()}
    kind = "l0" if args.job.endswith("l0") else "linf" if args.job.endswith("linf") else "l2"
    med = float(norm[kind][fooled].median()) if fooled.any() else float("nan")
    return {"job": args.job, "points": n, "ms_per_image": 1000 * seconds / n,
            "success_rate": float(fooled.float().mean()), "norm": kind, "median_norm": med,
            "gradient_evaluations": count,
            "peak_rss_mb": rss_after / 1024, "peak_rss_growth_mb": (rss_after - rss_before) / 1024}  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100, help="points for the L2 comparison")
    parser.add_argument("--steps", type=int, default=9, help="binary-search steps (L2)")
    parser.add_argument("--iters", type=int, default=1000, help="Adam iterations per search step (L2)")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--initial-const", type=float, default=1e-3)
    parser.add_argument("--extra-points", type=int, default=20, help="points for our L0 and Linf")
    parser.add_argument("--extra-iters", type=int, default=1000, help="max_iter of L0 and Linf (reference 1000)")
    parser.add_argument("--skip-l0", action="store_true")
    parser.add_argument("--skip-linf", action="store_true")
    parser.add_argument("--torch-adam", action="store_true", help="add ours with PyTorch's Adam")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in each run (0: torch's default)")
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.job:  # a worker: one measurement, JSON on the last line of stdout
        print(json.dumps(_worker(args)))
        return 0

    from pipeline.config import ROOT

    jobs = ["advlab-l2", "foolbox-l2"]
    if args.torch_adam:
        jobs.append("advlab-l2-torch-adam")
    if not args.skip_linf:
        jobs.append("advlab-linf")
    if not args.skip_l0:
        jobs.append("advlab-l0")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "points.pt"
        n = _prepare(args.points, data)
        print(f"points: the first {n} correctly classified test images; L2 {args.steps} x {args.iters}, "
              f"lr {args.lr}, c0 {args.initial_const}, abort early; L0/Linf on {min(n, args.extra_points)} "
              f"points, max_iter {args.extra_iters}")  # fmt: skip
        passthrough = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                       if k in ("steps", "iters", "lr", "initial_const", "extra_points", "extra_iters", "threads")]
        for job in jobs:
            cmd = [sys.executable, "-m", "bench.cw", f"--job={job}", f"--data={data}", *passthrough]
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                raise SystemExit(f"{job} failed")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"  {job}: {r['ms_per_image']:.1f} ms/image", flush=True)

    print(f"\n{'run':<22}{'points':>7}{'ms/image':>11}{'success':>9}{'median':>10}{'norm':>6}{'peak MB':>9}"
          f"{'+MB':>7}")
    for r in rows:
        print(f"{r['job']:<22}{r['points']:>7}{r['ms_per_image']:>11.1f}{r['success_rate']:>9.1%}"
              f"{r['median_norm']:>10.4f}{r['norm']:>6}{r['peak_rss_mb']:>9.0f}"
              f"{r['peak_rss_growth_mb']:>7.1f}")  # fmt: skip
    ours = next(r for r in rows if r["job"] == "advlab-l2")
    fool = next(r for r in rows if r["job"] == "foolbox-l2")
    summary = {
        "speedup_vs_foolbox": fool["ms_per_image"] / ours["ms_per_image"],
        "median_l2_vs_foolbox": ours["median_norm"] / fool["median_norm"] - 1,
        "same_success": ours["success_rate"] == fool["success_rate"],
    }
    print(f"\nadvlab L2 vs foolbox: {summary['speedup_vs_foolbox']:.2f}x faster, median L2 "
          f"{100 * summary['median_l2_vs_foolbox']:+.2f}%, success {ours['success_rate']:.1%} vs "
          f"{fool['success_rate']:.1%}")  # fmt: skip
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k not in ("job", "data")}
    (out / OUT_NAME).write_text(json.dumps({"points": n, "settings": settings, "rows": rows, "summary": summary},
                                           indent=2))  # fmt: skip
    print(f"written: {(out / OUT_NAME).relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
