"""PixelDefend's PixelCNN and purification (issue 9, first part: the library)."""
from __future__ import annotations

import pytest
import torch

from advlab.defenses.pixeldefend import GatedPixelCNN, PixelDefend, pixeldefend, to_levels

pytestmark = pytest.mark.usefixtures("one_thread")


def test_each_output_depends_only_on_earlier_pixels():
    """The autoregressive property, checked by gradients: the logits of pixel (i, j) move with every
    pixel before it in raster order that the receptive field reaches, and with none at or after it."""
    torch.manual_seed(0)
    net = GatedPixelCNN(channels=8, layers=4, kernel=3).double()
    h = w = 7
    for i, j in [(0, 0), (0, 3), (3, 0), (3, 3), (6, 6)]:
        x = torch.rand(1, 1, h, w, dtype=torch.float64, requires_grad=True)
        net(x)[0, :, 0, i, j].sum().backward()
        grad = x.grad[0, 0].abs()
        order = torch.arange(h * w).reshape(h, w)
        later = order >= i * w + j
        assert grad[later].max() == 0, (i, j)
        if (i, j) != (0, 0):
            assert grad[i, j - 1 if j else 0] > 0 or grad[i - 1, j] > 0  # a neighbour before it counts
    # no blind spot: with enough layers, the pixel up and to the right is seen too
    x = torch.rand(1, 1, h, w, dtype=torch.float64, requires_grad=True)
    net(x)[0, :, 0, 3, 3].sum().backward()
    assert x.grad[0, 0, 2, 4] != 0


def test_purification_stays_in_the_ball_on_the_levels_and_is_deterministic():
    torch.manual_seed(0)
    net = GatedPixelCNN(channels=8, layers=2, kernel=3)
    x = torch.rand(3, 1, 6, 6)
    a, b = pixeldefend(net, x, eps_levels=16), pixeldefend(net, x, eps_levels=16)
    assert a.shape == x.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a * 255, (a * 255).round())
    assert (to_levels(a) - to_levels(x)).abs().max() <= 16
    assert torch.equal(pixeldefend(net, x, eps_levels=0), to_levels(x).float() / 255)
    assert net.training  # left as it was found


def _reference_purification(net, x, eps_levels):
    """PixelDefend as the paper states it: one full PixelCNN pass per pixel and colour, in raster
    order and R, G, B inside a pixel."""
    levels = to_levels(x)
    out = levels.clone()
    grid = torch.arange(256)
    with torch.no_grad():
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                for c in range(x.shape[1]):
                    logits = net(out.float() / 255)[:, :, c, i, j]
                    allowed = (grid.unsqueeze(0) - levels[:, c, i, j].unsqueeze(1)).abs() <= eps_levels
                    out[:, c, i, j] = logits.masked_fill(~allowed, float("-inf")).argmax(1)
    return out.float() / 255


def test_row_by_row_purification_equals_one_full_pass_per_pixel():
    """The incremental path (vertical stack one row per row, horizontal stack one column per pixel)
    gives the logits of a full pass, and therefore the same purified images."""
    torch.manual_seed(1)
    net = GatedPixelCNN(channels=8, layers=3, kernel=5).eval()
    x = torch.rand(4, 1, 9, 8)
    for eps in (0, 3, 40, 255):
        assert torch.equal(pixeldefend(net, x, eps_levels=eps), _reference_purification(net, x, eps))


def test_colour_purification_equals_one_full_pass_per_pixel_and_colour():
    torch.manual_seed(2)
    net = GatedPixelCNN(channels=9, layers=3, kernel=3, colours=3).eval()
    x = torch.rand(3, 3, 6, 5)
    for eps in (0, 5, 255):
        assert torch.equal(pixeldefend(net, x, eps_levels=eps), _reference_purification(net, x, eps))


def greedy_gap(net, x, purified, eps_levels) -> float:
    """How far purification is from greedy: the largest, over pixels, of (best logit allowed in the
    pixel's ball - logit of the level chosen), with the logits of one full pass over the purified
    image (pixel (i, j)'s logits depend only on the pixels before it: the ones the greedy step saw)."""
    with torch.no_grad():
        logits = net(purified).double()  # [N, 256, C, H, W]
    grid = torch.arange(256, device=x.device).view(1, 256, 1, 1, 1)
    allowed = (grid - to_levels(x).unsqueeze(1)).abs() <= eps_levels
    best = logits.masked_fill(~allowed, float("-inf")).amax(1)
    chosen = logits.gather(1, to_levels(purified).unsqueeze(1)).squeeze(1)
    return float((best - chosen).max())


def test_colour_outputs_depend_only_on_earlier_pixels_and_colours():
    """R -> G -> B inside a pixel: colour c's logits at (i, j) move with the colours before c at (i, j)
    and with every colour of the pixels before it, and with nothing else."""
    torch.manual_seed(0)
    net = GatedPixelCNN(channels=24, layers=3, kernel=3, colours=3).double()  # 12: ReLUs can close a group
    h = w = 6
    order = torch.arange(h * w).reshape(h, w)
    for i, j in [(0, 0), (2, 3), (5, 5)]:
        for c in range(3):
            x = torch.rand(1, 3, h, w, dtype=torch.float64, requires_grad=True)
            net(x)[0, :, c, i, j].sum().backward()
            grad = x.grad[0].abs()  # [3, H, W]
            later = (order > i * w + j).expand(3, h, w).clone()
            later[c:, i, j] = True  # its own colour and those after it at the same pixel
            assert grad[later].max() == 0, (i, j, c)
            if c:
                assert grad[:c, i, j].min() > 0, (i, j, c)  # the colours before it here count
            if j:
                assert grad[:, i, j - 1].min() > 0, (i, j, c)  # all colours of the pixel to the left


def test_purification_is_greedy(small):
    """The fixed-point property that any correct implementation has, on any device: every chosen level
    is the most likely one in its ball given the purified pixels before it."""
    torch.manual_seed(0)
    net = GatedPixelCNN(channels=8, layers=3, kernel=5).eval()
    x = small.x_test[:4]
    assert greedy_gap(net, x, pixeldefend(net, x, eps_levels=32), 32) < 1e-5


def test_purification_refuses_bad_input():
    net = GatedPixelCNN(channels=4, layers=1, kernel=3)
    with pytest.raises(ValueError, match="C = 1"):
        pixeldefend(net, torch.rand(1, 3, 4, 4))
    with pytest.raises(ValueError, match="C = 3"):
        pixeldefend(GatedPixelCNN(channels=6, layers=1, kernel=3, colours=3), torch.rand(1, 1, 4, 4))
    with pytest.raises(ValueError, match="multiple of colours"):
        GatedPixelCNN(channels=8, colours=3)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pixeldefend(net, torch.full((1, 1, 4, 4), 1.5))
    with pytest.raises(ValueError, match="eps_levels"):
        pixeldefend(net, torch.rand(1, 1, 4, 4), eps_levels=-1)


def _fit_briefly(net, x_train, *, steps: int, lr: float):
    """A few Adam steps on random batches of 32 (per-dimension NLL); the net comes back in eval mode."""
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        batch = x_train[torch.randint(0, len(x_train), (32,))]
        loss = net.nll(batch).mean() / batch[0].numel()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


def _purify_noisy(net, x, *, sigma: float, eps_levels: int):
    """Gaussian noise (seed 1) on ``x``, then purification: (noisy, clean bpd, noisy bpd, purified, purified bpd)."""
    noisy = (x + sigma * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    with torch.no_grad():
        purified = pixeldefend(net, noisy, eps_levels=eps_levels)
        return (noisy, net.bits_per_dim(x).mean(), net.bits_per_dim(noisy).mean(), purified,
                net.bits_per_dim(purified).mean())


def test_trained_pixelcnn_purifies_noisy_digits_towards_the_data(small):
    """A PixelCNN trained briefly on MNIST digits: noisy test digits have a higher NLL than clean ones,
    and purification lowers it again (a more likely image, closer to the data)."""
    torch.manual_seed(0)
    net = _fit_briefly(GatedPixelCNN(channels=16, layers=3, kernel=3), small.x_train[:512], steps=60, lr=3e-3)
    x = small.x_test[:4]
    noisy, clean_bpd, noisy_bpd, purified, purified_bpd = _purify_noisy(net, x, sigma=0.25, eps_levels=64)
    assert clean_bpd < 2.5  # a real density model: far below the 8 bits of a uniform one
    assert noisy_bpd > clean_bpd + 0.5
    assert purified_bpd < noisy_bpd - 0.5
    assert (purified - x).abs().mean() < (noisy - x).abs().mean()  # moved towards the clean digits


def test_pixeldefend_exact_gradient_is_zero_and_bpda_gradient_is_the_classifiers_at_the_purified_point():
    torch.manual_seed(0)
    net = GatedPixelCNN(channels=4, layers=2, kernel=3)
    clf = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    d = PixelDefend(clf, net, eps_levels=20)
    x = torch.rand(3, 1, 8, 8)
    y = torch.tensor([0, 5, 9])
    loss = torch.nn.functional.cross_entropy
    xe = x.clone().requires_grad_(True)
    loss(d(xe), y).backward()
    assert xe.grad.shape == x.shape and xe.grad.abs().max() == 0  # shattered: what naive PGD sees
    xb = x.clone().requires_grad_(True)
    logits = d.bpda()(xb)
    purified = pixeldefend(net, x, eps_levels=20)
    assert torch.equal(logits, clf(purified))  # forward: the exact defence
    loss(logits, y).backward()
    xp = purified.clone().requires_grad_(True)
    loss(clf(xp), y).backward()
    assert xb.grad.shape == x.shape
    torch.testing.assert_close(xb.grad, xp.grad)  # backward: identity, i.e. the classifier's gradient there


def test_trained_colour_pixelcnn_purifies_noisy_cifar_images_towards_the_data(shared_data):
    """The R -> G -> B model on real CIFAR-10 images (12 x 12 centre crops, to train in seconds): noise
    raises their NLL, purification lowers it again and moves the pixels back towards the clean image."""
    from advlab.data import load_dataset

    data = load_dataset("npz", npz_path=shared_data / "cifar10-subset.npz", n_train=1000, n_test=100, seed=0)
    crop = slice(10, 22)
    x_train = data.x_train[:, :, crop, crop]
    torch.manual_seed(0)
    net = _fit_briefly(GatedPixelCNN(channels=24, layers=3, kernel=3, colours=3), x_train, steps=100, lr=1e-2)
    x = data.x_test[:4, :, crop, crop]
    noisy, clean_bpd, noisy_bpd, purified, purified_bpd = _purify_noisy(net, x, sigma=0.1, eps_levels=32)
    assert clean_bpd < 7.0  # a uniform model needs 8 bits per dimension
    assert noisy_bpd > clean_bpd + 1.0
    assert purified_bpd < noisy_bpd - 1.0
    assert (purified - x).abs().mean() < (noisy - x).abs().mean()
    assert greedy_gap(net, noisy, purified, 32) < 1e-4
