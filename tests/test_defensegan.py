"""Defense-GAN's generator and projection (issue 9, first part: the library)."""
from __future__ import annotations

import pytest
import torch

from advlab.defenses.defensegan import DCGANDiscriminator, DCGANGenerator, project

pytestmark = pytest.mark.usefixtures("one_thread")


def _generator(z_dim=8):
    torch.manual_seed(0)
    g = DCGANGenerator(z_dim=z_dim, width=8)
    g.eval()
    with torch.no_grad():  # settle the batch-norm statistics on a few codes, as a trained G would have
        g.train()
        g(torch.randn(256, z_dim))
        g.eval()
    return g


def test_shapes_and_ranges():
    g, d = _generator(), DCGANDiscriminator(width=8)
    x = g(torch.randn(5, 8))
    assert x.shape == (5, 1, 28, 28) and x.min() >= 0 and x.max() <= 1
    assert d(x).shape == (5,)


def test_projection_keeps_shape_and_range_and_is_deterministic_under_a_seed():
    g = _generator()
    x = torch.rand(3, 1, 28, 28)
    a, za = project(g, x, restarts=3, steps=20, seed=7)
    b, zb = project(g, x, restarts=3, steps=20, seed=7)
    c, _ = project(g, x, restarts=3, steps=20, seed=8)
    assert a.shape == x.shape and za.shape == (3, 8)
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and torch.equal(za, zb) and not torch.equal(a, c)
    assert not g.training and all(p.requires_grad for p in g.parameters()) and all(
        p.grad is None for p in g.parameters())


def test_projection_finds_points_of_the_range_and_removes_off_manifold_noise():
    """An image G(z0) is found again; the same image plus noise is projected closer to G(z0) than
    the noisy image is (the noise is mostly orthogonal to the 8-dimensional range)."""
    g = _generator()
    z0 = torch.randn(4, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        clean = g(z0)
    noisy = (clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(4))).clamp(0, 1)
    start_error = ((g(torch.randn(4, 8, generator=torch.Generator().manual_seed(0))) - clean) ** 2).sum((1, 2, 3))
    found, _ = project(g, clean, restarts=4, steps=150, seed=0)
    error = ((found - clean) ** 2).sum((1, 2, 3))
    assert (error < 0.1 * start_error).all(), (error, start_error)
    denoised, _ = project(g, noisy, restarts=4, steps=150, seed=0)
    assert ((denoised - clean) ** 2).sum() < 0.5 * ((noisy - clean) ** 2).sum()


def test_more_restarts_never_end_worse():
    g = _generator()
    x = torch.rand(4, 1, 28, 28)
    one, _ = project(g, x, restarts=1, steps=30, seed=0)
    five, _ = project(g, x, restarts=5, steps=30, seed=0)  # its first start is the same as `one`'s
    assert (((five - x) ** 2).sum((1, 2, 3)) <= ((one - x) ** 2).sum((1, 2, 3)) * (1 + 1e-3)).all()


def test_projection_refuses_bad_input():
    g = _generator()
    with pytest.raises(ValueError, match="28, 28"):
        project(g, torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        project(g, torch.full((1, 1, 28, 28), -0.5))
    with pytest.raises(ValueError, match="restarts"):
        project(g, torch.rand(1, 1, 28, 28), restarts=0)
