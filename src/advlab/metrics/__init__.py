"""Robustness metrics on per-point results (tensors or arrays in, plain floats out)."""
from advlab.metrics.distortion import rms_distortion
from advlab.metrics.robustness import attack_summary, rho_adv

__all__ = ["attack_summary", "rho_adv", "rms_distortion"]
