"""Carlini-Wagner L2 attack (Carlini & Wagner 2017), as ``carlini/nn_robust_attacks:
l2_attack.py`` does it, batched with every point independent.

For each point, with ``w0 = atanh((2x - 1) * 0.999999)``, ``x' = (tanh(w0 + d) + 1) / 2``::

    minimise over d   ||x' - x0||_2^2 + c * max(0, margin(x') + kappa)

where ``x0 = (tanh(w0) + 1) / 2`` is the shrunk original (the reference measures the
distance there; it differs from x by at most 5e-7 per pixel), ``margin`` is
``max_{i != t} Z_i - Z_t`` (targeted) or ``Z_y - max_{i != y} Z_i`` (untargeted) on the
logits Z, by Adam from ``d = 0``, then a per-point binary search on ``c``.
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

__all__ = ["cw_l2"]

_NO_UPPER = 1e10  # the reference's "no upper bound yet"


def _check_kappa(kappa) -> float:
    k = as_float("kappa", kappa, "a finite number >= 0")
    if not (math.isfinite(k) and k >= 0):
        raise ValueError(f"kappa must be a finite number >= 0, got {kappa!r}")
    return k


def cw_l2(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    target: Tensor | None = None,
    kappa: float = 0.0,
    binary_search_steps: int = 9,
    max_iter: int = 10000,
    lr: float = 1e-2,
    initial_const: float = 1e-3,
    abort_early: bool = True,
    adam: str = "tf",
    progress: bool = False,
) -> AttackResult:
    """Carlini-Wagner L2 with the reference's defaults (``l2_attack.py``).

    Targeted (``target`` given): reach ``target`` with confidence ``kappa``
    (``Z_t - kappa > max_{i != t} Z_i``); untargeted: leave ``y``
    (``Z_y + kappa < max_{i != y} Z_i``), the comparison as corrected in the reference
    (commit 8118735). Points that already meet this at ``x`` are returned unchanged,
    with success, and are not optimised.

    Each of the ``binary_search_steps`` steps restarts Adam (state and ``d = 0``; the
    reference re-initialises its variables) and runs up to ``max_iter`` iterations at
    the point's current ``c``. Every iterate is judged before its update, as the
    reference's ``sess.run([train, loss, ...])`` returns the pre-update values; the
    successful iterate closest to the shrunk original over all iterations of all steps is kept
    (``o_bestl2``). With ``abort_early`` a point stops its current step when, at an
    iteration that is a multiple of ``max_iter // 10`` (at least 1), its loss exceeds
    0.9999 times its loss at the previous such check (the reference tests the loss
    summed over its batch; per point is the reference at batch size 1, and makes a
    batch give what one-by-one runs give). That checking iterate is not recorded, as in
    the reference. After each step, per point: found an adversarial ->
    ``upper = min(upper, c)``; else ``lower = max(lower, c)``; then
    ``c = (lower + upper) / 2`` if ``upper < 1e9`` else ``c * 10`` on failure. With
    ``binary_search_steps >= 10`` the last step runs at ``c = upper`` (reference and
    foolbox).

    Every point runs its own search: a point that aborts or ends a step goes straight on
    to its next step while the others continue, so the batch stays full (a batch gives
    exactly what one-by-one runs give, only faster); finished points leave the batch.

    The distance minimised and compared is the reference's, to the shrunk original;
    ``x_adv`` and ``norms`` are measured against the real ``x``. ``adam``: "tf" is the
    reference's TensorFlow 1 Adam, "torch" PyTorch's / foolbox's (see
    :func:`advlab.attacks.cw._common.adam_step`; they differ on saturated pixels).

    Points never successful come back as ``x`` with success False (the reference
    returns an all-zero image there).
    counts: one forward and one backward per Adam iteration of the point, the forward
    at ``x`` and the final forward that judges the returned points.
    extra: "const" (float64 [N]; the c with which the kept point was found, 0 for points
    adversarial at x, NaN for failures), "best_l2" (float64 [N]; its distance to the
    shrunk original, the reference's ``sqrt(o_bestl2)``; 0 for points adversarial at x,
    inf for failures), "const_lower" / "const_upper" (float64 [N]; the binary search's
    final bounds: the largest c that found nothing and the smallest that found an
    adversarial, 0 / inf where there is none; 0 / 0 for points adversarial at x).
    """
    check_inputs(x, y, target)
    kappa = _check_kappa(kappa)
    binary_search_steps = as_int("binary_search_steps", binary_search_steps, 1)
    max_iter = as_int("max_iter", max_iter, 0)
    lr = as_positive("lr", lr)
    initial_const = as_positive("initial_const", initial_const)
    abort_early = as_bool("abort_early", abort_early)
    adam = check_adam(adam)

    dev, dt = x.device, x.dtype
    su = first_look(model, x, y, target, kappa)
    x_nat, y, cls, targeted, own_all = su.x_nat, su.y, su.cls, su.targeted, su.own_all
    done0, run, fwd, bwd = su.done0, su.run, su.fwd, su.bwd
    shape = x_nat.shape
    n = shape[0]
    r = run.numel()
    flat = x_nat.flatten(1)
    w0 = to_tanh_space(flat[run])
    i64 = dict(dtype=torch.int64, device=dev)
    f64 = dict(dtype=torch.float64, device=dev)
    zeros = torch.zeros_like(w0)
    # working rows: the points still searching, each at its own search step and iteration
    work = {
        "w0": w0, "x0s": from_tanh_space(w0)[0], "own": own_all[run],
        "const": torch.full((r,), initial_const, **f64), "lower": torch.zeros(r, **f64),
        "upper": torch.full((r,), _NO_UPPER, **f64),
        "step": torch.zeros(r, **i64), "it": torch.zeros(r, **i64), "nit": torch.zeros(r, **i64),
        "mod": zeros, "m": zeros.clone(), "v": zeros.clone(),
        "prev": torch.full((r,), math.inf, dtype=dt, device=dev),
        "found": torch.zeros(r, dtype=torch.bool, device=dev),  # in the current search step
        "bx": flat[run].clone(), "bd": torch.full((r,), math.inf, dtype=dt, device=dev),
        "bc": torch.full((r,), math.nan, **f64),
    }  # fmt: skip
    out_keys = ("bx", "bd", "bc", "nit", "lower", "upper")
    res = {k: work[k].clone() for k in out_keys}
    act = torch.arange(r, device=dev)
    check_every = max(1, max_iter // 10)
    repeat = binary_search_steps >= 10  # the reference's last step at c = upper

    bar = tqdm(total=r * binary_search_steps, desc="cw_l2", disable=not progress, leave=False)
    while act.numel() and max_iter > 0:
        w = work
        c = w["const"].to(dt)
        xp, th = from_tanh_space(w["w0"] + w["mod"])
        own = w["own"]
        raw: list[Tensor] = []

        def f6(z: Tensor, own=own, raw=raw) -> Tensor:
            raw.append(margin(z, own, targeted) + kappa)
            return torch.relu(raw[0])

        _, val, g = forward_grad(model, xp, shape, c, f6)
        diff = xp - w["x0s"]
        d2 = (diff * diff).sum(1)
        grad_w = (g + 2.0 * diff) * ((1.0 - th * th) * 0.5)
        checked = w["it"] % check_every == 0  # before this iteration's count
        w["it"] += 1
        w["nit"] += 1
        adam_step(w["mod"], w["m"], w["v"], grad_w, w["it"], lr, adam)
        ok = raw[0].detach() < 0  # the goal with confidence kappa, strictly
        if abort_early:
            # the reference breaks before recording this iterate
            loss = d2 + c * val
            stop = checked & (loss > 0.9999 * w["prev"])
            w["prev"] = torch.where(checked, loss, w["prev"])
            ok &= ~stop
            end = stop | (w["it"] >= max_iter)
        else:
            end = w["it"] >= max_iter
        w["found"] |= ok
        better = ok & (d2 < w["bd"])
        w["bd"] = torch.where(better, d2, w["bd"])
        w["bx"] = torch.where(better[:, None], xp, w["bx"])
        w["bc"] = torch.where(better, w["const"], w["bc"])
        if not bool(end.any()):
            continue

        # end of a search step for these points: the reference's update of c, fresh Adam
        e = end.nonzero().flatten()
        ok_e, c_e = w["found"][e], w["const"][e]
        up = torch.where(ok_e, torch.minimum(w["upper"][e], c_e), w["upper"][e])
        lo = torch.where(ok_e, w["lower"][e], torch.maximum(w["lower"][e], c_e))
        c_next = torch.where(up < 1e9, (lo + up) / 2, torch.where(ok_e, c_e, c_e * 10))
        w["step"][e] += 1
        if repeat:
            last = w["step"][e] == binary_search_steps - 1
            c_next = torch.where(last, torch.clamp(up, max=_NO_UPPER), c_next)
        w["upper"][e], w["lower"][e], w["const"][e] = up, lo, c_next
        for key in ("mod", "m", "v"):
            w[key][e] = 0.0
        w["it"][e] = 0
        w["prev"][e] = math.inf
        w["found"][e] = False
        bar.update(int(e.numel()))
        finished = w["step"] >= binary_search_steps
        if bool(finished.any()):
            work, act = retire(w, act, finished, res, out_keys)
    bar.close()

    fwd[run] += res["nit"]
    bwd[run] += res["nit"]
    best = x_nat.clone()
    found = done0.clone()
    hit = torch.isfinite(res["bd"])
    best.view(n, -1)[run[hit]] = res["bx"][hit]
    found[run] = hit
    best_l2 = torch.full((n,), math.inf, **f64)
    best_l2[done0] = 0.0
    best_l2[run] = res["bd"].to(torch.float64).sqrt()
    kept_const = torch.full((n,), math.nan, **f64)
    kept_const[done0] = 0.0
    kept_const[run] = res["bc"]
    # the search bounds: largest c that failed, smallest that succeeded (inf: none)
    const_lower = torch.zeros(n, **f64)
    const_lower[run] = res["lower"]
    const_upper = torch.zeros(n, **f64)
    const_upper[run] = torch.where(res["upper"] < 1e9, res["upper"], math.inf)

    success = judge(model, x_nat, best, found, cls, targeted, fwd)
    lost = ~found & ~done0
    best_l2[lost] = math.inf
    kept_const[lost] = math.nan
    return make_result(x_nat, best, success, fwd, bwd, const=kept_const, best_l2=best_l2,
                       const_lower=const_lower, const_upper=const_upper)
