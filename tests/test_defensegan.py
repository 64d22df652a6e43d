"""Defense-GAN's generator and projection (issue 9, first part: the library)."""
from __future__ import annotations

import pytest
import torch

from advlab.defenses.defensegan import DCGANDiscriminator, DCGANGenerator, DefenseGAN, project, tangent_projection

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


class _LinearGenerator(torch.nn.Module):
    """G(z) = A z + b, reshaped to 28 x 28: its range is an affine subspace, so the least-squares
    projection and its derivative (A (A^T A)^-1 A^T) are known in closed form."""

    def __init__(self, z_dim=3):
        super().__init__()
        torch.manual_seed(2)
        self.z_dim, self.channels, self.size = z_dim, 1, 28  # what project() reads of a generator
        self.lin = torch.nn.Linear(z_dim, 784).double()
        with torch.no_grad():
            self.lin.weight.mul_(0.05)
            self.lin.bias.fill_(0.5)

    def forward(self, z):
        return self.lin(z.to(torch.float64)).view(len(z), 1, 28, 28)


def test_tangent_projection_is_the_derivative_of_the_projection_for_a_linear_generator():
    g = _LinearGenerator()
    a = g.lin.weight.detach()
    p = a @ torch.linalg.solve(a.T @ a, a.T)
    grad = torch.randn(4, 1, 28, 28, dtype=torch.float64)
    z = torch.randn(4, 3, dtype=torch.float64)
    got = tangent_projection(g, z, grad)
    assert got.shape == grad.shape
    torch.testing.assert_close(got.flatten(1), grad.flatten(1) @ p.T)
    torch.testing.assert_close(tangent_projection(g, z, got), got)  # a projection: idempotent


def _classifier():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).double()


def test_defensegan_bpda_gradients_have_the_input_shape_and_match_the_true_gradient():
    """For a linear generator the projection is x -> P (x - b) + b, differentiable in closed form. The
    "generator" BPDA view's gradient equals the true gradient of classifier(P (x - b) + b); the
    identity view's equals the classifier's gradient at the projection; the exact defence's is 0."""
    g, clf = _LinearGenerator(), _classifier()
    a, b = g.lin.weight.detach(), g.lin.bias.detach()
    p = a @ torch.linalg.solve(a.T @ a, a.T)
    x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    y = torch.tensor([1, 4, 7])
    loss = torch.nn.functional.cross_entropy

    def closed_form(v):
        return ((v.flatten(1) - b) @ p.T + b).view_as(v)

    xr = x.clone().requires_grad_(True)
    loss(clf(closed_form(xr)), y, reduction="sum").backward()
    true_grad = xr.grad
    for approx, expected in [("generator", true_grad), ("identity", None)]:
        d = DefenseGAN(clf, g, restarts=2, steps=400, lr=0.05, approx=approx, seed=0)
        xa = x.clone().requires_grad_(True)
        logits = d.bpda()(xa)
        with torch.no_grad():  # the forward is the exact (converged) projection
            torch.testing.assert_close(logits, clf(closed_form(x)), atol=2e-3, rtol=0)
        loss(logits, y, reduction="sum").backward()
        assert xa.grad.shape == x.shape
        if expected is not None:
            torch.testing.assert_close(xa.grad, expected, atol=2e-3 * expected.abs().max().item(), rtol=0)
        else:
            xp = closed_form(x).requires_grad_(True)
            loss(clf(xp), y, reduction="sum").backward()
            torch.testing.assert_close(xa.grad, xp.grad, atol=2e-3 * xp.grad.abs().max().item(), rtol=0)
    xe = x.clone().requires_grad_(True)
    loss(DefenseGAN(clf, g, restarts=1, steps=5)(xe), y, reduction="sum").backward()
    assert xe.grad.abs().max() == 0  # the exact projection is not differentiated: the naive gradient


def test_defensegan_draws_fresh_starts_per_call_and_repeats_under_its_seed():
    g, clf = _generator(), torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))
    x = torch.rand(2, 1, 28, 28)
    d = DefenseGAN(clf, g, restarts=2, steps=3, seed=5)
    first, second = d.project(x)[0], d.project(x)[0]
    assert not torch.equal(first, second)
    d.reseed(5)
    assert torch.equal(d.project(x)[0], first)
    with pytest.raises(ValueError, match="approx"):
        DefenseGAN(clf, g, approx="unrolled")


def test_tangent_projection_runs_through_a_dcgan_generator():
    g = _generator()
    grad = torch.randn(3, 1, 28, 28)
    out = tangent_projection(g, torch.randn(3, 8), grad)
    assert out.shape == grad.shape and torch.isfinite(out).all()
    assert out.norm() < grad.norm()  # onto an 8-dimensional tangent space: most of a random vector is lost


def test_colour_32_by_32_networks_and_projection():
    """CIFAR-10's shape: three stride-2 steps from a 4 x 4 map; the projection takes the generator's
    shape and refuses any other, naming it."""
    torch.manual_seed(0)
    g = DCGANGenerator(z_dim=8, width=8, channels=3, size=32)
    d = DCGANDiscriminator(width=8, channels=3, size=32)
    img = g(torch.randn(5, 8))
    assert img.shape == (5, 3, 32, 32) and img.min() >= 0 and img.max() <= 1
    assert d(img).shape == (5,)
    x = torch.rand(2, 3, 32, 32)
    p1, z1 = project(g, x, restarts=2, steps=4, seed=3)
    p2, _ = project(g, x, restarts=2, steps=4, seed=3)
    assert p1.shape == x.shape and z1.shape == (2, 8) and torch.equal(p1, p2)
    with pytest.raises(ValueError, match=r"\[N, 3, 32, 32\]"):
        project(g, torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="multiple of 4"):
        DCGANGenerator(size=30)
    # the 28 x 28 networks keep their layout (and so their checkpoints' keys)
    assert [k for k in DCGANGenerator(z_dim=4, width=4).state_dict() if "weight" in k] == [
        "project.0.weight", "project.1.weight", "up.0.weight", "up.1.weight", "up.3.weight"]
