"""Defense-GAN (Samangouei et al. 2018): replace an input by its projection onto a generator's range,
G(z*) with z* = argmin_z ||G(z) - x||^2, found by gradient descent from R random starts with L steps
each, and classify the projection.

The generator and discriminator are DCGAN-style (Radford et al. 2016) for 28 x 28 single-channel
images in [0, 1]: transposed convolutions with batch norm up from a 7 x 7 map, a sigmoid output.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .bpda import RandomDefense, attach_zero_grad, straight_through


class DCGANGenerator(nn.Module):
    """z ``[N, z_dim]`` -> images ``[N, 1, 28, 28]`` in [0, 1]."""

    def __init__(self, z_dim: int = 64, width: int = 64) -> None:
        super().__init__()
        if z_dim < 1 or width < 1:
            raise ValueError(f"z_dim and width must be >= 1, got {z_dim}, {width}")
        self.z_dim = z_dim
        self.project = nn.Sequential(nn.Linear(z_dim, 2 * width * 7 * 7), nn.BatchNorm1d(2 * width * 7 * 7), nn.ReLU())
        self.up = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, stride=2, padding=1), nn.Sigmoid(),
        )
        self.width = width

    def forward(self, z: Tensor) -> Tensor:
        return self.up(self.project(z).view(len(z), 2 * self.width, 7, 7))


class DCGANDiscriminator(nn.Module):
    """images ``[N, 1, 28, 28]`` in [0, 1] -> one logit each (real vs generated), ``[N]``."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * 2.0 - 1.0).squeeze(1)


def project(generator: DCGANGenerator, x: Tensor, *, restarts: int = 10, steps: int = 200, lr: float = 0.05,
            seed: int = 0) -> tuple[Tensor, Tensor]:
    """Defense-GAN's projection of ``x`` ``[N, 1, 28, 28]``: ``(G(z*), z*)``.

    All ``N * restarts`` starts (standard normal, from a generator seeded with ``seed``, so the result
    is deterministic) descend ``||G(z) - x||^2`` together with Adam for ``steps`` steps; each image
    keeps the start that ends with the lowest error. The generator is used in eval mode and left as
    it was; its weights get no gradients.
    """
    if restarts < 1 or steps < 0:
        raise ValueError(f"restarts must be >= 1 and steps >= 0, got {restarts}, {steps}")
    if x.dim() != 4 or tuple(x.shape[1:]) != (1, 28, 28):
        raise ValueError(f"project takes [N, 1, 28, 28] images, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError("project takes finite images in [0, 1]")
    n = len(x)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.randn(restarts * n, generator.z_dim, generator=gen).to(x.device).requires_grad_(True)
    target = x.detach().repeat(restarts, 1, 1, 1)  # start r of image i is row r * n + i
    was_training = generator.training
    grads = [p.requires_grad for p in generator.parameters()]
    generator.eval()
    for p in generator.parameters():
        p.requires_grad_(False)
    try:
        opt = torch.optim.Adam([z], lr=lr)
        with torch.enable_grad():
            for _ in range(steps):
                loss = ((generator(z) - target) ** 2).flatten(1).sum(1)
                opt.zero_grad()
                loss.sum().backward()
                opt.step()
        with torch.no_grad():
            errors = ((generator(z) - target) ** 2).flatten(1).sum(1).view(restarts, n)
            best = errors.argmin(dim=0)  # [n]
            z_best = z.detach().view(restarts, n, -1)[best, torch.arange(n, device=x.device)]
            return generator(z_best), z_best
    finally:
        generator.train(was_training)
        for p, g in zip(generator.parameters(), grads):
            p.requires_grad_(g)


def tangent_projection(generator: nn.Module, z: Tensor, grad: Tensor) -> Tensor:
    """``J (J^T J)^+ J^T grad`` with ``J = dG/dz`` at ``z`` ``[N, z_dim]``: ``grad`` ``[N, 1, H, W]``
    projected onto the tangent space of the generator's range at ``G(z)``. This is the derivative of
    the projection x -> G(z*(x)) at a least-squares optimum, to first order in the residual (exact
    for a linear generator): the BPDA backward pass "through the generator"."""
    import warnings

    from torch.func import jacfwd, vmap

    def one(zi: Tensor) -> Tensor:
        return generator(zi.unsqueeze(0)).flatten()

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.func's first use trips torch.jit's deprecation notice
        jac = vmap(jacfwd(one))(z.detach())  # [N, D, z_dim]
        g = grad.flatten(1).unsqueeze(2).to(jac.dtype)  # [N, D, 1]
        coef = torch.linalg.lstsq(jac, g).solution  # [N, z_dim, 1]
        return (jac @ coef).view_as(grad).to(grad.dtype)


class _ThroughGenerator(torch.autograd.Function):
    @staticmethod
    def forward(ctx, projected: Tensor, x: Tensor, z: Tensor, generator: nn.Module) -> Tensor:
        ctx.generator = generator
        ctx.save_for_backward(z)
        return projected.detach().clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        (z,) = ctx.saved_tensors
        return None, tangent_projection(ctx.generator, z, grad), None, None


APPROXIMATIONS = ("identity", "generator")


class DefenseGAN(RandomDefense):
    """A classifier behind Defense-GAN: ``classifier(G(z*))`` with ``z*`` from :func:`project`.

    Random: every forward call projects from fresh random starts (a seed drawn from the defence's
    own stream, so an attack is still a function of its seed); EoT averages over them. The exact
    projection is an inner optimisation whose result is not differentiated (gradient zero, as for
    an attacker who does not unroll its ``steps``). BPDA backward passes: ``approx="identity"``
    (dG(z*)/dx ~ I) or ``"generator"`` (the tangent projection of :func:`tangent_projection`)."""

    def __init__(self, classifier: nn.Module, gan: nn.Module, *, restarts: int = 10, steps: int = 200,
                 lr: float = 0.05, approx: str = "identity", seed: int = 0) -> None:
        super().__init__(classifier, seed=seed)
        if approx not in APPROXIMATIONS:
            raise ValueError(f"approx must be one of {APPROXIMATIONS}, got {approx!r}")
        if restarts < 1 or steps < 0:
            raise ValueError(f"restarts must be >= 1 and steps >= 0, got {restarts}, {steps}")
        self.gan, self.restarts, self.steps, self.lr, self.approx_kind = gan, int(restarts), int(steps), float(lr), approx

    def project(self, x: Tensor) -> tuple[Tensor, Tensor]:
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator, device=self.generator.device))
        return project(self.gan, x.detach(), restarts=self.restarts, steps=self.steps, lr=self.lr, seed=seed)

    def transform(self, x: Tensor) -> Tensor:
        return attach_zero_grad(self.project(x)[0], x)

    def forward_bpda(self, x: Tensor) -> Tensor:
        projected, z = self.project(x)
        if self.approx_kind == "identity":
            return self.classifier(straight_through(projected, x))
        return self.classifier(_ThroughGenerator.apply(projected, x, z, self.gan))
