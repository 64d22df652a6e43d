"""Lightning fits of PixelDefend's PixelCNN and Defense-GAN's GAN (issue 9, first part)."""
from __future__ import annotations

import math

import pytest
import torch

from advlab.defenses.defensegan import DCGANDiscriminator, DCGANGenerator
from advlab.defenses.pixeldefend import GatedPixelCNN
from advlab.training.generative import fit_gan, fit_pixelcnn

pytestmark = pytest.mark.usefixtures("one_thread")


def test_pixelcnn_fit_learns_the_digits(small):
    torch.manual_seed(0)
    net = GatedPixelCNN(channels=16, layers=3, kernel=3)
    history = fit_pixelcnn(net, small.x_train[:384], small.x_test[:128], epochs=3, batch_size=32, lr=3e-3,
                           accelerator="cpu")
    assert list(history["epoch"]) == [0, 1, 2]
    assert history["train_bpd"].iloc[2] < history["train_bpd"].iloc[1] < history["train_bpd"].iloc[0]
    assert history["val_bpd"].iloc[-1] < 3.0, history  # a uniform model needs 8 bits per pixel
    assert not net.training


@pytest.mark.parametrize("shape", [(1, 28), (3, 32)], ids=["gray28", "rgb32"])
def test_gan_fit_is_seeded_and_makes_images(shape):
    channels, size = shape
    x = torch.rand(128, channels, size, size)

    def fit():
        torch.manual_seed(0)
        g = DCGANGenerator(z_dim=8, width=8, channels=channels, size=size)
        d = DCGANDiscriminator(width=8, channels=channels, size=size)
        return g, fit_gan(g, d, x, epochs=2, batch_size=32, seed=3, accelerator="cpu")

    (g1, h1), (g2, h2) = fit(), fit()
    assert len(h1) == 2 and all(math.isfinite(v) for v in h1[["d_loss", "g_loss", "d_real_acc"]].values.ravel())
    assert all(torch.equal(a, b) for a, b in zip(g1.state_dict().values(), g2.state_dict().values()))
    assert h1[["d_loss", "g_loss"]].equals(h2[["d_loss", "g_loss"]])
    img = g1(torch.randn(4, 8))
    assert img.shape == (4, channels, size, size) and img.min() >= 0 and img.max() <= 1 and not g1.training


def test_fits_refuse_zero_epochs():
    with pytest.raises(ValueError, match="epochs"):
        fit_pixelcnn(GatedPixelCNN(channels=4, layers=1, kernel=3), torch.rand(8, 1, 6, 6), epochs=0)
