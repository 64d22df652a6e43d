"""Robustness metrics on per-point results (tensors or arrays in, plain floats out)."""
from advlab.metrics.distortion import rms_distortion
from advlab.metrics.robustness import attack_summary, rho_adv, target_cases
from advlab.metrics.saliency import (adversarial_distance, adversarial_distance_matrix, hardness_from_run,
                                     hardness_matrix, mean_by_source, robustness, success_matrix)

__all__ = ["adversarial_distance", "adversarial_distance_matrix", "attack_summary", "hardness_from_run", "hardness_matrix",
           "mean_by_source", "rho_adv",
           "rms_distortion", "robustness", "success_matrix", "target_cases"]
