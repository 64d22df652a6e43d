"""The JSMA paper's report metrics (Papernot et al. 2016, "The limitations of deep learning
in adversarial settings", Section V): success rate per (source, target) class pair, the
hardness of a pair, the adversarial distance A(X, t) and the robustness R(F).

Tensors in, float64 tensors (or a float) out, on the CPU.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = [
    "success_matrix",
    "hardness_matrix",
    "adversarial_distance",
    "adversarial_distance_matrix",
    "robustness",
]

_VARIANTS = ("logits", "softmax")


def _as_tensor(a) -> Tensor:
    t = a.detach() if isinstance(a, Tensor) else torch.as_tensor(a)
    return t.cpu()


def success_matrix(source_labels, targets, success, num_classes: int) -> Tensor:
    """Success rate of the attacks from source class s to target class t: [C, C] float64,
    rows = source, columns = target, NaN where no attack had that (s, t).

    ``source_labels``, ``targets`` (int) and ``success`` (bool) are per attack, [K].
    """
    s = _as_tensor(source_labels).long().flatten()
    t = _as_tensor(targets).long().flatten()
    ok = _as_tensor(success).bool().flatten()
    if not (s.numel() == t.numel() == ok.numel()):
        raise ValueError(f"source_labels, targets and success differ in length: {s.numel()}, {t.numel()}, {ok.numel()}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if s.numel() and (int(torch.minimum(s.min(), t.min())) < 0 or int(torch.maximum(s.max(), t.max())) >= num_classes):
        raise ValueError(f"class indices must lie in [0, {num_classes})")
    cell = s * num_classes + t
    total = torch.bincount(cell, minlength=num_classes**2).double()
    hits = torch.bincount(cell[ok], minlength=num_classes**2).double()
    rate = torch.where(total > 0, hits / total.clamp_min(1), torch.full_like(total, math.nan))
    return rate.view(num_classes, num_classes)


def _trapezoid(y: Tensor, x: Tensor) -> Tensor:
    """Trapezoid rule along dim 0 of y [K, ...] over the abscissae x [K, ...] (broadcast)."""
    return ((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2).sum(0)


def hardness_matrix(gammas, success_matrices, *, distortions=None, normalize: bool = False) -> Tensor:
    """Per (source, target) pair, the area that the paper's hardness H(s, t) measures, by
    the trapezoid rule over the K tried maximum distortions ``gammas`` [K] (sorted here).

    ``success_matrices`` [K, C, C]: :func:`success_matrix` of the attack run with each
    gamma. Two forms:

    * ``distortions=None`` (default): ``sum_k (g_{k+1} - g_k) (tau_{k+1} + tau_k) / 2``,
      the area under the success-rate-vs-gamma curve. Larger = easier pair. With
      ``normalize=True`` it is divided by ``g_K - g_1``: the mean success rate over the
      tried range, in [0, 1] (unnormalised it is in [0, g_K - g_1]).
    * ``distortions`` [K, C, C] (or [K], broadcast): the paper's Eq. (11) form,
      ``H(s,t) = integral of eps d tau ~ sum_k (tau_{k+1} - tau_k) (eps_{k+1} + eps_k) / 2``,
      the area under the distortion-vs-success-rate curve, where ``eps_k`` is the mean
      fraction of features changed at gamma_k (the paper's epsilon(s, t, tau)); passing
      ``gammas`` itself uses the budget as the distortion. Larger = harder pair.
      ``normalize`` is ignored (the value is already a fraction of the features times a
      success rate). By summation by parts, with eps_k = g_k the two forms add up to
      ``g_K tau_K - g_1 tau_1`` exactly.

    The paper used K = 9 budgets (0.3%, 1.3%, 2.6%, 5.1%, 7.7%, 10.2%, 12.8%, 25.5%,
    38.3% of the 784 MNIST features; recalled, not re-read). NaN cells stay NaN.
    """
    g = _as_tensor(gammas).double().flatten()
    tau = _as_tensor(success_matrices).double()
    if tau.dim() != 3 or tau.shape[0] != g.numel() or tau.shape[1] != tau.shape[2]:
        raise ValueError(f"success_matrices must be [K, C, C] with K = len(gammas) = {g.numel()}, "
                         f"got {tuple(tau.shape)}")  # fmt: skip
    if g.numel() < 2:
        raise ValueError("hardness needs at least 2 gammas (an area under a curve)")
    if torch.unique(g).numel() != g.numel():
        raise ValueError("gammas must be distinct")
    order = g.argsort()
    g, tau = g[order], tau[order]
    if distortions is None:
        area = _trapezoid(tau, g[:, None, None])
        return area / (g[-1] - g[0]) if normalize else area
    eps = _as_tensor(distortions).double()
    if eps.dim() == 1:
        if eps.numel() != g.numel():
            raise ValueError(f"distortions has {eps.numel()} entries, gammas {g.numel()}")
        eps = eps[order][:, None, None].expand_as(tau)
    else:
        if eps.shape != tau.shape:
            raise ValueError(f"distortions must be [K] or shaped like success_matrices {tuple(tau.shape)}, "
                             f"got {tuple(eps.shape)}")  # fmt: skip
        eps = eps[order]
    return _trapezoid(eps, tau)


def _check_variant(variant: str) -> None:
    if variant not in _VARIANTS:
        raise ValueError(f"variant must be one of {_VARIANTS}, got {variant!r}")


def _outputs(model: nn.Module, xg: Tensor, variant: str) -> Tensor:
    logits = model(xg)
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"the model must output [N, C >= 2] logits, got {tuple(logits.shape)}")
    return logits if variant == "logits" else logits.softmax(dim=1)


def _distance(out: Tensor, xg: Tensor, target: Tensor, retain: bool) -> Tensor:
    """1 - fraction of features with S[i] > 0, from two vector-Jacobian products:
    a = grad of F_t and b = grad of sum_{j != t} F_j (not grad(sum F) - a, which cancels)."""
    own = nn.functional.one_hot(target, out.shape[1]).to(out.dtype)
    (a,) = torch.autograd.grad((out * own).sum(), xg, retain_graph=True)
    (b,) = torch.autograd.grad((out * (1.0 - own)).sum(), xg, retain_graph=retain)
    # S[i] = a_i * |b_i| if a_i > 0 and b_i < 0, else 0: S[i] > 0 iff both signs hold
    positive = ((a > 0) & (b < 0)).flatten(1).double().mean(1)
    return (1.0 - positive).cpu()


def adversarial_distance(model: nn.Module, x: Tensor, target: Tensor, *, variant: str = "logits") -> Tensor:
    """The paper's adversarial distance ``A(X, t) = 1 - (1/M) #{i : S(X, t)[i] > 0}`` [N]
    (float64), with the single-feature saliency map of increasing features
    ``S[i] = dF_t/dx_i * |sum_{j != t} dF_j/dx_i|`` if ``dF_t/dx_i > 0`` and the sum < 0,
    else 0, over all M = C*H*W features. Near 1: few features push towards t (hard to
    reach); near 0: many do.

    F is the logits (``variant="logits"``) or the softmax (``"softmax"``). One forward
    pass and two vector-Jacobian products, taken with respect to the input only.
    """
    _check_variant(variant)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        out = _outputs(model, xg, variant)
        return _distance(out, xg, target.to(x.device), retain=False)


def adversarial_distance_matrix(model: nn.Module, x: Tensor, y: Tensor | None = None, *,
                                variant: str = "logits") -> Tensor:  # fmt: skip
    """``A(X, t)`` for every class t: [N, C] float64, NaN at ``t = y`` when ``y`` is given
    (the input to :func:`robustness`). One forward pass and 2 C vector-Jacobian products,
    the same two per target as :func:`adversarial_distance` (so the columns equal its
    values exactly: features whose summed derivative is 0 up to rounding would otherwise
    flip sign between two ways of summing)."""
    _check_variant(variant)
    n = x.shape[0]
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        out = _outputs(model, xg, variant)
        c = out.shape[1]
        cols = [
            _distance(out, xg, torch.full((n,), t, dtype=torch.int64, device=x.device), retain=t < c - 1)
            for t in range(c)
        ]
    dist = torch.stack(cols, dim=1)
    if y is not None:
        dist[torch.arange(n), y.cpu().long()] = math.nan
    return dist


def robustness(a_matrix) -> float:
    """The paper's robustness of a model, ``R(F) = mean over X of min_{t != y} A(X, t)``.

    ``a_matrix`` [N, C] holds ``A(X, t)`` with NaN at the excluded classes (as
    :func:`adversarial_distance_matrix` gives with ``y``); NaN entries are skipped. NaN
    when there are no points."""
    a = _as_tensor(a_matrix).double()
    if a.dim() != 2:
        raise ValueError(f"a_matrix must be [N, C], got shape {tuple(a.shape)}")
    if a.shape[0] == 0:
        return math.nan
    per_point = torch.where(torch.isnan(a), torch.full_like(a, math.inf), a).amin(1)
    if bool(torch.isinf(per_point).any()):
        raise ValueError("a row of a_matrix has no finite entry (no target class left)")
    return float(per_point.mean())


def hardness_from_run(source_labels, targets, success, iterations, changed_fraction, gammas, *,
                      num_features: int, num_classes: int) -> Tensor:
    """The paper's hardness matrix from ONE JSMA run made with the largest budget.

    JSMA is greedy and deterministic, so a run with budget g is the first
    ``floor(num_features * g / 2)`` iterations of the run with a larger budget: an attack
    succeeds within g iff it succeeded with at most that many iterations. For each g of
    ``gammas`` this gives the success matrix tau_g and the mean share of features changed
    over those successes per pair, eps_g (0 where there is none); the result is
    :func:`hardness_matrix` with ``distortions`` (the paper's form, larger = harder).
    Per-attack inputs are [K]; ``gammas`` must hold at least 2 distinct values.
    """
    s = _as_tensor(source_labels).long().flatten()
    t = _as_tensor(targets).long().flatten()
    ok = _as_tensor(success).bool().flatten()
    iters = _as_tensor(iterations).long().flatten()
    frac = _as_tensor(changed_fraction).double().flatten()
    gammas = sorted(float(g) for g in gammas)
    cell = s * num_classes + t
    taus, epss = [], []
    for g in gammas:
        within = ok & (iters <= math.floor(num_features * g / 2))
        taus.append(success_matrix(s, t, within, num_classes))
        total = torch.bincount(cell[within], weights=frac[within], minlength=num_classes**2)
        count = torch.bincount(cell[within], minlength=num_classes**2).double()
        epss.append(torch.where(count > 0, total / count.clamp_min(1), torch.zeros_like(total))
                    .view(num_classes, num_classes))
    return hardness_matrix(gammas, torch.stack(taus), distortions=torch.stack(epss))


def mean_by_source(a_matrix, labels, num_classes: int) -> Tensor:
    """[C, C]: row s is the NaN-ignoring mean of the rows of ``a_matrix`` [N, C] whose label is s
    (NaN rows for classes without points), e.g. A(X, t) averaged per (source, target) pair."""
    a = _as_tensor(a_matrix).double()
    lab = _as_tensor(labels).long().flatten()
    out = torch.full((num_classes, a.shape[1]), math.nan, dtype=torch.float64)
    for cls in lab.unique().tolist():  # one row per class, not per point
        out[cls] = torch.nanmean(a[lab == cls], dim=0)
    return out
