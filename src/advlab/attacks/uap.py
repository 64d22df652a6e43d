"""Universal adversarial perturbations (Moosavi-Dezfooli, Fawzi, Fawzi, Frossard 2017,
Algorithm 1), and the same-norm baselines the paper compares them with.

Algorithm 1: start from v = 0; pass over the data X; for every point whose prediction
``x + v`` still equals its clean prediction, find the minimal perturbation (DeepFool, in
the lp norm) that sends ``x + v`` across the boundary, add it to v and project v onto the
lp ball of radius xi (p = 2: scale down to norm xi; p = inf: clip to [-xi, xi]); stop once
the fooling rate on X reaches 1 - delta, or after ``max_passes``.

Batched: a pass goes through X (in a seeded random order, as the reference shuffles it)
in chunks of ``chunk`` points. In one chunk the points still classified as before are
found in one forward pass, DeepFool runs on all of them at once (from the same v), and
their perturbations are added to v together before one projection. ``chunk=1`` is the
paper's point-by-point loop; larger chunks cost fewer, larger model calls. DeepFool's
iterations are capped (``max_iter``, the reference's 10), and a point DeepFool cannot
fool within them adds nothing.

Images stay in [0, 1]: ``x + v`` is clipped to the box before the model sees it, and the
fooling rate counts points whose prediction on ``clip(x + v)`` differs from the clean
prediction (not from the label). Deviation: the reference code never clips (its fooling
rates are of images outside the pixel range); a perturbed image that cannot be displayed
or saved is not one we count.

Known limit (measured on the mnist5k LeNet, 500 training points, 5 passes): with p = inf at
xi 0.2-0.3 the algorithm does not beat random sign noise of the same norm (test fooling
5-24% vs 5-28%), at any chunk size, 1 included. DeepFool's minimal l-inf perturbations of
MNIST digits (~0.1-0.15) are nearly as large as xi, so each update saturates v to +-xi and
overwrites what earlier points contributed; and on the black background only the positive
part of v survives the clip to [0, 1]. With p = 2 (xi 4) it fools 35-38% of unseen test
points against 3% for random noise.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..models import predict
from .deepfool import deepfool

__all__ = [
    "UAPResult",
    "boundary_normals",
    "fooling_rate",
    "mean_direction",
    "minimal_perturbations",
    "perturb",
    "project",
    "random_perturbation",
    "scale_to_norm",
    "singular_directions",
    "singular_values",
    "universal_perturbation",
]


def _p(p) -> float:
    if p in (2, 2.0, "l2", "2"):
        return 2.0
    if p in ("linf", "inf", math.inf, float("inf")):
        return math.inf
    raise ValueError(f"p must be 2 / 'l2' or 'inf' / 'linf', got {p!r}")


def _check_xi(xi) -> float:
    if isinstance(xi, bool) or not isinstance(xi, (int, float)) or not math.isfinite(xi) or xi < 0:
        raise ValueError(f"xi must be a finite number >= 0, got {xi!r}")
    return float(xi)


def _norm(v: Tensor, p: float) -> Tensor:
    """lp norm of each leading-dimension slice of ``v`` (a single perturbation: a 0-d tensor)."""
    flat = v.reshape(-1) if v.dim() <= 3 else v.flatten(1)
    return torch.linalg.vector_norm(flat, ord=p, dim=-1)


def _rescaled(v: Tensor, scale: Tensor) -> Tensor:
    """``v`` times a per-perturbation ``scale`` (0-d for one [C, H, W], [K] for a stack)."""
    return v * (scale.view(-1, *([1] * (v.dim() - 1))) if v.dim() > 3 else scale)


def project(v: Tensor, xi: float, p="l2") -> Tensor:
    """P_{p,xi}: the closest point of the lp ball of radius ``xi`` (p = 2 or inf).
    Works on one perturbation [C, H, W] or a stack [K, C, H, W]."""
    p, xi = _p(p), _check_xi(xi)
    if p == math.inf:
        return v.clamp(-xi, xi)
    norm = _norm(v, 2.0)
    return _rescaled(v, torch.clamp(xi / norm.clamp_min(1e-12), max=1.0))


def scale_to_norm(v: Tensor, xi: float, p="l2") -> Tensor:
    """``v`` rescaled to lp norm exactly ``xi`` (the same-norm baselines); a zero ``v`` stays zero."""
    p, xi = _p(p), _check_xi(xi)
    norm = _norm(v, p)
    scale = xi / norm.clamp_min(1e-12)
    return _rescaled(v, torch.where(norm > 0, scale, torch.zeros_like(scale)))


def perturb(x: Tensor, v: Tensor) -> Tensor:
    """``clip(x + v, 0, 1)``, ``v`` [C, H, W] broadcast over the batch."""
    return (x + v.to(x)).clamp(0.0, 1.0)


def fooling_rate(model: nn.Module, x: Tensor, v: Tensor, *, clean_pred: Tensor | None = None,
                 batch_size: int = 1000) -> float:  # fmt: skip
    """Share of points whose prediction on ``clip(x + v)`` differs from the clean prediction
    (``clean_pred``, computed when not given): the paper's fooling rate, not an error rate."""
    if x.shape[0] == 0:
        raise ValueError("fooling_rate needs at least one point")
    if clean_pred is None:
        clean_pred = predict(model, x, batch_size=batch_size)
    fooled = predict(model, perturb(x, v), batch_size=batch_size) != clean_pred.cpu()
    return float(fooled.double().mean())


def random_perturbation(shape, xi: float, p="l2", *, kind: str = "sphere",
                        generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
    """A random perturbation of lp norm exactly ``xi``: ``kind="sphere"`` a direction
    uniform on the sphere (p = 2; for p = inf, a uniform random sign at every coordinate,
    the cube's vertices), ``kind="gaussian"`` i.i.d. Gaussian coordinates scaled to norm xi
    (for p = inf, that is, its largest coordinate set to xi)."""
    p, xi = _p(p), _check_xi(xi)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    if kind not in ("sphere", "gaussian"):
        raise ValueError(f"kind must be 'sphere' or 'gaussian', got {kind!r}")
    if kind == "sphere" and p == math.inf:
        return xi * (2.0 * (torch.rand(shape, generator=g) < 0.5).float() - 1.0)
    # a standard Gaussian normalised is uniform on the l2 sphere
    return scale_to_norm(torch.randn(shape, generator=g), xi, p)


@dataclass
class UAPResult:
    """v: the universal perturbation [C, H, W] (norm <= xi). fooling_rate: on X at the end.
    history: fooling rate on X after each pass. passes: passes run. seconds: wall time.
    counts: DeepFool's "forward" / "backward" and the algorithm's own "checks" (forward
    passes of single points to see whether they are still classified as before)."""

    v: Tensor
    fooling_rate: float
    history: list[float]
    passes: int
    seconds: float
    counts: dict = field(default_factory=dict)
    norm: float = 0.0


def universal_perturbation(
    model: nn.Module,
    x: Tensor,
    *,
    xi: float,
    p="l2",
    delta: float = 0.2,
    max_passes: int = 10,
    overshoot: float = 0.02,
    max_iter: int = 10,
    chunk: int = 32,
    batch_size: int = 1000,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> UAPResult:
    """Algorithm 1 of the paper on the images ``x`` [N, C, H, W] in [0, 1]; see the module
    docstring. Defaults are the reference's: delta 0.2, overshoot 0.02, 10 DeepFool
    iterations, at most 10 passes. The pass order is drawn from ``generator`` (default
    seeded 0): the same seed, the same v."""
    p, xi = _p(p), _check_xi(xi)
    if not 0.0 <= float(delta) < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta!r}")
    for name, value, low in (("max_passes", max_passes, 1), ("max_iter", max_iter, 1), ("chunk", chunk, 1),
                             ("batch_size", batch_size, 1)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty NCHW batch, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()) or float(x.min()) < 0 or float(x.max()) > 1:
        raise ValueError("x must be finite and in [0, 1]")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    began = time.perf_counter()
    x = x.detach()
    n = x.shape[0]
    clean_pred = predict(model, x, batch_size=batch_size).to(x.device)
    v = torch.zeros_like(x[0])
    history: list[float] = []
    counts = {"forward": 0, "backward": 0, "checks": 0}
    target = 1.0 - float(delta)
    norm_name = "l2" if p == 2.0 else "linf"
    bar = tqdm(total=max_passes, desc="uap", disable=not progress, leave=False)
    passes = 0
    for _ in range(max_passes):
        order = torch.randperm(n, generator=g).to(x.device)
        for s in range(0, n, chunk):
            idx = order[s : s + chunk]
            xv = perturb(x[idx], v)
            with torch.no_grad():
                still = model(xv).argmax(1) == clean_pred[idx]
            counts["checks"] += len(idx)
            if not bool(still.any()):
                continue
            rows = still.nonzero().flatten()
            r = deepfool(model, xv[rows], clean_pred[idx][rows], norm=norm_name, overshoot=overshoot,
                         max_iter=max_iter)  # fmt: skip
            counts["forward"] += int(r.counts["forward"].sum())
            counts["backward"] += int(r.counts["backward"].sum())
            fooled = r.success
            if bool(fooled.any()):
                step = (r.x_adv[fooled] - xv[rows][fooled]).sum(0)
                v = project(v + step, xi, p)
        passes += 1
        rate = fooling_rate(model, x, v, clean_pred=clean_pred, batch_size=batch_size)
        history.append(rate)
        bar.update(1)
        bar.set_postfix(fooling=f"{rate:.3f}")
        if rate >= target:
            break
    bar.close()
    return UAPResult(v=v, fooling_rate=history[-1], history=history, passes=passes,
                     seconds=time.perf_counter() - began, counts=counts, norm=float(_norm(v, p)))  # fmt: skip


# ---------------------------------------------------------------- same-norm baselines and spectra


def minimal_perturbations(model: nn.Module, x: Tensor, *, p="l2", overshoot: float = 0.02, max_iter: int = 50,
                          batch_size: int = 1000) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Per-image DeepFool perturbations ``r_i`` [N, C, H, W] (zero where DeepFool failed) and
    the success mask [N]: the raw material of the mean and SVD baselines and of the
    decision-boundary normals ``r_i / ||r_i||_2``."""
    norm_name = "l2" if _p(p) == 2.0 else "linf"
    rs, ok = [], []
    for s in range(0, x.shape[0], batch_size):
        xb = x[s : s + batch_size].detach()
        r = deepfool(model, xb, norm=norm_name, overshoot=overshoot, max_iter=max_iter)
        rs.append(torch.where(r.success.view(-1, 1, 1, 1), r.x_adv - xb, torch.zeros_like(xb)))
        ok.append(r.success)
    return torch.cat(rs), torch.cat(ok)


def boundary_normals(perturbations: Tensor) -> Tensor:
    """Unit (l2) directions [M, D] of the non-zero minimal perturbations: normals of the
    decision boundary at each point's nearest boundary point."""
    flat = perturbations.flatten(1)
    norms = torch.linalg.vector_norm(flat, dim=1)
    keep = norms > 0
    return flat[keep] / norms[keep, None]


def mean_direction(perturbations: Tensor, xi: float, p="l2", *, unit: bool = True) -> Tensor:
    """The average of per-image perturbations, rescaled to norm ``xi`` ([C, H, W]). With
    ``unit`` (default) each perturbation is first scaled to unit l2 norm, so that the few
    points far from the boundary do not dominate the average (zero rows are left out)."""
    flat = perturbations.flatten(1)
    if unit:
        norms = torch.linalg.vector_norm(flat, dim=1)
        flat = flat[norms > 0] / norms[norms > 0, None]
    if flat.shape[0] == 0:
        raise ValueError("mean_direction needs at least one non-zero perturbation")
    return scale_to_norm(flat.mean(0).view(perturbations.shape[1:]), xi, p)


def singular_directions(perturbations: Tensor, k: int, xi: float, p="l2") -> Tensor:
    """The top ``k`` right singular vectors of the matrix of perturbations or boundary
    normals (one row per image; see :func:`boundary_normals`), each in both signs (SVD's sign is arbitrary) and rescaled to norm ``xi``:
    [2k, C, H, W], ordered +v1, -v1, +v2, -v2, ..."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    flat = perturbations.flatten(1).double()
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    top = vh[:k].to(perturbations.dtype).view(-1, *perturbations.shape[1:])
    signed = torch.stack([top, -top], 1).flatten(0, 1)
    return scale_to_norm(signed, xi, p)


def singular_values(matrix: Tensor) -> Tensor:
    """Singular values (descending) of ``matrix`` [M, D], in float64."""
    return torch.linalg.svdvals(matrix.flatten(1).double())
