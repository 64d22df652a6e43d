"""Carlini & Wagner 2017 attacks (L2, L0, Linf), after ``carlini/nn_robust_attacks``."""

from .l0 import cw_l0
from .l2 import cw_l2
from .linf import cw_linf

__all__ = ["cw_l0", "cw_l2", "cw_linf"]
