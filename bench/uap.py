"""Universal perturbation (Algorithm 1) against the Adversarial Robustness Toolbox's
UniversalPerturbation on the same LeNet, the same 500 training points, xi, delta and passes.

    python -m bench.uap [--points 500] [--test-points 1000] [--passes 5] [--norms l2 linf]

Model: models/mnist5k/lenet.pt when the pipeline has made it, else the same LeNet trained here
(as bench.deepfool does). Both build with DeepFool inside: 10 iterations, overshoot 0.02
(ART's ``epsilon``), stopping once the fooling rate on the points reaches 1 - delta or after
``--passes`` passes. ART goes point by point (a forward per check, a DeepFool per point, its
own fooling rate with batch size 1); ours in chunks of ``--chunk`` points (``--chunk 1`` is the
point-by-point algorithm), with DeepFool linearised within [0, 1] and the fooling rate on the
points checked ``--checks-per-pass`` times a pass (advlab.attacks.uap). xi, chunk and checks
default to params.yaml's `uap` block. Prints time to build, passes, and the fooling rate (prediction
changed against the clean prediction, computed here for both the same way) on the 500 points
and on ``--test-points`` unseen test points; writes bench/out/uap.json. ART is a bench
dependency only (``pip install adversarial-robustness-toolbox``).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import numpy as np
import torch

from advlab.attacks.uap import fooling_rate, random_perturbation, universal_perturbation
from bench.deepfool import lenet_and_test_set
from pipeline.config import ROOT

OUT = ROOT / "bench" / "out"


def art_uap(model, x: torch.Tensor, xi: float, norm: str, delta: float, passes: int, seed: int):
    from art.attacks.evasion import UniversalPerturbation
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                            nb_classes=10, clip_values=(0.0, 1.0), device_type="cpu")  # fmt: skip
    attack = UniversalPerturbation(clf, attacker="deepfool", attacker_params={"max_iter": 10, "epsilon": 0.02,
                                   "verbose": False}, delta=delta, max_iter=passes, eps=xi,
                                   norm=2 if norm == "l2" else np.inf, batch_size=128, verbose=False)  # fmt: skip
    random.seed(seed)  # ART shuffles with Python's random
    began = time.perf_counter()
    attack.generate(x.numpy())
    seconds = time.perf_counter() - began
    return torch.from_numpy(attack.noise[0]).float(), seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=500)
    parser.add_argument("--test-points", type=int, default=1000)
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--delta", type=float, default=0.2)
    parser.add_argument("--xi-l2", type=float, default=None, help="xi for p = 2 (default: params.yaml uap.norms)")
    parser.add_argument("--xi-linf", type=float, default=None, help="xi for p = inf (default: params.yaml)")
    parser.add_argument("--norms", nargs="+", default=["l2", "linf"], choices=["l2", "linf"])
    parser.add_argument("--chunk", type=int, default=None, help="default: params.yaml uap.chunk")
    parser.add_argument("--checks-per-pass", type=int, default=None, help="default: params.yaml uap.checks_per_pass")
    parser.add_argument("--skip-art", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    model, x_test, _ = lenet_and_test_set()
    from advlab.data import load_dataset
    from pipeline.config import load_params

    params = load_params(ROOT / "params.yaml")
    ds = load_dataset("mnist5k", n_train=params["data"]["n_train"], n_test=params["data"]["n_test"],
                      seed=params["seed"])  # fmt: skip
    x = ds.x_train[: args.points].contiguous()
    unseen = x_test[: args.test_points].contiguous()
    ucfg = params["uap"]
    xis = {"l2": args.xi_l2, "linf": args.xi_linf}
    xis = {n: xi if xi is not None else float(ucfg["norms"][n]["xi"]) for n, xi in xis.items()}
    chunk = args.chunk or ucfg["chunk"]
    checks = args.checks_per_pass or ucfg["checks_per_pass"]
    print(f"{len(x)} training points, {len(unseen)} test points, torch threads {torch.get_num_threads()}, "
          f"delta {args.delta}, at most {args.passes} passes; ours: chunk {chunk}, {checks} checks a pass")  # fmt: skip
    rows = []
    for norm in args.norms:
        xi = xis[norm]
        began = time.perf_counter()
        r = universal_perturbation(model, x, xi=xi, p=norm, delta=args.delta, max_passes=args.passes, chunk=chunk,
                                   checks_per_pass=checks,
                                   generator=torch.Generator().manual_seed(args.seed))  # fmt: skip
        ours = time.perf_counter() - began
        noise = random_perturbation(r.v.shape, xi, norm, generator=torch.Generator().manual_seed(args.seed))
        rows.append({"library": "advlab", "norm": norm, "xi": xi, "seconds": ours, "passes": r.passes,
                     "fooling_train": fooling_rate(model, x, r.v), "fooling_test": fooling_rate(model, unseen, r.v),
                     "random_noise_test": fooling_rate(model, unseen, noise)})  # fmt: skip
        if not args.skip_art:
            v_art, seconds = art_uap(model, x, xi, norm, args.delta, args.passes, args.seed)
            rows.append({"library": "ART", "norm": norm, "xi": xi, "seconds": seconds, "passes": None,
                         "fooling_train": fooling_rate(model, x, v_art),
                         "fooling_test": fooling_rate(model, unseen, v_art)})  # fmt: skip
    print(f"\n{'library':<9}{'norm':<6}{'xi':>6}{'build s':>10}{'passes':>8}{'fool 500':>10}{'fool test':>11}"
          f"{'noise test':>12}{'speed-up':>10}")  # fmt: skip
    for r in rows:
        art = next((a for a in rows if a["library"] == "ART" and a["norm"] == r["norm"]), None)
        r["speedup_vs_art"] = art["seconds"] / r["seconds"] if art else None
        noise = f"{r['random_noise_test']:.1%}" if "random_noise_test" in r else "-"
        speed = f"{r['speedup_vs_art']:.1f}x" if art else "-"
        passes = str(r["passes"]) if r["passes"] is not None else "-"
        print(f"{r['library']:<9}{r['norm']:<6}{r['xi']:>6g}{r['seconds']:>10.1f}{passes:>8}"
              f"{r['fooling_train']:>10.1%}{r['fooling_test']:>11.1%}{noise:>12}{speed:>10}")  # fmt: skip
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "uap.json").write_text(json.dumps({"points": len(x), "test_points": len(unseen), "delta": args.delta,
                                              "passes": args.passes, "rows": rows}, indent=2))  # fmt: skip
    print(f"written: {(OUT / 'uap.json').relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
