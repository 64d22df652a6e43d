"""What is and is not bit-reproducible: CPU (tested in CI) and GPU (measured, see the YAML beside)."""
from __future__ import annotations

from pathlib import Path

import yaml

MEASURED = Path(__file__).with_name("gpu_determinism.yaml")


def render(ctx) -> str:
    gpu = yaml.safe_load(MEASURED.read_text())
    train, attacks = gpu["training"], gpu["attacks"]
    rows = [f"| {name} | {'yes' if a['bitwise_equal_twice'] else 'no'} | {a['max_diff_to_cpu']:.3g} | "
            f"{100 * a['success_agreement']:.1f}% |" for name, a in attacks.items()]
    return "\n".join([
        "## Reproducibility",
        "",
        "**CPU: deterministic.** The same params and seed give bit-identical metrics JSON (and result tables, "
        "but for their time columns) on every run, under Snakemake and under DVC alike "
        "(tests/test_pipeline_e2e.py compares every metrics file of the two). What makes it so: every random "
        "draw comes from a generator seeded from `seed`; each stage "
        "pins torch's thread count (CPU float sums depend on it) to the rule's `threads`, or ADVLAB_THREADS; "
        "Lightning runs with `deterministic=True`; wall times stay out of the metrics JSON (they are in "
        "`*timing.json` files, the histories' `seconds` and MLflow). Another thread count, CPU model or torch "
        "release may change the last bits of floats, and through argmax ties, rarely, a prediction.",
        "",
        f"**GPU: deterministic on the same card and software, not equal to the CPU.** Measured on {gpu['device']} "
        "(`python -m bench.gpu_determinism`):",
        "",
        "- training with `deterministic=True` (the default; Lightning sets `torch.use_deterministic_algorithms` "
        "and cuBLAS's workspace): two runs bit-identical (test accuracy "
        f"{train['deterministic']['test_accuracy'][0]:.4f} both times); with `deterministic=False`: not "
        "bit-identical (weights differ by up to "
        f"{train['nondeterministic']['max_weight_diff']:.3g}, test accuracy "
        f"{train['nondeterministic']['test_accuracy'][0]:.4f} / {train['nondeterministic']['test_accuracy'][1]:.4f});",
        f"- GPU against CPU: the same seed trains different weights (up to {train['max_weight_diff_gpu_to_cpu']:.3g} "
        f"apart; test accuracy GPU {train['deterministic']['test_accuracy'][0]:.4f}, "
        f"CPU {train['cpu_test_accuracy']:.4f}): "
        "float sums run in another order, and the differences grow over training;",
        "- attacks on a fixed net, twice on the GPU and against the CPU (500 test points):",
        "",
        "| attack | bit-identical twice on GPU | largest x_adv difference to CPU | success agrees with CPU |",
        "|---|---|---|---|",
        *rows,
        "",
        "Sign-based attacks (FGSM, PGD) part from the CPU wherever a gradient coordinate is near zero and its sign "
        "flips (a step of 2 eps on that pixel); whether a point is fooled still agrees (last column). Treat GPU "
        "numbers as reproducible on the same card, driver and torch release only, and compare GPU and CPU runs "
        "by their rates, not their bits.",
    ])
