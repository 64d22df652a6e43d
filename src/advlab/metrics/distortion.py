"""Szegedy et al.'s distortion measure."""
from __future__ import annotations

import torch


def rms_distortion(r: torch.Tensor) -> torch.Tensor:
    """Per point, sqrt(mean of squared pixel differences) of a perturbation ``r`` [N, ...]:
    the "average minimum distortion" of Intriguing properties (pixels in [0, 1]). An RMS, not
    ||r||_2."""
    return r.flatten(1).pow(2).mean(dim=1).sqrt()
