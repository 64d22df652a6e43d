"""Defences that obfuscate gradients (Athalye, Carlini & Wagner 2018), as modules.

Each defence is an ``nn.Module`` taking images in [0, 1] (NCHW) and returning the
wrapped classifier's logits. ``forward`` is the real defence (non-differentiable or
random); ``defense.bpda()`` is a view whose forward is the same and whose backward
uses a differentiable approximation (BPDA). Random defences draw fresh randomness on
every call from their own ``generator`` (seeded by ``seed``; ``reseed`` restarts it).

Attack them with :func:`advlab.attacks.bpda.bpda_eot_pgd` (BPDA view and/or EoT);
plain :func:`advlab.attacks.pgd` on the exact defence is the "naive" attack.
"""

from .bpda import BPDA, Defense, RandomDefense, attach_zero_grad, bpda, straight_through
from .input_transforms import (
    JPEG,
    BitDepth,
    TVMinimization,
    jpeg_round_trip,
    random_pixel_mask,
    reduce_bit_depth,
    tv_reconstruct,
)
from .lid import LIDDetector, default_lid_layers, layer_outputs, lid_features, mle_lid
from .randomization import RandomResizePad, random_resize_pad
from .sap import SAP, sap_prune
from .thermometer import Thermometer, build_thermometer_model, thermometer_encode, thermometer_relax

# name -> class, for stages that pick a defence from params: DEFENSES[name](classifier, **options)
DEFENSES = {
    "thermometer": Thermometer,
    "bitdepth": BitDepth,
    "jpeg": JPEG,
    "tv": TVMinimization,
    "sap": SAP,
    "resize_pad": RandomResizePad,
}

__all__ = [
    "BPDA",
    "DEFENSES",
    "JPEG",
    "SAP",
    "BitDepth",
    "Defense",
    "LIDDetector",
    "RandomDefense",
    "RandomResizePad",
    "TVMinimization",
    "Thermometer",
    "attach_zero_grad",
    "bpda",
    "build_thermometer_model",
    "default_lid_layers",
    "jpeg_round_trip",
    "layer_outputs",
    "lid_features",
    "mle_lid",
    "random_pixel_mask",
    "random_resize_pad",
    "reduce_bit_depth",
    "sap_prune",
    "straight_through",
    "thermometer_encode",
    "thermometer_relax",
    "tv_reconstruct",
]
