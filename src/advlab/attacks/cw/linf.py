"""Carlini-Wagner L-infinity attack (Carlini & Wagner 2017), as ``carlini/nn_robust_attacks:
li_attack.py`` does it, batched with every point independent.

Per point, for a shrinking bound ``tau`` (from 1.0)::

    minimise over d   c * max(0, margin(x')) + sum_i max(0, |x'_i - x0_i| - tau)

with ``x' = (tanh(s + d) + 1) / 2`` warm-started at the previous solution ``s`` and
``x0`` the shrunk original, by Adam from ``d = 0``. An inner problem is solved when an
iterate has loss ``< 1e-4 * c`` and meets the goal; then ``tau <- min(tau,
max|x' - x|) * 0.9`` and the next inner problem starts there, until ``tau <= 1/256``.
An inner problem not solved in ``max_iter`` iterations doubles ``c`` (keeping ``d`` and
the Adam state, as the reference does) until ``c >= largest_const``, where the point
stops with its last solution.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..result import AttackResult, check_inputs, make_result
from ._common import (
    first_look,
    retire,
    adam_step,
    as_bool,
    as_float,
    as_int,
    as_positive,
    check_adam,
    forward_grad,
    from_tanh_space,
    judge,
    margin,
    to_tanh_space,
)

__all__ = ["cw_linf"]

INITIAL_TAU = 1.0
MIN_TAU = 1.0 / 256  # the reference stops once tau <= 1/256


def _check(initial_const, largest_const, const_factor, decrease_factor):
    if not initial_const < largest_const:
        raise ValueError(f"initial_const must be < largest_const, got {initial_const} >= {largest_const}")
    if not (math.isfinite(const_factor) and const_factor > 1):
        raise ValueError(f"const_factor must be a finite number > 1, got {const_factor!r}")
    if not (0 < decrease_factor < 1):
        raise ValueError(f"decrease_factor must be in (0, 1), got {decrease_factor!r}")


def cw_linf(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    target: Tensor | None = None,
    max_iter: int = 1000,
    lr: float = 5e-3,
    initial_const: float = 1e-5,
    largest_const: float = 20.0,
    const_factor: float = 2.0,
    decrease_factor: float = 0.9,
    reduce_const: bool = False,
    abort_early: bool = True,
    adam: str = "tf",
    progress: bool = False,
) -> AttackResult:
    """Carlini-Wagner Linf with the reference's defaults (``li_attack.py``; see the module
    docstring for the algorithm).

    Targeted (``target`` given): reach ``target``; untargeted: leave ``y``; the goal is
    met when the margin is strictly negative (``Z_t > max_{i != t} Z_i``). The reference
    has no confidence parameter. Points that meet the goal at ``x`` are returned
    unchanged, with success, and are not optimised.

    Deviations from the reference, both because it is wrong there:

    * the reference judges an iterate by its pre-update loss but then returns (and
      re-judges the class of) the post-update image; here the iterate judged is the one
      kept, so the kept point is the one that met the test.
    * with ``abort_early=False`` the reference never accepts a solution and every point
      fails (nn_robust_attacks issue #39). Here every inner problem then runs its full
      ``max_iter`` iterations per constant, and its solution is the iterate with the
      smallest Linf distance among those that passed the test, if any.

    ``reduce_const`` halves ``c`` after each solved inner problem (reference option, off
    by default). ``adam``: "tf" (reference) or "torch"; Adam state is reset per inner
    problem, not when ``c`` doubles (reference). Points never solved come back as ``x``
    with success False.

    counts: one forward and one backward per Adam iteration, the forward at ``x`` and
    the final judging forward.
    extra: "const" (float64 [N], the c of the returned solution; 0 for points adversarial
    at x, NaN for failures), "tau" (float64 [N], the last bound tried; 0 for points
    adversarial at x), "rounds" (int64 [N], inner problems solved).
    """
    check_inputs(x, y, target)
    max_iter = as_int("max_iter", max_iter, 1)
    lr = as_positive("lr", lr)
    initial_const = as_positive("initial_const", initial_const)
    largest_const = as_positive("largest_const", largest_const)
    const_factor = as_float("const_factor", const_factor, "a finite number > 1")
    decrease_factor = as_float("decrease_factor", decrease_factor, "in (0, 1)")
    _check(initial_const, largest_const, const_factor, decrease_factor)
    reduce_const = as_bool("reduce_const", reduce_const)
    abort_early = as_bool("abort_early", abort_early)
    adam = check_adam(adam)

    dev, dt = x.device, x.dtype
    su = first_look(model, x, y, target)
    x_nat, y, cls, targeted, own_all = su.x_nat, su.y, su.cls, su.targeted, su.own_all
    done0, run, fwd, bwd = su.done0, su.run, su.fwd, su.bwd
    shape = x_nat.shape
    n = shape[0]
    r = run.numel()
    flat = x_nat.flatten(1)
    xr = flat[run]
    w0 = to_tanh_space(xr)
    i64 = dict(dtype=torch.int64, device=dev)
    f64 = dict(dtype=torch.float64, device=dev)
    zeros = torch.zeros_like(xr)
    work = {
        "x": xr, "x0s": from_tanh_space(w0)[0], "own": own_all[run], "simg": w0,
        "mod": zeros, "m": zeros.clone(), "v": zeros.clone(),
        "t": torch.zeros(r, **i64), "blk": torch.zeros(r, **i64), "nit": torch.zeros(r, **i64),
        "const": torch.full((r,), initial_const, **f64), "tau": torch.full((r,), INITIAL_TAU, **f64),
        "sol": xr.clone(), "has": torch.zeros(r, dtype=torch.bool, device=dev),
        "sol_c": torch.full((r,), math.nan, **f64), "rounds": torch.zeros(r, **i64),
        "cand": xr.clone(), "cand_d": torch.full((r,), math.inf, dtype=dt, device=dev),
    }  # fmt: skip
    out_keys = ("sol", "has", "sol_c", "nit", "tau", "rounds")
    res = {k: work[k].clone() for k in out_keys}
    act = torch.arange(r, device=dev)

    bar = tqdm(total=r, desc="cw_linf", disable=not progress, leave=False)
    while act.numel():
        w = work
        c = w["const"]
        c_dt = c.to(dt)
        xp, th = from_tanh_space(w["simg"] + w["mod"])
        own = w["own"]
        raw: list[Tensor] = []

        def f(z: Tensor, own=own, raw=raw) -> Tensor:
            raw.append(margin(z, own, targeted))
            return torch.relu(raw[0])

        _, val, g = forward_grad(model, xp, shape, c_dt, f)
        diff = xp - w["x0s"]
        over = diff.abs() - w["tau"].to(dt)[:, None]
        pen = torch.relu(over).sum(1)
        grad_w = (g + torch.where(over > 0, diff.sign(), 0.0)) * ((1.0 - th * th) * 0.5)
        w["t"] += 1
        adam_step(w["mod"], w["m"], w["v"], grad_w, w["t"], lr, adam)
        w["nit"] += 1
        w["blk"] += 1
        passed = (c_dt * val + pen < 1e-4 * c_dt) & (raw[0].detach() < 0)
        block_end = w["blk"] >= max_iter
        if abort_early:
            solved = passed
            sol_x = xp
        else:
            d = (xp - w["x"]).abs().amax(1)
            better = passed & (d < w["cand_d"])
            w["cand_d"] = torch.where(better, d, w["cand_d"])
            w["cand"] = torch.where(better[:, None], xp, w["cand"])
            solved = block_end & torch.isfinite(w["cand_d"])
            sol_x = w["cand"]
        # unsolved at the end of a block: next constant, same d and Adam state
        bump = block_end & ~solved
        w["const"] = torch.where(bump, c * const_factor, c)
        w["blk"] = torch.where(bump, 0, w["blk"])
        finished = bump & (w["const"] >= largest_const)
        if not abort_early:
            w["cand_d"] = torch.where(bump, math.inf, w["cand_d"])

        if bool(solved.any()):
            s = solved.nonzero().flatten()
            sx = sol_x[s]
            w["sol"][s] = sx
            w["has"][s] = True
            w["sol_c"][s] = c[s]
            w["rounds"][s] += 1
            actual = (sx - w["x"][s]).abs().amax(1).to(torch.float64)
            w["tau"][s] = torch.minimum(w["tau"][s], actual) * decrease_factor
            if reduce_const:
                w["const"][s] = c[s] / 2
            finished[s] |= w["tau"][s] <= MIN_TAU
            # a new inner problem from the solution: fresh d and Adam state
            w["simg"][s] = to_tanh_space(sx)
            for key in ("mod", "m", "v"):
                w[key][s] = 0.0
            w["t"][s] = 0
            w["blk"][s] = 0
            w["cand_d"][s] = math.inf

        if bool(finished.any()):
            work, act = retire(w, act, finished, res, out_keys)
            bar.update(int(finished.sum()))
    bar.close()

    fwd[run] += res["nit"]
    bwd[run] += res["nit"]
    best = x_nat.clone()
    found = done0.clone()
    best.view(n, -1)[run[res["has"]]] = res["sol"][res["has"]]
    found[run] = res["has"]
    const = torch.full((n,), math.nan, **f64)
    const[done0] = 0.0
    const[run] = res["sol_c"]
    tau = torch.zeros(n, **f64)
    tau[run] = res["tau"]
    rounds = torch.zeros(n, **i64)
    rounds[run] = res["rounds"]

    success = judge(model, x_nat, best, found, cls, targeted, fwd)
    const[~found] = math.nan
    return make_result(x_nat, best, success, fwd, bwd, const=const, tau=tau, rounds=rounds)
