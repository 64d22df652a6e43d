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
fool within them adds nothing (the reference's "converged" test).

On MNIST one point's minimal perturbation is a large part of xi (DeepFool's median l2 on the
mnist5k LeNet is ~1.6 against xi 8), so every update rewrites much of v and the fooling rate
on X swings by 10-20 points from one pass to the next. Two cheap guards, both judged on X
only: the rate is measured ``checks_per_pass`` times a pass (the stopping test may fire
inside a pass), and the best v measured is returned (``keep_best``). With
``checks_per_pass=1, keep_best=False`` this is the reference's loop.

Images stay in [0, 1]: ``x + v`` is clipped to the box before the model sees it, and the
fooling rate counts points whose prediction on ``clip(x + v)`` differs from the clean
prediction (not from the label). Deviation: the reference code never clips (its fooling
rates are of images outside the pixel range); a perturbed image that cannot be displayed
or saved is not one we count. For the same reason DeepFool is linearised within the box
(``box_aware``, default on): the part of a step that would push a pixel already at 0 or 1
further out is dropped. On MNIST (background at 0) plain DeepFool under clipping needs 4-10
steps per point and leaves much of each step on the background, where the clip erases it;
box-aware, 1-3 steps (3x fewer model gradients; measured on the mnist5k LeNet) and a v
that spends its norm where the images can move.

The inner step is the minimal l2 perturbation for both p (the paper's line 7, arg min
||r||_2, and LTS4's code, whose DeepFool is the l2 one); only the projection depends on p.
An earlier version used DeepFool-linf for p = inf: its sign-like steps of ~0.1-0.15 saturate
v to +-xi at once on MNIST and it did no better than random sign noise (``inner_norm`` keeps
that variant for comparison).
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
    "energy_dimension",
    "fooled_labels",
    "fooling_rate",
    "mean_direction",
    "minimal_perturbations",
    "perturb",
    "project",
    "random_perturbation",
    "scale_to_norm",
    "singular_directions",
    "singular_values",
    "subspace_perturbation",
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
    """v: the universal perturbation [C, H, W] (norm <= xi). fooling_rate: its rate on X.
    history: fooling rate on X at each check (``checks_per_pass`` per pass). passes: passes run. seconds: wall time.
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
    inner_norm="l2",
    box_aware: bool = True,
    keep_best: bool = True,
    checks_per_pass: int = 1,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> UAPResult:
    """Algorithm 1 of the paper on the images ``x`` [N, C, H, W] in [0, 1]; see the module
    docstring. Defaults are the reference's: delta 0.2, overshoot 0.02, 10 DeepFool
    iterations, at most 10 passes. ``inner_norm``: the norm of DeepFool's minimal
    perturbation (the paper's l2 whatever p). ``box_aware``: DeepFool linearised within
    [0, 1] (see the module docstring). ``keep_best``: return the v of the pass that fooled
    most of X (the reference returns the last pass's; on MNIST, where one point's minimal
    perturbation is a large part of xi, the rate swings between passes). ``checks_per_pass``:
    how often in a pass the fooling rate on X is measured (for the stopping test and the best
    v; 1 = at the end of each pass, as the paper). The pass order is drawn from ``generator``
    (default seeded 0): the same seed, the same v."""
    p, xi = _p(p), _check_xi(xi)
    inner = "l2" if _p(inner_norm) == 2.0 else "linf"
    if not 0.0 <= float(delta) < 1.0:
        raise ValueError(f"delta must be in [0, 1), got {delta!r}")
    for name, value, low in (("max_passes", max_passes, 1), ("max_iter", max_iter, 1), ("chunk", chunk, 1),
                             ("batch_size", batch_size, 1), ("checks_per_pass", checks_per_pass, 1)):  # fmt: skip
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
    bar = tqdm(total=max_passes, desc="uap", disable=not progress, leave=False)
    passes = 0
    best_v, best_rate = v, -1.0
    n_chunks = math.ceil(n / chunk)
    # chunk indices after which the fooling rate on X is measured (the last one of every pass)
    check_at = {math.ceil(n_chunks * (j + 1) / checks_per_pass) - 1 for j in range(checks_per_pass)}
    done = False
    for _ in range(max_passes):
        order = torch.randperm(n, generator=g).to(x.device)
        for c, s in enumerate(range(0, n, chunk)):
            idx = order[s : s + chunk]
            xv = perturb(x[idx], v)
            with torch.no_grad():
                still = model(xv).argmax(1) == clean_pred[idx]
            counts["checks"] += len(idx)
            if bool(still.any()):
                rows = still.nonzero().flatten()
                r = deepfool(model, xv[rows], clean_pred[idx][rows], norm=inner, overshoot=overshoot,
                             max_iter=max_iter, box_aware=box_aware)  # fmt: skip
                counts["forward"] += int(r.counts["forward"].sum())
                counts["backward"] += int(r.counts["backward"].sum())
                fooled = r.success
                if bool(fooled.any()):
                    step = (r.x_adv[fooled] - xv[rows][fooled]).sum(0)
                    v = project(v + step, xi, p)
            if c not in check_at:
                continue
            rate = fooling_rate(model, x, v, clean_pred=clean_pred, batch_size=batch_size)
            history.append(rate)
            if rate > best_rate or not keep_best:
                best_v, best_rate = v, rate
            if rate >= target:
                done = True
                break
        passes += 1
        bar.update(1)
        bar.set_postfix(fooling=f"{history[-1]:.3f}")
        if done:
            break
    bar.close()
    return UAPResult(v=best_v, fooling_rate=best_rate, history=history, passes=passes,
                     seconds=time.perf_counter() - began, counts=counts, norm=float(_norm(best_v, p)))  # fmt: skip


# ---------------------------------------------------------------- same-norm baselines and spectra


def minimal_perturbations(model: nn.Module, x: Tensor, *, p="l2", overshoot: float = 0.02, max_iter: int = 50,
                          box_aware: bool = True, batch_size: int = 1000) -> tuple[Tensor, Tensor]:  # fmt: skip
    """Per-image DeepFool perturbations ``r_i`` [N, C, H, W] (zero where DeepFool failed) and
    the success mask [N]: the raw material of the mean and SVD baselines and of the
    decision-boundary normals ``r_i / ||r_i||_2``. ``box_aware`` as in
    :func:`universal_perturbation` (the UAP and its baselines from the same DeepFool)."""
    norm_name = "l2" if _p(p) == 2.0 else "linf"
    rs, ok = [], []
    for s in range(0, x.shape[0], batch_size):
        xb = x[s : s + batch_size].detach()
        r = deepfool(model, xb, norm=norm_name, overshoot=overshoot, max_iter=max_iter, box_aware=box_aware)
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
    normals (one row per image; see :func:`boundary_normals`), each in both signs (SVD's sign
    is arbitrary) and rescaled to norm ``xi``:
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


def subspace_perturbation(perturbations: Tensor, dim: int, xi: float, p="l2", *, count: int = 1,
                          generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
    """``count`` random perturbations of norm ``xi`` drawn uniformly (Gaussian coordinates) in
    the span of the top ``dim`` right singular vectors of the matrix of perturbations or
    boundary normals: the paper's random vectors in the subspace S where the decision
    boundary near the data is correlated. [count, C, H, W]."""
    flat = perturbations.flatten(1).double()
    if not 1 <= dim <= min(flat.shape):
        raise ValueError(f"dim must be in [1, {min(flat.shape)}] for a {tuple(flat.shape)} matrix, got {dim}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    _, _, vh = torch.linalg.svd(flat, full_matrices=False)
    coeffs = torch.randn(count, dim, generator=g, dtype=torch.float64)
    out = (coeffs @ vh[:dim]).to(perturbations.dtype).view(count, *perturbations.shape[1:])
    return scale_to_norm(out, xi, p)


def fooled_labels(model: nn.Module, x: Tensor, v: Tensor, *, clean_pred: Tensor | None = None,
                  num_classes: int | None = None, batch_size: int = 1000) -> Tensor:  # fmt: skip
    """The clean-to-perturbed label matrix [K, K] of the points that ``v`` fools: entry (i, j)
    counts points predicted i clean and j on ``clip(x + v)``, i != j (the diagonal is 0). Its
    column sums are the "dominant labels" distribution."""
    if clean_pred is None:
        clean_pred = predict(model, x, batch_size=batch_size)
    clean_pred = clean_pred.cpu()
    adv = predict(model, perturb(x, v), batch_size=batch_size)
    k = int(num_classes) if num_classes is not None else int(max(clean_pred.max(), adv.max())) + 1
    matrix = torch.zeros(k, k, dtype=torch.long)
    fooled = adv != clean_pred
    matrix.index_put_((clean_pred[fooled], adv[fooled]), torch.ones(int(fooled.sum()), dtype=torch.long),
                      accumulate=True)  # fmt: skip
    return matrix


def energy_dimension(singular: Tensor, share: float = 0.9) -> int:
    """How many of the (descending) singular values hold ``share`` of the squared total: the
    dimension of the subspace that holds most of the boundary normals' energy."""
    energy = (singular.double() ** 2).cumsum(0) / (singular.double() ** 2).sum()
    return int((energy < share).sum()) + 1
