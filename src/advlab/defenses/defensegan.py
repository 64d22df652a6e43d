"""Defense-GAN (Samangouei et al. 2018): replace an input by its projection onto a generator's range,
G(z*) with z* = argmin_z ||G(z) - x||^2, found by gradient descent from R random starts with L steps
each, and classify the projection.

The generator and discriminator are DCGAN-style (Radford et al. 2016) for square images in [0, 1]
(28 x 28 grayscale, 32 x 32 RGB): transposed convolutions with batch norm up from a 7 x 7 (4 x 4)
map, a sigmoid output.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .bpda import RandomDefense, attach_zero_grad, straight_through


def _depth(size: int) -> int:
    """How many stride-2 steps between the image and the DCGAN's smallest map: 28 -> 7 (2), 32 -> 4 (3)."""
    if size < 8 or size % 4:
        raise ValueError(f"size must be a multiple of 4 and >= 8, got {size}")
    return 3 if size % 8 == 0 and size >= 32 else 2


class DCGANGenerator(nn.Module):
    """z ``[N, z_dim]`` -> images ``[N, channels, size, size]`` in [0, 1]: up from a ``size / 4``
    (28: 7 x 7) or ``size / 8`` (32: 4 x 4) map, the width halving at each step."""

    def __init__(self, z_dim: int = 64, width: int = 64, channels: int = 1, size: int = 28) -> None:
        super().__init__()
        if z_dim < 1 or width < 1 or channels < 1:
            raise ValueError(f"z_dim, width and channels must be >= 1, got {z_dim}, {width}, {channels}")
        depth = _depth(size)
        self.z_dim, self.channels, self.size = z_dim, channels, size
        self.base, self.top = size >> depth, width << (depth - 1)
        cells = self.top * self.base * self.base
        self.project = nn.Sequential(nn.Linear(z_dim, cells), nn.BatchNorm1d(cells), nn.ReLU())
        layers: list[nn.Module] = []
        for k in range(depth - 1, 0, -1):
            layers += [nn.ConvTranspose2d(width << k, width << (k - 1), 4, stride=2, padding=1),
                       nn.BatchNorm2d(width << (k - 1)), nn.ReLU()]
        layers += [nn.ConvTranspose2d(width, channels, 4, stride=2, padding=1), nn.Sigmoid()]
        self.up = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.up(self.project(z).view(len(z), self.top, self.base, self.base))


class DCGANDiscriminator(nn.Module):
    """images ``[N, channels, size, size]`` in [0, 1] -> one logit each (real vs generated), ``[N]``."""

    def __init__(self, width: int = 64, channels: int = 1, size: int = 28) -> None:
        super().__init__()
        if width < 1 or channels < 1:
            raise ValueError(f"width and channels must be >= 1, got {width}, {channels}")
        depth = _depth(size)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
        for k in range(1, depth):
            layers += [nn.Conv2d(width << (k - 1), width << k, 4, stride=2, padding=1), nn.BatchNorm2d(width << k),
                       nn.LeakyReLU(0.2)]
        base = size >> depth
        layers += [nn.Flatten(), nn.Linear((width << (depth - 1)) * base * base, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x * 2.0 - 1.0).squeeze(1)


def project(generator: DCGANGenerator, x: Tensor, *, restarts: int = 10, steps: int = 200, lr: float = 0.05,
            seed: int = 0) -> tuple[Tensor, Tensor]:
    """Defense-GAN's projection of ``x`` ``[N, C, H, W]`` (the generator's shape): ``(G(z*), z*)``.

    All ``N * restarts`` starts (standard normal, from a generator seeded with ``seed``, so the result
    is deterministic) descend ``||G(z) - x||^2`` together with Adam for ``steps`` steps; each image
    keeps the start that ends with the lowest error. The generator is used in eval mode and left as
    it was; its weights get no gradients. Any generator with ``z_dim``, ``channels`` and ``size``
    attributes will do.
    """
    if restarts < 1 or steps < 0:
        raise ValueError(f"restarts must be >= 1 and steps >= 0, got {restarts}, {steps}")
    shape = (generator.channels, generator.size, generator.size)
    if x.dim() != 4 or tuple(x.shape[1:]) != shape:
        raise ValueError(f"project with this generator takes [N, {', '.join(map(str, shape))}] images, "
                         f"got shape {tuple(x.shape)}")
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
    """``J (J^T J)^+ J^T grad`` with ``J = dG/dz`` at ``z`` ``[N, z_dim]``: ``grad`` ``[N, C, H, W]``
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
