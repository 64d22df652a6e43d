"""The generative-defenses report section explains the numbers it is given, not one fixed story:
MNIST's eps 0.3 is wider than PixelDefend's ball, CIFAR-10's 8/255 is not; a generator that covers the
data poorly makes Defense-GAN's projection lossy rather than robust."""
from __future__ import annotations

from pipeline.report_sections.generative import _why


def _cfg(eps: float, ball: int) -> dict:
    return {"pixeldefend": {"eps_levels": ball, "attack": {"eps": eps}}}


def _acc(**over) -> dict:
    acc = {"undefended.clean_acc": 0.96, "pixeldefend.transfer_acc": 0.01, "pixeldefend.adaptive_identity_acc": 0.01,
           "defensegan.clean_acc": 0.82, "defensegan.adaptive_identity_acc": 0.30,
           "defensegan.adaptive_generator_acc": 0.26}
    return {**acc, **over}


def test_mnist_regime():
    text = _why(_cfg(0.3, 32), _acc(), {"test_projection_mse": 0.02})
    assert "perturbations of 0.3 are more than its ±32/255 ball can take back" in text
    assert "another class in the generator's range" in text and "keeps more than PixelDefend" in text


def test_cifar_regime():
    acc = _acc(**{"undefended.clean_acc": 0.60, "pixeldefend.transfer_acc": 0.02, "defensegan.clean_acc": 0.26})
    text = _why(_cfg(0.0314, 16), acc, {"test_projection_mse": 0.0204})
    assert "its ±16/255 ball is wide enough to take back perturbations of 0.0314" in text
    assert "(transfer PGD: 2.0%)" in text
    assert "covers these images poorly (projection error 0.0204 per pixel, clean accuracy 26.0% against 60.0%" in text
    assert "keeps more" not in text
