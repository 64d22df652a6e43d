"""Robustness metrics on per-point results (tensors or arrays in, plain floats out)."""
from advlab.metrics.destruction import confident, destruction_rate, eligible, prefiltered, topk_correct
from advlab.metrics.distortion import rms_distortion
from advlab.metrics.robustness import attack_summary, rho_adv, target_cases
from advlab.metrics.saliency import (adversarial_distance, adversarial_distance_matrix, hardness_from_run,
                                     hardness_matrix, mean_by_source, robustness, success_matrix)

__all__ = ["adversarial_distance", "adversarial_distance_matrix", "attack_summary", "confident", "destruction_rate", "eligible",
           "hardness_from_run", "hardness_matrix", "mean_by_source", "prefiltered", "rho_adv", "topk_correct",
           "rms_distortion", "robustness", "success_matrix", "target_cases"]
