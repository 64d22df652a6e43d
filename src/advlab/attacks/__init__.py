"""Adversarial attacks on tensors, one calling convention (see DESIGN.md).

``attack(model, x, y, ...) -> AttackResult`` with ``x`` float NCHW in [0, 1] and a
model returning logits, already in the mode the caller wants (usually eval).
"""

from .deepfool import deepfool
from .fgsm import fgsm
from .fgsm_search import fgsm_direction, fgsm_eps_for_rate, fgsm_minimal_eps
from .lbfgs import lbfgs
from .pgd import pgd
from .result import AttackResult, check_inputs, perturbation_norms

__all__ = [
    "ATTACKS",
    "AttackResult",
    "check_inputs",
    "deepfool",
    "fgsm",
    "fgsm_direction",
    "fgsm_eps_for_rate",
    "fgsm_minimal_eps",
    "lbfgs",
    "perturbation_norms",
    "pgd",
]

ATTACKS = {"fgsm": fgsm, "pgd": pgd, "deepfool": deepfool, "lbfgs": lbfgs}
