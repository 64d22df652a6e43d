"""Adversarial attacks on tensors, one calling convention (see DESIGN.md).

``attack(model, x, y, ...) -> AttackResult`` with ``x`` float NCHW in [0, 1] and a
model returning logits, already in the mode the caller wants (usually eval).
"""

from .bim import bim, illc, kurakin_steps, least_likely_class
from .bpda import bpda_eot_pgd
from .cw import cw_l0, cw_l2, cw_linf
from .deepfool import deepfool
from .fgsm import fgsm
from .fgsm_search import fgsm_direction, fgsm_eps_for_rate, fgsm_minimal_eps
from .jsma import all_targets, jsma, random_targets
from .lbfgs import lbfgs
from .onepixel import one_pixel
from .pgd import pgd
from .result import AttackResult, check_inputs, perturbation_norms
from .substitute import (LabelOracle, TransferResult, jacobian_augmentation, lambda_schedule, transfer_attack,
                         transfer_eps_sweep)
from .uap import UAPResult, fooling_rate, universal_perturbation

__all__ = [
    "ATTACKS",
    "AttackResult",
    "LabelOracle",
    "TransferResult",
    "UAPResult",
    "all_targets",
    "bim",
    "bpda_eot_pgd",
    "check_inputs",
    "cw_l0",
    "cw_l2",
    "cw_linf",
    "deepfool",
    "fgsm",
    "fooling_rate",
    "fgsm_direction",
    "fgsm_eps_for_rate",
    "fgsm_minimal_eps",
    "illc",
    "jacobian_augmentation",
    "jsma",
    "kurakin_steps",
    "lambda_schedule",
    "lbfgs",
    "least_likely_class",
    "one_pixel",
    "perturbation_norms",
    "pgd",
    "random_targets",
    "transfer_attack",
    "transfer_eps_sweep",
    "universal_perturbation",
]

# name -> attack, as params.yaml's `attacks.<name>.type` names them. JSMA and L-BFGS need a
# target (the attack stage draws one per point with `targets: random`).
ATTACKS = {"fgsm": fgsm, "pgd": pgd, "deepfool": deepfool, "lbfgs": lbfgs, "bim": bim, "illc": illc, "jsma": jsma,
           "cw_l2": cw_l2, "cw_l0": cw_l0, "cw_linf": cw_linf, "one_pixel": one_pixel}
