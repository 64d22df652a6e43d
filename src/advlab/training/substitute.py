"""Substitute training for the practical black-box attack (Papernot et al. 2017, Algorithm 1).

Round rho: train the substitute on ``(S_rho, oracle labels)``; then, except after the last
round, synthesise ``S_{rho+1} = S_rho U {x + lambda_rho * sign(J_F(x)[oracle(x)])}`` and ask
the oracle for the labels of the new points only. With ``reservoir=(sigma, kappa)`` the
augmentations after round sigma start from kappa randomly chosen points of S_rho, so the
oracle answers ``n * 2**rho`` queries up to round sigma and ``n * 2**sigma + kappa * (rho -
sigma)`` after it (paper, section 6 "Reservoir sampling").

Every round is a Lightning fit through :func:`advlab.training.fit_module` (quiet, seeded,
deterministic, no validation split: the last epoch is kept).

Recorded choices, against cleverhans ``cleverhans_tutorials/mnist_blackbox.py`` (v3.1.0):

* ``rounds`` counts training rounds, as cleverhans' ``data_aug`` (6: five augmentations, a
  final set of 150 * 2**5 = 4,800 points). The paper's "rho = 6" is ``rounds=7``.
* The seed points are labelled by the oracle (the paper's Algorithm 1); cleverhans labels
  its 150 seeds with the ground truth.
* ``init="continue"`` keeps training the same weights (cleverhans ``init_all=False``), with
  a fresh Adam state each round; ``"reinit"`` restarts from the same seeded initial weights.
* Default substitute: cleverhans' ``ModelSubstitute``, an MLP 784-200-200-10 (ReLU) =
  ``build_model("fc200_200")``, with PyTorch's default initialisation (cleverhans: He normal).
* lambda schedule: :func:`advlab.attacks.substitute.lambda_schedule` (the paper's; cleverhans'
  sign is the opposite, see there).
* Augmentation: the gradient of the substitute's softmax probability for the oracle's label
  (the paper's F; cleverhans v3 uses the logit), synthetic points not clipped (paper and
  cleverhans); both are options, see :func:`advlab.attacks.substitute.jacobian_augmentation`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
from torch import Tensor, nn

from advlab.attacks.result import check_inputs
from advlab.attacks.substitute import LabelOracle, jacobian_augmentation, lambda_schedule
from advlab.models import build_model

from .classifier import NaturalClassifier
from .datamodule import ArrayDataModule
from .fit import TrainResult, fit_module

__all__ = ["INITS", "SUBSTITUTE_HISTORY_COLUMNS", "SubstituteResult", "train_substitute"]

INITS = ("continue", "reinit")
SUBSTITUTE_HISTORY_COLUMNS = [
    "round",  # rho, from 0
    "n_train",  # |S_rho|, the points this round trained on
    "new_points",  # points added to S_rho by the augmentation before this round (n for round 0)
    "queries",  # oracle queries (points labelled) so far, cumulative, this round's included
    "lmbda",  # lambda_rho, the step of the augmentation after this round (NaN after the last)
    "unmoved",  # points of that augmentation equal to their parent (all-zero gradient; NaN after the last)
    "train_loss",  # last epoch, on S_rho against the oracle labels
    "train_acc",
    "substitute_accuracy",  # on (x_eval, y_eval), against the true labels (NaN without x_eval)
    "oracle_agreement",  # fraction of x_eval where substitute and oracle agree (NaN without x_eval)
    "seconds",  # wall time of the round: fit, evaluation, augmentation, labelling
]


@dataclass
class SubstituteResult:
    """What :func:`train_substitute` produced.

    ``model``: the final substitute (eval mode). ``history``: one row per round,
    :data:`SUBSTITUTE_HISTORY_COLUMNS` plus whatever ``on_round`` returned. ``x_sub`` /
    ``y_sub``: the final training set and its oracle labels (the last round's ``S_rho``).
    ``queries``: total oracle queries. ``fits``: each round's :class:`TrainResult`
    (per-epoch curves). ``seconds``: wall time of the whole run.
    """

    model: nn.Module
    history: pd.DataFrame
    x_sub: Tensor
    y_sub: Tensor
    queries: int
    fits: list[TrainResult]
    seconds: float


def _ask(oracle: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """The oracle's labels for ``x``, refused unless they are bare int64 labels."""
    labels = oracle(x)
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != (x.shape[0],):
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(f"the oracle must return int64 labels of shape [{x.shape[0]}] (argmax only), got {got}")
    if labels.requires_grad:
        raise ValueError("the oracle returned labels that require grad; it must answer without gradients")
    return labels.detach().to(x.device)


def _check_args(oracle, rounds, epochs, lmbda, tau, reservoir, init, lr, batch_size, aug_batch_size, n) -> None:
    if isinstance(oracle, nn.Module):
        raise ValueError("oracle must answer labels only: wrap the model in advlab.attacks.LabelOracle")
    if not callable(oracle):
        raise ValueError(f"oracle must be callable (x -> int64 labels), got {type(oracle).__name__}")
    for name, value in (("rounds", rounds), ("epochs", epochs), ("tau", tau), ("batch_size", batch_size),
                        ("aug_batch_size", aug_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if not math.isfinite(float(lmbda)):
        raise ValueError(f"lmbda must be a finite number, got {lmbda}")
    if not (math.isfinite(float(lr)) and float(lr) > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr}")
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if reservoir is not None:
        ok = isinstance(reservoir, (tuple, list)) and len(reservoir) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in reservoir)
        if not ok or reservoir[0] < 0 or reservoir[1] < 1:
            raise ValueError(f"reservoir must be (sigma, kappa) with integers sigma >= 0, kappa >= 1, "
                             f"got {reservoir!r}")
        sigma, kappa = reservoir
        if kappa > n * 2**sigma:
            raise ValueError(f"reservoir kappa={kappa} exceeds the {n * 2**sigma} points available after "
                             f"sigma={sigma} rounds (n * 2**sigma)")


def _factory(substitute: str | Callable[[], nn.Module], x: Tensor, num_classes: int, seed: int):
    """A zero-argument builder returning the same seeded initial weights on every call."""
    if isinstance(substitute, str):
        def make() -> nn.Module:
            return build_model(substitute, in_channels=x.shape[1], image_size=tuple(x.shape[2:]),
                               num_classes=num_classes, init_seed=seed)
        return make
    if not callable(substitute):
        raise ValueError(f"substitute must be a model name or a zero-argument factory, got {type(substitute).__name__}")

    def make_seeded() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = substitute()
        if not isinstance(model, nn.Module):
            raise ValueError(f"the substitute factory must return an nn.Module, got {type(model).__name__}")
        return model

    return make_seeded


def _evaluate(model: nn.Module, x: Tensor | None, y: Tensor | None, y_oracle: Tensor | None) -> tuple[float, float]:
    if x is None:
        return math.nan, math.nan
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 1000]).argmax(dim=1) for i in range(0, len(x), 1000)])
    return float((pred == y).float().mean()), float((pred == y_oracle).float().mean())


def train_substitute(
    oracle: Callable[[Tensor], Tensor],
    x_seed: Tensor,
    *,
    substitute: str | Callable[[], nn.Module] = "fc200_200",
    num_classes: int = 10,
    rounds: int = 6,
    epochs: int = 10,
    lmbda: float = 0.1,
    tau: int = 3,
    reservoir: tuple[int, int] | None = None,
    init: str = "continue",
    clip: bool = False,
    jacobian: str = "probs",
    lr: float = 1e-3,
    batch_size: int = 128,
    aug_batch_size: int = 512,
    seed: int = 0,
    x_eval: Tensor | None = None,
    y_eval: Tensor | None = None,
    on_round: Callable[[int, nn.Module], dict | None] | None = None,
    accelerator: str = "cpu",
) -> SubstituteResult:
    """Train a substitute for ``oracle`` from the seed points ``x_seed`` (Papernot et al. 2017).

    ``oracle``: a :class:`advlab.attacks.LabelOracle` (or any callable returning int64
    labels ``[N]``; an ``nn.Module`` is refused, since it would hand out logits). Every
    point is labelled once: the seeds, then each synthetic point when it is created.

    ``substitute``: a model name of :func:`advlab.models.build_model` or a zero-argument
    factory (called under ``torch.manual_seed(seed)``). ``rounds`` training rounds of
    ``epochs`` epochs each, Adam at ``lr``, ``batch_size``; augmentation step
    ``lambda_schedule(rho, lmbda, tau)``; ``reservoir=(sigma, kappa)``; ``init``
    "continue" | "reinit"; ``clip`` and ``jacobian`` ("logits" | "probs") go to
    :func:`advlab.attacks.jacobian_augmentation`. ``seed`` fixes the initial weights,
    every round's fit (``seed + rho``) and the reservoir draws.

    With ``x_eval, y_eval`` each round records the substitute's accuracy against ``y_eval``
    and its agreement with the oracle on ``x_eval`` (the oracle's labels for ``x_eval`` are
    asked once, uncounted when it is a :class:`LabelOracle`: they measure, they do not train).
    ``on_round(rho, model)``, called after each round's evaluation with the model in eval
    mode, may return a dict of extra columns for that round's row.
    """
    check_inputs(x_seed)
    if (x_eval is None) != (y_eval is None):
        raise ValueError("give both x_eval and y_eval, or neither")
    if x_eval is not None:
        check_inputs(x_eval, y_eval)
        if tuple(x_eval.shape[1:]) != tuple(x_seed.shape[1:]):
            raise ValueError(f"x_eval images are {tuple(x_eval.shape[1:])} but x_seed's are {tuple(x_seed.shape[1:])}")
    _check_args(oracle, rounds, epochs, lmbda, tau, reservoir, init, lr, batch_size, aug_batch_size, x_seed.shape[0])
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    make = _factory(substitute, x_seed, num_classes, seed)

    t_start = time.perf_counter()
    y_eval_oracle = None
    if x_eval is not None:
        y_eval_oracle = oracle(x_eval, count=False) if isinstance(oracle, LabelOracle) else _ask(oracle, x_eval)
    reservoir_rng = torch.Generator().manual_seed(seed)

    t0 = time.perf_counter()
    x_sub = x_seed.detach().clone()
    y_sub = _ask(oracle, x_sub)
    queries, new_points = len(x_sub), len(x_sub)
    model = make()
    rows: list[dict] = []
    fits: list[TrainResult] = []
    for rho in range(rounds):
        if init == "reinit" and rho > 0:
            model = make()
        model.train()
        module = NaturalClassifier(model, lr=float(lr))
        data = ArrayDataModule(x_sub, y_sub, val_fraction=0.0, batch_size=batch_size, seed=seed + rho)
        fit = fit_module(module, data, epochs=epochs, seed=seed + rho, accelerator=accelerator)
        fits.append(fit)
        # fit_module leaves it in eval mode; evaluation and the Jacobian rely on it, and on
        # the model sitting where the data are (Lightning may have moved it).
        model.to(x_sub.device).eval()
        acc, agreement = _evaluate(model, x_eval, y_eval, y_eval_oracle)
        last = fit.history.iloc[-1]
        row = {
            "round": rho,
            "n_train": len(x_sub),
            "new_points": new_points,
            "queries": queries,
            "lmbda": math.nan,
            "unmoved": math.nan,
            "train_loss": float(last["train_loss"]),
            "train_acc": float(last["train_acc"]),
            "substitute_accuracy": acc,
            "oracle_agreement": agreement,
        }
        if on_round is not None:
            with torch.enable_grad():
                row.update(on_round(rho, model) or {})
            model.eval()

        if rho < rounds - 1:
            lam = lambda_schedule(rho, lmbda, tau)
            row["lmbda"] = lam
            if reservoir is not None and rho >= reservoir[0]:
                # Reservoir sampling: a uniform random kappa-subset of S_rho (seeded).
                idx = torch.randperm(len(x_sub), generator=reservoir_rng)[: reservoir[1]].to(x_sub.device)
                parents, parent_labels = x_sub[idx], y_sub[idx]
            else:
                parents, parent_labels = x_sub, y_sub
            x_new = jacobian_augmentation(model, parents, parent_labels, lam, clip=clip, output=jacobian,
                                          batch_size=aug_batch_size)[len(parents):]
            row["unmoved"] = int(((x_new - parents).flatten(1).abs().amax(dim=1) == 0).sum())
            y_new = _ask(oracle, x_new)  # only the new points: old labels are kept, not re-queried
            x_sub, y_sub = torch.cat([x_sub, x_new]), torch.cat([y_sub, y_new])
            queries += len(x_new)
            new_points = len(x_new)
        row["seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows.append(row)

    model.eval()
    history = pd.DataFrame(rows)
    extra_columns = [c for c in history.columns if c not in SUBSTITUTE_HISTORY_COLUMNS]
    history = history[SUBSTITUTE_HISTORY_COLUMNS + extra_columns]
    # The last round trained on |S| = n_train; the set handed back is that one (no augmentation after it).
    return SubstituteResult(model, history, x_sub, y_sub, queries, fits, time.perf_counter() - t_start)
