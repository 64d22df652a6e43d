"""BPDA / EoT PGD (advlab) against torchattacks' EOTPGD on the same defended models and points.

    python -m bench.bpda [--points 200] [--steps 20] [--eot 8] [--train-steps 300]

Trains two small MNIST (mnist5k) models once (Wong's CNN on 16-level thermometer
codes, and a plain one that SAP then prunes at test time), then runs every
(library, case) in a fresh subprocess so that peak memory (ru_maxrss) is its own:

* thermometer-bpda: Linf 0.3, PGD ``--steps`` x 0.03 on ``defense.bpda()`` (forward exact,
  backward relaxed); torchattacks' EOTPGD with eot_iter=1 on the same module; plus
  advlab's plain PGD on the exact defence ("naive": the gradient is zero).
* sap-eot: Linf 0.3, ``--eot`` gradient samples per step on the stochastic SAP network;
  EOTPGD calls the model ``eot_iter`` times per step, advlab batches the replicas.

Success is judged identically for every row: the exact defence, majority of 10 passes
for SAP. Prints ms per image, success rate, median Linf / L2 and peak RSS; writes
bench/out/bpda.json. torchattacks is a bench/dev dependency only.
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
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
CASES = {
    "thermometer-bpda": ["advlab", "torchattacks", "advlab-naive"],
    "sap-eot": ["advlab", "torchattacks", "advlab-naive"],
}


def build(kind: str):
    from advlab.defenses import SAP, build_thermometer_model
    from advlab.models import build_model

    if kind == "thermometer":
        return build_thermometer_model("wong_cnn", in_channels=1, image_size=28, levels=16, init_seed=0)
    return SAP(build_model("wong_cnn", in_channels=1, image_size=28, init_seed=0), seed=0)


def train(defense: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    clf = defense.classifier
    opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        i = torch.randint(0, len(x), (64,), generator=g)
        with torch.no_grad():
            z = defense.transform(x[i])
        loss = nn.functional.cross_entropy(clf(z), y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    clf.eval()


def prepare(args, state: Path) -> None:
    from advlab.data import load_dataset

    ds = load_dataset("mnist5k", seed=0)
    for kind in ("thermometer", "sap"):
        torch.manual_seed(0)
        d = build(kind)
        train(d, ds.x_train, ds.y_train, args.train_steps)
        d.eval()
        with torch.no_grad():
            correct = d(ds.x_test).argmax(1) == ds.y_test
        print(f"{kind}: clean accuracy {correct.float().mean():.1%} on {len(ds.y_test)} test images")
        idx = torch.nonzero(correct).flatten()[: args.points]
        torch.save({"state": d.classifier.state_dict(), "x": ds.x_test[idx].clone(), "y": ds.y_test[idx].clone()},
                   state / f"{kind}.pt")  # fmt: skip


def worker(case: str, library: str, state: Path, steps: int, eot: int) -> dict:
    """One attack in this (fresh) process; returns the row."""
    from advlab.attacks import pgd
    from advlab.attacks.bpda import bpda_eot_pgd

    torch.set_num_threads(1)
    kind = case.split("-")[0]
    saved = torch.load(state / f"{kind}.pt", weights_only=True)
    defense = build(kind)
    defense.classifier.load_state_dict(saved["state"])
    defense.eval()
    x, y = saved["x"], saved["y"]
    eot_here = 1 if kind == "thermometer" else eot
    target = defense.bpda() if kind == "thermometer" else defense
    if library == "advlab":
        def attack(xx, yy):
            return bpda_eot_pgd(target, xx, yy, 0.3, steps=steps, step_size=0.03, eot_samples=eot_here).x_adv
    elif library == "advlab-naive":
        def attack(xx, yy):
            return pgd(defense, xx, yy, 0.3, steps=steps, step_size=0.03).x_adv
    else:
        import torchattacks

        atk = torchattacks.EOTPGD(target, eps=0.3, alpha=0.03, steps=steps, eot_iter=eot_here, random_start=True)

        def attack(xx, yy):
            return atk(xx, yy)

    attack(x[:2], y[:2])  # warm-up: first-call set-up is not what we measure
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    x_adv = attack(x, y)
    seconds = time.perf_counter() - began
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if kind == "sap":
        defense.reseed(999)  # the same evaluation draws for every row
    with torch.no_grad():
        votes = sum((defense(x_adv).argmax(1) != y).long() for _ in range(10 if kind == "sap" else 1))
    fooled = 2 * votes > (10 if kind == "sap" else 1)
    d = (x_adv - x).flatten(1)
    return {
        "case": case, "library": library, "points": len(x), "steps": steps, "eot": eot_here,
        "ms_per_image": 1000 * seconds / len(x), "success_rate": float(fooled.float().mean()),
        "median_linf": float(d.abs().amax(1).median()), "median_l2": float(d.norm(dim=1).median()),
        "peak_rss_mb": rss / 1024, "rss_growth_mb": (rss - rss_before) / 1024,
    }  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=200)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--eot", type=int, default=8)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--skip-torchattacks", action="store_true")
    parser.add_argument("--worker", nargs=3, metavar=("CASE", "LIBRARY", "STATE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        case, library, state = args.worker
        print(json.dumps(worker(case, library, Path(state), args.steps, args.eot)))
        return 0

    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        prepare(args, Path(tmp))
        for case, libraries in CASES.items():
            for library in libraries:
                if library == "torchattacks" and args.skip_torchattacks:
                    continue
                cmd = [sys.executable, "-m", "bench.bpda", "--steps", str(args.steps), "--eot", str(args.eot),
                       "--worker", case, library, tmp]  # fmt: skip
                done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
                rows.append(json.loads(done.stdout.strip().splitlines()[-1]))

    print(f"\n{'case':<18}{'library':<14}{'ms/image':>10}{'success':>9}{'med Linf':>10}{'med L2':>8}"
          f"{'peak MB':>9}{'growth MB':>11}")  # fmt: skip
    for r in rows:
        print(f"{r['case']:<18}{r['library']:<14}{r['ms_per_image']:>10.2f}{r['success_rate']:>9.1%}"
              f"{r['median_linf']:>10.3f}{r['median_l2']:>8.2f}{r['peak_rss_mb']:>9.0f}"
              f"{r['rss_growth_mb']:>11.1f}")  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bpda.json").write_text(json.dumps({"rows": rows}, indent=2))
    print(f"written: {(OUT / 'bpda.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
