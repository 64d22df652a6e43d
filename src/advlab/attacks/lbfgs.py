"""Box-constrained L-BFGS attack (Szegedy et al. 2014, "Intriguing properties of
neural networks"), in the form of the reference code ``cleverhans/attacks/lbfgs.py``.

For each point, with ``t`` the target class and ``c`` a per-point constant::

    minimise   c * CE(logits(x'), t) + ||x' - x||_2^2     subject to  x' in [0, 1]^D

starting at ``x``, then a binary search on ``c`` identical to cleverhans' (and C&W's):
after a search step a point that reached its goal sets ``upper = min(upper, c)`` and
``c = (lower + upper) / 2``; one that did not sets ``lower = max(lower, c)`` and
multiplies ``c`` by 10 while no upper bound is known, else bisects. Each point keeps
the successful ``x'`` of smallest L2 distortion over all search steps (the paper's
"minimum c" is a well-known wording slip for "smallest distortion that succeeds").

The inner solver is a batched projected L-BFGS, not scipy's L-BFGS-B on the
concatenation of all points (what cleverhans does for ``batch_size > 1``). The
objective is separable, so both have the same minimisers, but a joint L-BFGS couples
the points through its curvature pairs, its shared step length and its shared
stopping test: a point's result would depend on the rest of the batch, and no point
could stop before all of them. Here every point has its own L-BFGS memory, line
search and stopping test, so a batch gives what one-by-one runs give, finished points
are frozen, and the whole thing runs on any device. The solver works in float64 on
the flattened points and casts each iterate to ``x.dtype`` before the model (the
reference pitfall); the squared distance and its gradient are computed in float64.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .result import AttackResult, check_inputs, make_result

__all__ = ["lbfgs"]

MEMORY = 10  # curvature pairs kept per point (scipy's maxcor default)
MAX_LINE_SEARCH = 20  # step halvings before a line search gives up
ARMIJO = 1e-4  # sufficient-decrease constant
_NO_UPPER = 1e10  # cleverhans' "no upper bound yet"

# (indices of the points to evaluate, their iterates [k, D] float64)
#   -> (objective [k] float64, gradient [k, D] float64, logits [k, C])
Objective = Callable[[Tensor, Tensor], tuple[Tensor, Tensor, Tensor]]


def _two_loop(g: Tensor, free: Tensor, S: Tensor, Y: Tensor) -> Tensor:
    """L-BFGS direction ``-H g`` restricted to the free coordinates, batched.

    g, free: [k, D]; S, Y: [k, m, D] (oldest first, zero rows for empty slots). Pairs
    are projected on the free coordinates; a pair whose projected curvature s'y is not
    safely positive is skipped, so H stays positive definite and the direction is a
    descent direction. Without a usable pair the direction is the steepest descent on
    the free set scaled to unit L2 length (scipy's first step, 1 / ||g||).
    """
    mask = free.to(g.dtype)
    q = g * mask
    Sf, Yf = S * mask[:, None, :], Y * mask[:, None, :]
    sy = (Sf * Yf).sum(-1)  # [k, m]
    yy = (Yf * Yf).sum(-1)
    ok = sy > 1e-10 * yy.clamp_min(torch.finfo(g.dtype).tiny)
    ok &= sy > 0
    rho = torch.where(ok, 1.0 / torch.where(ok, sy, torch.ones_like(sy)), torch.zeros_like(sy))
    m = S.shape[1]
    alpha = torch.zeros_like(sy)
    for i in range(m - 1, -1, -1):
        alpha[:, i] = rho[:, i] * (Sf[:, i] * q).sum(-1)
        q = q - alpha[:, i, None] * Yf[:, i]
    # initial scaling s'y / y'y of the newest usable pair
    has = ok.any(1)
    newest = torch.where(ok, torch.arange(m, device=g.device), -1).amax(1).clamp_min(0)
    gamma_pair = (sy / yy.clamp_min(torch.finfo(g.dtype).tiny)).gather(1, newest[:, None]).squeeze(1)
    gamma_sd = 1.0 / torch.linalg.vector_norm(q, dim=1).clamp_min(torch.finfo(g.dtype).tiny)
    r = torch.where(has, gamma_pair, gamma_sd)[:, None] * q
    for i in range(m):
        beta = rho[:, i] * (Yf[:, i] * r).sum(-1)
        r = r + Sf[:, i] * (alpha[:, i] - beta)[:, None]
    return -r * mask


def _minimize(
    fun: Objective,
    z0: Tensor,
    *,
    max_iter: int,
    tol: float,
    ftol: float,
    fwd: Tensor,
    bwd: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Minimise each row's objective over [0, 1]^D from ``z0`` [n, D] (float64),
    every row independently: projected L-BFGS with an active set and an Armijo
    backtracking search along the projection arc.

    A row stops at the first of: projected gradient ``max|P(z - g) - z| <= tol``
    (scipy's pgtol), relative decrease ``(f_old - f_new) <= ftol * max(|f_old|,
    |f_new|, 1)`` (scipy's factr test), a line search that fails along the steepest
    descent direction, or ``max_iter`` iterations. A failed line search along an
    L-BFGS direction first drops that row's memory and retries with steepest descent.
    Rows that stopped are not evaluated again. ``fwd`` and ``bwd`` get one count per
    row per objective evaluation.

    Returns the final iterates, their objective values, their logits, and the number
    of iterations per row.
    """
    n, dim = z0.shape
    dev, dt = z0.device, z0.dtype
    z = z0.clone()
    all_idx = torch.arange(n, device=dev)
    f, g, logits = fun(all_idx, z)
    fwd += 1
    bwd += 1
    S = torch.zeros(n, MEMORY, dim, device=dev, dtype=dt)
    Y = torch.zeros_like(S)
    active = torch.ones(n, dtype=torch.bool, device=dev)
    iters = torch.zeros(n, dtype=torch.int64, device=dev)

    for _ in range(max_iter):
        idx = active.nonzero().flatten()
        if idx.numel():
            zi, gi = z[idx], g[idx]
            pg = (zi - gi).clamp(0.0, 1.0) - zi
            converged = pg.abs().amax(1) <= tol
            active[idx[converged]] = False
            idx, zi, gi = idx[~converged], zi[~converged], gi[~converged]
        if idx.numel() == 0:
            break
        fi = f[idx]
        # bound-active coordinates: at a bound with the gradient pushing outwards
        free = ~(((zi <= 0.0) & (gi > 0)) | ((zi >= 1.0) & (gi < 0)))
        d = _two_loop(gi, free, S[idx], Y[idx])

        k = idx.numel()
        step_len = torch.ones(k, device=dev, dtype=dt)
        pending = torch.ones(k, dtype=torch.bool, device=dev)
        z_new, f_new, g_new = zi.clone(), fi.clone(), gi.clone()
        l_new = logits[idx].clone()
        for _ls in range(MAX_LINE_SEARCH):
            p = pending.nonzero().flatten()
            if p.numel() == 0:
                break
            zt = (zi[p] + step_len[p, None] * d[p]).clamp(0.0, 1.0)
            decrease = (gi[p] * (zt - zi[p])).sum(1)
            ft, gt, lt = fun(idx[p], zt)
            fwd[idx[p]] += 1
            bwd[idx[p]] += 1
            ok = (decrease < 0) & (ft <= fi[p] + ARMIJO * decrease)
            acc = p[ok]
            z_new[acc], f_new[acc], g_new[acc], l_new[acc] = zt[ok], ft[ok], gt[ok], lt[ok]
            pending[acc] = False
            step_len[p[~ok]] *= 0.5
        accepted = ~pending

        # failed line search: retry with steepest descent, or stop if that was it
        failed = idx[pending]
        had_memory = (S[failed].abs().amax((1, 2)) > 0) if failed.numel() else pending[:0]
        S[failed[had_memory]] = 0.0
        Y[failed[had_memory]] = 0.0
        active[failed[~had_memory]] = False

        a = idx[accepted]
        if a.numel():
            za, fa, ga = z_new[accepted], f_new[accepted], g_new[accepted]
            s, y = za - z[a], ga - g[a]
            f_old = f[a]
            z[a], f[a], g[a], logits[a] = za, fa, ga, l_new[accepted]
            iters[a] += 1
            store = (s * y).sum(1) > 1e-10 * (y * y).sum(1)
            sa = a[store]
            S[sa] = torch.cat([S[sa, 1:], s[store, None]], dim=1)
            Y[sa] = torch.cat([Y[sa, 1:], y[store, None]], dim=1)
            small = (f_old - fa) <= ftol * torch.maximum(torch.maximum(f_old.abs(), fa.abs()), torch.ones_like(fa))
            active[a[small]] = False
    return z, f, logits, iters


def _check_params(initial_const: float, binary_search_steps: int, max_iter: int, tol: float) -> None:
    if not (math.isfinite(initial_const) and initial_const > 0):
        raise ValueError(f"initial_const must be a finite number > 0, got {initial_const}")
    if binary_search_steps < 1:
        raise ValueError(f"binary_search_steps must be >= 1, got {binary_search_steps}")
    if max_iter < 0:
        raise ValueError(f"max_iter must be >= 0, got {max_iter}")
    if not (math.isfinite(tol) and tol >= 0):
        raise ValueError(f"tol must be a finite number >= 0, got {tol}")


def _as_int(name: str, value) -> int:
    if isinstance(value, bool) or int(value) != value:
        raise ValueError(f"{name} must be an integer, got {value!r}")
    return int(value)


def lbfgs(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    target: Tensor | None = None,
    initial_const: float = 1e-2,
    binary_search_steps: int = 5,
    max_iter: int = 100,
    tol: float = 1e-5,
    progress: bool = False,
) -> AttackResult:
    """Szegedy et al.'s box-constrained L-BFGS attack, with cleverhans' objective and
    binary search on the constant (see the module docstring).

    Targeted (``target`` given): the goal is ``argmax == target``. Untargeted
    (``target=None``): the class aimed at is the most likely wrong class at ``x``, the
    largest logit among the classes other than ``y`` (for a correctly classified point
    the runner-up; cleverhans' default is likewise the 2nd most probable class), and
    the goal is ``argmax != y``, any wrong class, as for every untargeted attack here.
    A point that already meets its goal at ``x`` is returned unchanged, with success,
    and is not optimised.

    Defaults are cleverhans' except ``max_iter`` (cleverhans: 1000). Each search step
    restarts the optimisation from ``x``; the solver runs at most ``max_iter`` L-BFGS
    iterations per point and step, and stops a point earlier when its projected
    gradient is below ``tol`` or its objective stops decreasing (relative decrease
    below the machine epsilon of ``x.dtype``, where the model's objective is noise).
    cleverhans' ``repeat`` (re-running the last of >= 10 steps at the upper bound) is
    not implemented.

    Points that never meet their goal come back as ``x`` with success False.
    counts: one forward and one backward per objective evaluation of the point, plus
    the forward at ``x`` and a final forward that judges the returned points.
    extra: "const" (float64 [N]; the c of the kept solution, 0 for points adversarial
    at x, NaN for points never successful), "target" (int64 [N], the class aimed at),
    "iterations" (int64 [N], L-BFGS iterations over all search steps).
    """
    check_inputs(x, y, target)
    initial_const, tol = float(initial_const), float(tol)
    binary_search_steps = _as_int("binary_search_steps", binary_search_steps)
    max_iter = _as_int("max_iter", max_iter)
    _check_params(initial_const, binary_search_steps, max_iter, tol)

    dev = x.device
    x_nat = x.detach()
    shape = x_nat.shape
    n = shape[0]
    y = y.to(dev)
    targeted = target is not None
    fwd = torch.zeros(n, dtype=torch.int64, device=dev)
    bwd = torch.zeros(n, dtype=torch.int64, device=dev)

    with torch.no_grad():
        logits0 = model(x_nat)
    fwd += 1
    if logits0.dim() != 2 or logits0.shape[1] < 2:
        raise ValueError(f"the model must output [N, C >= 2] logits, got {tuple(logits0.shape)}")
    n_classes = logits0.shape[1]
    if int(y.max()) >= n_classes:
        raise ValueError(f"y holds class {int(y.max())} but the model has {n_classes} classes")
    if targeted:
        target = target.to(dev)
        if int(target.max()) >= n_classes:
            raise ValueError(f"target holds class {int(target.max())} but the model has {n_classes} classes")
        aim = target
    else:
        aim = logits0.detach().scatter(1, y[:, None], -math.inf).argmax(1)

    def reached(logits: Tensor, idx: Tensor) -> Tensor:
        pred = logits.argmax(1)
        return pred == aim[idx] if targeted else pred != y[idx]

    all_idx = torch.arange(n, device=dev)
    done0 = reached(logits0, all_idx)  # adversarial at x already: distortion 0
    best = x_nat.clone()
    best_l2 = torch.full((n,), math.inf, dtype=torch.float64, device=dev)
    best_l2[done0] = 0.0
    kept_const = torch.full((n,), math.nan, dtype=torch.float64, device=dev)
    kept_const[done0] = 0.0
    iters = torch.zeros(n, dtype=torch.int64, device=dev)

    flat0 = x_nat.flatten(1).to(torch.float64)
    const = torch.full((n,), initial_const, dtype=torch.float64, device=dev)
    lower = torch.zeros(n, dtype=torch.float64, device=dev)
    upper = torch.full((n,), _NO_UPPER, dtype=torch.float64, device=dev)
    ftol = float(torch.finfo(x_nat.dtype).eps)
    run_idx = (~done0).nonzero().flatten()

    bar = tqdm(total=binary_search_steps, desc="lbfgs", disable=not progress, leave=False)
    for _step in range(binary_search_steps):
        if run_idx.numel() == 0:
            bar.update(binary_search_steps - _step)
            break
        c_run, x_run, aim_run = const[run_idx], flat0[run_idx], aim[run_idx]

        def objective(rows: Tensor, z: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            xe = z.to(x_nat.dtype).view(-1, *shape[1:])
            with torch.enable_grad():
                xg = xe.detach().requires_grad_(True)
                logits = model(xg)
                ce = nn.functional.cross_entropy(logits, aim_run[rows], reduction="none")
                (gce,) = torch.autograd.grad(ce.sum(), xg)
            r = z - x_run[rows]
            c = c_run[rows]
            f = c * ce.detach().to(torch.float64) + (r * r).sum(1)
            g = c[:, None] * gce.flatten(1).to(torch.float64) + 2.0 * r
            return f, g, logits.detach()

        sub_fwd = torch.zeros(run_idx.numel(), dtype=torch.int64, device=dev)
        sub_bwd = torch.zeros_like(sub_fwd)
        z, _f, logits, it = _minimize(
            objective, x_run.clone(), max_iter=max_iter, tol=tol, ftol=ftol, fwd=sub_fwd, bwd=sub_bwd
        )
        fwd[run_idx] += sub_fwd
        bwd[run_idx] += sub_bwd
        iters[run_idx] += it

        x_new = z.to(x_nat.dtype).view(-1, *shape[1:])
        ok = reached(logits, run_idx)
        l2 = torch.linalg.vector_norm((x_new - x_nat[run_idx]).flatten(1).to(torch.float64), dim=1)
        better = ok & (l2 < best_l2[run_idx])
        sel = run_idx[better]
        best[sel] = x_new[better]
        best_l2[sel] = l2[better]
        kept_const[sel] = c_run[better]

        # cleverhans' update of the constant
        c = c_run
        up = torch.where(ok, torch.minimum(upper[run_idx], c), upper[run_idx])
        lo = torch.where(ok, lower[run_idx], torch.maximum(lower[run_idx], c))
        c_next = torch.where((up < 1e9), (lo + up) / 2, torch.where(ok, c, c * 10))
        upper[run_idx], lower[run_idx], const[run_idx] = up, lo, c_next
        bar.update(1)
        bar.set_postfix(success=int((best_l2 < math.inf).sum()))
    bar.close()

    # judge the returned points in one batch; a kept point that no longer passes
    # (a float tie at the boundary) falls back to x
    with torch.no_grad():
        logits_adv = model(best)
    fwd += 1
    success = reached(logits_adv, all_idx)
    lost = ~success & (best_l2 < math.inf)
    if bool(lost.any()):
        best[lost] = x_nat[lost]
        kept_const[lost] = math.nan
        with torch.no_grad():
            success = reached(model(best), all_idx)
        fwd += 1
    return make_result(x_nat, best, success, fwd, bwd, const=kept_const, target=aim, iterations=iters)
