"""Analyses of trained networks' internals (Szegedy et al. 2014, section 3: units vs
random directions of a hidden layer)."""

from .units import label_purity, layer_activations, layer_names, random_directions, top_activating

__all__ = ["label_purity", "layer_activations", "layer_names", "random_directions", "top_activating"]
