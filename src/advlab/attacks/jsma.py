"""Jacobian-based saliency map attack, JSMA (Papernot et al. 2016, "The limitations of
deep learning in adversarial settings", Algorithms 1-3 with the pairwise map), in the
form of the reference code ``cleverhans/attacks/saliency_map_method.py::jsma_symbolic``
(cleverhans v3, written by the paper's first author).

For target class ``t`` and the model output ``F`` (logits by default, as cleverhans v3:
"JSMA-Z"; softmax probabilities with ``variant="softmax"``: "JSMA-F"), every iteration
takes, for each feature i of the flattened point (features are per channel, C*H*W),

    a_i = dF_t / dx_i        b_i = sum_{j != t} dF_j / dx_i,

two vector-Jacobian products on one forward pass (not the full Jacobian), and picks the
pair p != q of the search domain that maximises ``-(a_p + a_q) * (b_p + b_q)`` among
the pairs with ``a_p + a_q > 0`` and ``b_p + b_q < 0`` (``theta > 0``; for
``theta < 0`` the signs are flipped: ``< 0`` and ``> 0``). Ties go to the lowest flat
index ``p * D + q`` (p < q), what the reference's argmax over the D x D map returns.
Both features are set to ``clip(x + theta, 0, 1)``. The search domain starts as the
features below 1 (``theta > 0``) or above 0 (``theta < 0``), and a feature leaves it
once it is saturated at 1 (resp. 0) -- the paper's rule. A point stops at the first of:
``argmax F == t`` (success), fewer than 2 features left in the domain,
``floor(D * gamma / 2)`` iterations (two features per iteration), or no admissible pair.

Deliberate differences from the reference code:

* ``|theta| < 1``: cleverhans (and torchattacks) remove both chosen features from the
  domain after one use. That only equals the paper for ``|theta| >= 1``, where one step
  saturates a feature anyway; here a feature stays in the domain until saturated, as in
  the paper (Algorithm 3: "remove p1 from Gamma if X*_p1 == 0 or X*_p1 == 1").
* No admissible pair: the reference argmax then falls on the all-zero map and returns
  pair (0, 0), changing feature 0; here the point stops (``extra["stop"] == 3``).
* The pair scores are computed in tiles of at most ``max_pair_elements`` floats, never
  the B x D x D block (torchattacks issue #187: 84 GiB for one ImageNet image). Each tile
  only covers pairs p < q, half the map, and the result does not depend on the tiling.
  Before that, an exact bound discards the features that cannot be in the best pair
  (:func:`_select_pairs`): on MNIST the search then covers a few features, not 784.
* A pair whose score underflows to 0 (``|alpha * beta| < 1.4e-45`` in float32) counts as
  not admissible.

With ``variant="softmax"`` the outputs sum to 1, so ``b = -a`` up to rounding and the
map reduces to ``alpha**2`` over the pairs with ``alpha > 0`` (Carlini & Wagner's
observation on JSMA-F); it is computed the same way, as the gradient of
``sum_{j != t} F_j``, never as ``grad(sum F) - grad(F_t)``, which would cancel.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .result import AttackResult, check_inputs, make_result

__all__ = ["jsma", "random_targets", "all_targets", "STOP_REASONS"]

_VARIANTS = ("logits", "softmax")
# extra["stop"] codes, by index
STOP_REASONS = ("target_reached", "max_iter", "domain_exhausted", "no_admissible_pair")
_REACHED, _MAX_ITER, _DOMAIN, _NO_PAIR = range(4)


def random_targets(y: Tensor, num_classes: int, *, generator: torch.Generator | None = None) -> Tensor:
    """One target per point, uniform over the classes other than ``y`` (seeded 0 by default)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    shift = torch.randint(1, num_classes, y.shape, generator=generator, device=generator.device)
    return (y + shift.to(y.device)) % num_classes


def all_targets(y: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """The paper's "every source to every other class" set-up: ``(index, target)``, each
    [N * (C - 1)], so that ``jsma(model, x[index], y[index], target=target)`` attacks
    every point toward each of its C - 1 wrong classes (point-major, targets ascending)."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    n = y.shape[0]
    cls = torch.arange(num_classes, device=y.device).expand(n, num_classes)
    keep = cls != y[:, None]
    index = torch.arange(n, device=y.device)[:, None].expand(n, num_classes)[keep]
    return index, cls[keep]


def _best_pairs(u: Tensor, v: Tensor, max_pair_elements: int) -> tuple[Tensor, Tensor, Tensor]:
    """Exhaustive search, per row of ``u``, ``v`` [B, D]: the pair p < q maximising
    ``relu(u_p + u_q) * (v_p + v_q)``, ties to the lowest ``p * D + q``.

    That score is positive exactly on the admissible pairs (both sums > 0), where it
    equals ``(u_p + u_q) * (v_p + v_q)``; a single clamp suffices because a pair with a
    positive u-sum and a negative v-sum scores below 0. Returns (score [B], p [B], q [B]);
    score <= 0 means no admissible pair (then p, q are meaningless). The map is built in
    tiles [b, rows, cols] of at most ``max_pair_elements // 2`` pairs (two float tiles
    live at once); the row tiles cover the triangle q > p only. A tile's max is the
    first maximum in row-major order, and the running best is replaced on a larger
    score or an equal score at a lower flat index, so every tiling gives the same answer.
    """
    b_all, d = u.shape
    best = u.new_zeros(b_all)
    best_idx = torch.full((b_all,), d * d, dtype=torch.int64, device=u.device)
    if d < 2:
        return best, best_idx, best_idx
    pairs = max(1, max_pair_elements // 2)
    cols = min(d, pairs)
    # rows per tile: about D/8 for large D, so that the triangle saves ~40% of the
    # square; small D (the pruned searches) in one tile, as Python loops cost more there
    rows = max(1, min(pairs // cols, d - 1 if d <= 128 else -(-d // 8)))
    pts = max(1, min(b_all, pairs // (rows * cols)))
    for b0 in range(0, b_all, pts):
        b1 = min(b_all, b0 + pts)
        ub, vb = u[b0:b1], v[b0:b1]
        for r0 in range(0, d - 1, rows):
            r1 = min(d - 1, r0 + rows)
            for c0 in range(r0 + 1, d, cols):
                c1 = min(d, c0 + cols)
                s = ub[:, r0:r1, None] + ub[:, None, c0:c1]
                s.clamp_(min=0.0)
                t = vb[:, r0:r1, None] + vb[:, None, c0:c1]
                s.mul_(t)
                del t
                if c0 < r1:  # the tile reaches the diagonal: drop q <= p
                    below = (torch.arange(c0, c1, device=u.device)[None, :]
                             <= torch.arange(r0, r1, device=u.device)[:, None])  # fmt: skip
                    s.masked_fill_(below, 0.0)
                val, arg = s.view(b1 - b0, -1).max(dim=1)
                del s
                w = c1 - c0
                idx = (r0 + arg // w) * d + (c0 + arg % w)
                cur, cur_idx = best[b0:b1], best_idx[b0:b1]
                better = (val > cur) | ((val == cur) & (val > 0) & (idx < cur_idx))
                best[b0:b1] = torch.where(better, val, cur)
                best_idx[b0:b1] = torch.where(better, idx, cur_idx)
    return best, best_idx // d, best_idx % d


_SEED_FEATURES = 16  # features whose pairs give the first lower bound
_SHRINK_ROUNDS = 8


def _select_pairs(
    u: Tensor, v: Tensor, max_pair_elements: int, *, prune: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Same answer as :func:`_best_pairs`, searched over far fewer pairs.

    Out-of-domain features carry ``u = -inf``. Since ``u_q <= max u`` and ``v_q <= max v``
    (both over the domain) and float addition, multiplication and relu are monotone, no
    pair through feature p scores above ``ub_p = relu(u_p + max u) * relu(v_p + max v)``
    (in float arithmetic too). Any pair's score L is a lower bound of the best one; L is
    taken as the best pair among the 16 features of largest ``ub``. Every pair scoring
    >= L, the best pair and all its ties included, therefore lies within
    P = {p : ub_p >= L, ub_p > 0}, and the exhaustive search runs on P only, with the
    features kept in their original order so that ties still go to the lowest (p, q).
    On MNIST nets P has a handful of features (median 2-4 of 784). Rows are grouped by
    |P| rounded up to a power of two, so an outlier row does not widen the others.
    """
    b_all, d = u.shape
    if not prune or d <= _SEED_FEATURES:
        return _best_pairs(u, v, max_pair_elements)
    in_dom = u > -math.inf
    u_max = u.amax(1, keepdim=True)
    v_max = v.masked_fill(~in_dom, -math.inf).amax(1, keepdim=True)
    bound = (u + u_max).clamp_(min=0.0) * (v + v_max).clamp_(min=0.0)
    bound = torch.nan_to_num(bound, nan=0.0)  # a NaN derivative never qualifies
    seed = bound.topk(_SEED_FEATURES, dim=1).indices
    lower, _, _ = _best_pairs(u.gather(1, seed), v.gather(1, seed), max_pair_elements)
    member = (bound >= lower[:, None]) & (bound > 0)
    # both features of a pair scoring >= L are in P, so the maxima can be taken over P
    # alone; repeat while P shrinks (a few rounds of O(D))
    size = member.sum(1)
    for _ in range(_SHRINK_ROUNDS):
        u_max = u.masked_fill(~member, -math.inf).amax(1, keepdim=True)
        v_max = v.masked_fill(~member, -math.inf).amax(1, keepdim=True)
        bound = (u + u_max).clamp_(min=0.0) * (v + v_max).clamp_(min=0.0)
        member &= (bound >= lower[:, None]) & (bound > 0)
        new_size = member.sum(1)
        if torch.equal(new_size, size):
            break
        size = new_size
    width = torch.where(size <= 2, 2, 2 ** torch.ceil(torch.log2(size.clamp_min(2).double())).long())
    width = width.clamp(max=d)
    pos = torch.arange(d, device=u.device)
    # members first, in their original order, then the rest (padding)
    order = torch.where(member, pos, pos + d).argsort(dim=1)

    best = u.new_zeros(b_all)
    p = torch.zeros(b_all, dtype=torch.int64, device=u.device)
    q = torch.zeros_like(p)
    for k in torch.unique(width).tolist():
        rows = (width == k).nonzero().flatten()
        cols = order[rows, :k]
        uk = u[rows].gather(1, cols).masked_fill(~member[rows].gather(1, cols), -math.inf)
        s, i, j = _best_pairs(uk, v[rows].gather(1, cols), max_pair_elements)
        ok = s > 0
        best[rows] = s
        p[rows] = torch.where(ok, cols.gather(1, i.clamp(max=k - 1)[:, None]).squeeze(1), 0)
        q[rows] = torch.where(ok, cols.gather(1, j.clamp(max=k - 1)[:, None]).squeeze(1), 0)
    return best, p, q


def _check_params(theta: float, gamma: float, variant: str, max_pair_elements) -> int:
    if not (math.isfinite(theta) and theta != 0.0):
        raise ValueError(f"theta must be a finite non-zero number (+1: saturate up, -1: down), got {theta}")
    if not (math.isfinite(gamma) and 0.0 <= gamma <= 1.0):
        raise ValueError(f"gamma must be a fraction of the features in [0, 1], got {gamma}")
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")
    if isinstance(max_pair_elements, bool) or int(max_pair_elements) != max_pair_elements:
        raise ValueError(f"max_pair_elements must be an integer, got {max_pair_elements!r}")
    if int(max_pair_elements) < 2:
        raise ValueError(f"max_pair_elements must be >= 2 (one pair is two floats), got {max_pair_elements}")
    return int(max_pair_elements)


def jsma(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    target: Tensor,
    theta: float = 1.0,
    gamma: float = 0.145,
    variant: str = "logits",
    max_pair_elements: int = 2**25,
    progress: bool = False,
) -> AttackResult:
    """Targeted JSMA with the pairwise saliency map (see the module docstring).

    Defaults are the paper's MNIST setting: ``theta = +1`` (saturate features up),
    ``gamma = 0.145`` (at most 14.5% of the features, ``floor(D * gamma / 2)``
    iterations: 56 on MNIST). ``target`` is required: JSMA is a targeted attack
    (:func:`random_targets` and :func:`all_targets` build the usual target sets).
    ``variant``: "logits" (cleverhans v3, JSMA-Z) or "softmax" (JSMA-F).
    ``max_pair_elements`` bounds the floats of the pair-score tiles alive at once
    (default 2**25: 128 MiB in float32).

    A point already classified as ``target`` at x is returned unchanged, with success.
    Points that fail come back as ``x`` with success False.

    counts: "forward" = one per iteration plus the check of the last iterate plus one
    final evaluation of the returned points; "backward" = 2 vector-Jacobian products per
    iteration. extra: "target" (int64 [N]), "iterations" (int64 [N], pairs changed,
    also for failed points), "pixels_changed_fraction" (float [N], changed features of
    the returned x_adv / D; 0 for failures), "stop" (int64 [N], index into
    ``STOP_REASONS``: target_reached, max_iter, domain_exhausted, no_admissible_pair),
    "max_iter" (int64 [N], floor(D * gamma / 2)), "x_last" (the last iterate of every
    point, successful or not: what cleverhans and torchattacks return).
    """
    if target is None:
        raise ValueError("target is required: JSMA is a targeted attack (see random_targets / all_targets)")
    check_inputs(x, y, target)
    theta, gamma = float(theta), float(gamma)
    budget = _check_params(theta, gamma, variant, max_pair_elements)

    dev = x.device
    x_nat = x.detach()
    shape = x_nat.shape
    n, d = shape[0], x_nat[0].numel()
    y, target = y.to(dev), target.to(dev)
    max_iter = math.floor(d * gamma / 2)
    increase = theta > 0

    cur = x_nat.flatten(1).clone()
    domain = cur < 1.0 if increase else cur > 0.0
    iters = torch.zeros(n, dtype=torch.int64, device=dev)
    stop = torch.full((n,), _MAX_ITER, dtype=torch.int64, device=dev)
    fwd = torch.zeros(n, dtype=torch.int64, device=dev)
    bwd = torch.zeros(n, dtype=torch.int64, device=dev)
    active = torch.arange(n, device=dev)
    checked_classes = False

    bar = tqdm(total=max_iter, desc="jsma", disable=not progress, leave=False)
    for it in range(max_iter + 1):
        with torch.enable_grad():
            xg = cur[active].view(-1, *shape[1:]).requires_grad_(True)
            logits = model(xg)
            fwd[active] += 1
            if not checked_classes:
                if logits.dim() != 2 or logits.shape[1] < 2:
                    raise ValueError(f"the model must output [N, C >= 2] logits, got {tuple(logits.shape)}")
                if int(target.max()) >= logits.shape[1]:
                    raise ValueError(f"target holds class {int(target.max())} but the model has "
                                     f"{logits.shape[1]} classes")  # fmt: skip
                checked_classes = True
            tt = target[active]
            reached = logits.detach().argmax(1) == tt
            small = domain[active].sum(1) < 2
            stop[active[reached]] = _REACHED
            stop[active[~reached & small]] = _DOMAIN
            keep = ~reached & ~small
            if it == max_iter or not bool(keep.any()):
                break  # the rest keep the default code: max_iter
            out = logits if variant == "logits" else logits.softmax(dim=1)
            own = nn.functional.one_hot(tt, out.shape[1]).to(out.dtype)
            # a point's two products depend only on its own row: finished rows are
            # dropped afterwards, at no cost to the others' values
            (ga,) = torch.autograd.grad((out * own).sum(), xg, retain_graph=True)
            (gb,) = torch.autograd.grad((out * (1.0 - own)).sum(), xg)
        idx = active[keep]
        a, b = ga.flatten(1)[keep], gb.flatten(1)[keep]
        bwd[idx] += 2
        # u_p + u_q = +-alpha and v_p + v_q = -+beta exactly (negation is exact), so the
        # search's relu(u_p + u_q) * (v_p + v_q) is -alpha * beta on the admissible pairs
        # and <= 0 elsewhere
        u, v = (a, -b) if increase else (-a, b)
        u = u.masked_fill(~domain[idx], -math.inf)  # out-of-domain pairs get alpha = -inf
        score, p, q = _select_pairs(u, v, budget)
        found = score > 0
        stop[idx[~found]] = _NO_PAIR
        idx, p, q = idx[found], p[found], q[found]
        for f in (p, q):
            new = (cur[idx, f] + theta).clamp(0.0, 1.0)
            cur[idx, f] = new
            # the paper's rule: a feature leaves the domain once saturated
            domain[idx, f] = new < 1.0 if increase else new > 0.0
        iters[idx] += 1
        active = idx
        bar.update(1)
        bar.set_postfix(active=int(idx.numel()))
        if idx.numel() == 0:
            break
    bar.close()

    x_adv = torch.where((stop == _REACHED)[:, None], cur, x_nat.flatten(1)).view(shape)
    # judge the returned points in one batch, as every attack does
    with torch.no_grad():
        success = model(x_adv).argmax(1) == target
    fwd += 1
    lost = ~success & (stop == _REACHED)
    if bool(lost.any()):  # a float tie that flipped with the batch composition
        x_adv = torch.where(lost.view(-1, *([1] * (len(shape) - 1))), x_nat, x_adv)
        with torch.no_grad():
            success = model(x_adv).argmax(1) == target
        fwd += 1
    changed = (x_adv != x_nat).flatten(1).sum(1)
    return make_result(
        x_nat,
        x_adv,
        success,
        fwd,
        bwd,
        target=target.clone(),
        iterations=iters,
        pixels_changed_fraction=changed.to(x_nat.dtype) / d,
        stop=stop,
        max_iter=torch.full((n,), max_iter, dtype=torch.int64, device=dev),
        x_last=cur.view(shape),
    )
