"""Analyses of trained networks' internals (Szegedy et al. 2014, section 3: units vs
random directions of a hidden layer), and the alignment of input gradients along PGD
trajectories (the "UAPs and adversarial training" study)."""

from .gradient_alignment import alignment, pgd_gradients
from .units import label_purity, layer_activations, layer_names, random_directions, top_activating

__all__ = ["alignment", "label_purity", "layer_activations", "layer_names", "pgd_gradients", "random_directions",
           "top_activating"]
