"""Robustness metrics on per-point results (tensors or arrays in, plain floats out)."""
from advlab.metrics.distortion import rms_distortion
from advlab.metrics.robustness import attack_summary, rho_adv
from advlab.metrics.saliency import (adversarial_distance, adversarial_distance_matrix, hardness_matrix, robustness,
                                     success_matrix)

__all__ = ["adversarial_distance", "adversarial_distance_matrix", "attack_summary", "hardness_matrix", "rho_adv",
           "rms_distortion", "robustness", "success_matrix"]
