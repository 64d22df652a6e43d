"""The generative stages' refusals before any work: the images their networks take, the PixelCNN's
colour groups, and a preset that turns them off (DVC runs every stage)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from pipeline.train_pixelcnn import check_enabled, check_images


def _params(channels: int = 48, run: bool = True) -> dict:
    return {"generative": {"run": run, "pixelcnn": {"channels": channels}}}


def _data(*shape: int) -> SimpleNamespace:
    return SimpleNamespace(x_train=torch.zeros(2, *shape))


def test_mnist_and_cifar_shapes_are_taken():
    check_images(_data(1, 28, 28), "train_pixelcnn", _params(32))
    check_images(_data(3, 32, 32), "train_gan", _params(48))
    check_enabled(_params(), "train_gan")


@pytest.mark.faults_bad_input
@pytest.mark.parametrize("shape, channels, expected", [
    ((3, 32, 32), 32, "train_pixelcnn: generative.pixelcnn.channels must be a multiple of 3 for RGB data"),
    ((1, 30, 30), 32, "multiple of 4 (28 x 28, 32 x 32), this preset's data is (1, 30, 30)"),
    ((4, 32, 32), 48, "square grayscale or RGB images"),
    ((3, 32, 28), 48, "this preset's data is (3, 32, 28)"),
])
def test_images_the_networks_cannot_take_are_refused(shape, channels, expected):
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        check_images(_data(*shape), "train_pixelcnn", _params(channels))


@pytest.mark.faults_bad_input
def test_a_preset_without_generative_stages_refuses_them():
    with pytest.raises(ValueError, match="generative_defenses: generative.run is false in this preset"):
        check_enabled(_params(run=False), "generative_defenses")
