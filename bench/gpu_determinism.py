"""What is and is not bit-reproducible on a GPU: training and attacks run twice on CUDA, and against
the CPU. Run on a GPU box (`python -m bench.gpu_determinism`); writes bench/out/gpu_determinism.json
(or $OUT/gpu_determinism.json when OUT is set) and prints one line per check.

Checks: LeNet trained on mnist5k (Lightning, 3 epochs) twice with deterministic=True (advlab's
default: torch.use_deterministic_algorithms, cuDNN deterministic) and twice with deterministic=False;
weights compared bit for bit, test accuracy beside the CPU's. Then FGSM, PGD (random start from a
CPU generator), DeepFool-L2 and C&W-L2 on 500 test points of the GPU-trained net, twice each on
CUDA (bitwise) and against the CPU (largest difference of x_adv, success agreement).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from advlab.attacks import cw_l2, deepfool, fgsm, pgd
from advlab.data import load_dataset
from advlab.models import accuracy, build_model
from advlab.training import ArrayDataModule, fit_classifier


def train(ds, accelerator: str, deterministic: bool):
    model = build_model("lenet", in_channels=1, image_size=28, num_classes=10, init_seed=0)
    dm = ArrayDataModule(ds.x_train, ds.y_train, val_fraction=0.1, batch_size=64, seed=0)
    t0 = time.perf_counter()
    fit_classifier(model, dm, epochs=3, lr=1e-3, optimizer="adam", seed=0, accelerator=accelerator,
                   deterministic=deterministic)
    seconds = time.perf_counter() - t0
    model = model.cpu().eval()
    return model, {"test_accuracy": accuracy(model, ds.x_test, ds.y_test, batch_size=1000), "seconds": seconds}


def same_weights(a, b) -> tuple[bool, float]:
    sa, sb = a.state_dict(), b.state_dict()
    diff = max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)
    return all(torch.equal(sa[k], sb[k]) for k in sa), diff


ATTACKS = {
    "fgsm": lambda m, x, y: fgsm(m, x, y, 0.1),
    "pgd": lambda m, x, y: pgd(m, x, y, 0.3, steps=40, step_size=0.01, generator=torch.Generator().manual_seed(0)),
    "deepfool_l2": lambda m, x, y: deepfool(m, x, y, norm="l2"),
    "cw_l2": lambda m, x, y: cw_l2(m, x, y, binary_search_steps=3, max_iter=200),
}


def main() -> None:
    assert torch.cuda.is_available(), "run this on a machine with a CUDA GPU"
    out = Path(os.environ.get("OUT") or Path(__file__).parent / "out")
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("mnist5k")
    report: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "training": {},
                    "attacks": {}}
    cpu_model, cpu_stats = train(ds, "cpu", True)
    report["training"]["cpu"] = cpu_stats
    for det in (True, False):
        a, sa = train(ds, "gpu", det)
        b, sb = train(ds, "gpu", det)
        equal, diff = same_weights(a, b)
        vs_cpu = same_weights(a, cpu_model)
        key = "gpu_deterministic" if det else "gpu_nondeterministic"
        report["training"][key] = {"runs": [sa, sb], "bitwise_equal": equal, "max_weight_diff": diff,
                                   "equal_to_cpu": vs_cpu[0], "max_weight_diff_to_cpu": vs_cpu[1]}
        print(f"training {key}: two runs bit-identical {equal} (max diff {diff:.3g}); test acc "
              f"{sa['test_accuracy']:.4f} / {sb['test_accuracy']:.4f}, CPU {cpu_stats['test_accuracy']:.4f}; "
              f"max weight diff to CPU {vs_cpu[1]:.3g}", flush=True)
        if det:
            net = a
    x, y = ds.x_test[:500], ds.y_test[:500]
    gpu_net = net.cuda().eval()
    cpu_net = build_model("lenet", in_channels=1, image_size=28, num_classes=10).eval()
    cpu_net.load_state_dict(net.state_dict())
    for p in list(gpu_net.parameters()) + list(cpu_net.parameters()):
        p.requires_grad_(False)
    for name, attack in ATTACKS.items():
        t0 = time.perf_counter()
        r1 = attack(gpu_net, x.cuda(), y.cuda())
        torch.cuda.synchronize()
        gpu_s = time.perf_counter() - t0
        r2 = attack(gpu_net, x.cuda(), y.cuda())
        t0 = time.perf_counter()
        rc = attack(cpu_net, x, y)
        cpu_s = time.perf_counter() - t0
        x1, x2 = r1.x_adv.cpu(), r2.x_adv.cpu()
        row = {"bitwise_equal_twice": bool(torch.equal(x1, x2)),
               "max_diff_twice": float((x1 - x2).abs().max()),
               "max_diff_to_cpu": float((x1 - rc.x_adv).abs().max()),
               "success_gpu": float(r1.success.float().mean()), "success_cpu": float(rc.success.float().mean()),
               "success_agreement": float((r1.success.cpu() == rc.success).float().mean()),
               "seconds_gpu": gpu_s, "seconds_cpu": cpu_s}
        report["attacks"][name] = row
        print(f"{name}: twice on GPU bit-identical {row['bitwise_equal_twice']} "
              f"(max diff {row['max_diff_twice']:.3g}); "
              f"to CPU max diff {row['max_diff_to_cpu']:.3g}, success {row['success_gpu']:.3f} vs "
              f"{row['success_cpu']:.3f} (agree {row['success_agreement']:.3f}); {gpu_s:.2f} s GPU, {cpu_s:.2f} s CPU",
              flush=True)
    (out / "gpu_determinism.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
