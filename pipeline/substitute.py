"""Stage substitute: the practical black-box attack (Papernot et al. 2017, AsiaCCS).

    python -m pipeline.substitute

The oracle is the trained `substitute.oracle`, seen only through its labels (advlab's
LabelOracle counts every query). As in the paper, the first `n_seed` test images are the
attacker's seed set S_0 and the rest of the test split is the evaluation set. Each round trains
the substitute (Lightning) on the oracle-labelled S_rho, then grows S_rho by Jacobian-based
augmentation x + lambda_rho sign(dF[O(x)]/dx) with lambda_rho = lambda (-1)^floor(rho / tau).
After every round: substitute accuracy on the evaluation set, FGSM at `transfer_eps` crafted on
it and the share of those examples the oracle misclassifies. After the last round: the FGSM eps
sweep and JSMA (random targets) crafted on the substitute, evaluated on the oracle.
"""
from __future__ import annotations

import sys

import torch

from advlab.attacks.jsma import jsma, random_targets
from advlab.attacks.substitute import LabelOracle, transfer_attack, transfer_eps_sweep
from advlab.training.substitute import train_substitute
from pipeline import paths
from pipeline.artifacts import device, load_frozen, load_prepared
from pipeline.io import write_csv, write_json
from pipeline.stage import run_stage


def main(params: dict, args) -> dict:
    preset, cfg, seed = params["preset"], params["substitute"], params["seed"]
    dev = device()
    data = load_prepared(preset)
    oracle_model = load_frozen(preset, cfg["oracle"], dev)
    oracle = LabelOracle(oracle_model)
    n_seed = cfg["n_seed"]
    if n_seed >= len(data.x_test):
        raise ValueError(f"substitute.n_seed: {n_seed} leaves no evaluation points of the {len(data.x_test)} "
                         "test images")
    x_seed = data.x_test[:n_seed].to(dev)
    end = min(len(data.x_test), n_seed + cfg["n_eval"])
    x_eval, y_eval = data.x_test[n_seed:end].to(dev), data.y_test[n_seed:end].to(dev)

    def on_round(rho, model) -> dict:
        r = transfer_attack(model, oracle, x_eval, y_eval, method="fgsm", eps=cfg["transfer_eps"])
        return {"fgsm_transfer_rate": r.transfer_rate, "fgsm_oracle_adv_error": r.oracle_adv_error}

    result = train_substitute(
        oracle, x_seed, substitute=cfg["substitute"], num_classes=data.num_classes, rounds=cfg["rounds"],
        epochs=cfg["epochs"], lmbda=cfg["lmbda"], tau=cfg["tau"],
        reservoir=tuple(cfg["reservoir"]) if cfg["reservoir"] else None, init=cfg["init"], lr=cfg["lr"],
        batch_size=cfg["batch_size"], seed=seed, x_eval=x_eval, y_eval=y_eval, on_round=on_round,
        accelerator="gpu" if dev.type == "cuda" else "cpu")
    substitute = result.model.to(dev).eval()
    for p in substitute.parameters():
        p.requires_grad_(False)
    history = result.history
    write_csv(paths.path(paths.SUBSTITUTE_ROUNDS, preset=preset), history)
    sweep = transfer_eps_sweep(substitute, oracle, x_eval, y_eval, eps_values=cfg["fgsm_eps"], method="fgsm")
    write_csv(paths.path(paths.SUBSTITUTE_SWEEP, preset=preset), sweep)

    jc = cfg["jsma"]
    n_j = min(jc["n_points"], len(x_eval))
    xj, yj = x_eval[:n_j], y_eval[:n_j]
    # A random wrong class per point; points whose target is the substitute's own label are
    # left out (the substitute already "reaches" it, there is nothing to craft).
    targets = random_targets(yj, data.num_classes, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        keep = substitute(xj).argmax(1) != targets
    xj, yj, targets = xj[keep], yj[keep], targets[keep]
    jr = transfer_attack(substitute, oracle, xj, yj, method=jsma, eps=None, target=targets,
                         theta=jc["theta"], gamma=jc["gamma"])
    jsma_untargeted = float(((jr.oracle_adv != yj) & jr.oracle_correct).sum() / max(int(jr.oracle_correct.sum()), 1))
    last = history.iloc[-1]
    metrics = {
        "queries": int(result.queries),
        "substitute_accuracy": float(last["substitute_accuracy"]),
        "oracle_agreement": float(last["oracle_agreement"]),
        "fgsm_transfer_rate": float(last["fgsm_transfer_rate"]),
        "fgsm_oracle_adv_error": float(last["fgsm_oracle_adv_error"]),
        "jsma_substitute_success": jr.substitute_success_rate,
        "jsma_transfer_misclassified": jsma_untargeted,
        "jsma_transfer_target": jr.transfer_rate,
        "jsma_pixels_changed": float(jr.attack.extra["pixels_changed_fraction"][jr.attack.success].mean())
        if bool(jr.attack.success.any()) else float("nan"),
    }
    write_json(paths.path(paths.SUBSTITUTE_METRICS, preset=preset),
               {"oracle": cfg["oracle"], "substitute": cfg["substitute"], "n_seed": n_seed,
                "n_eval": len(x_eval), "rounds": cfg["rounds"], **metrics})
    return {"params": {"substitute": cfg, "seed": seed}, "metrics": metrics,
            "curves": {c: history[c].tolist() for c in ("substitute_accuracy", "queries", "fgsm_transfer_rate")},
            "artifacts": [paths.path(paths.SUBSTITUTE_ROUNDS, preset=preset),
                          paths.path(paths.SUBSTITUTE_SWEEP, preset=preset)]}


if __name__ == "__main__":
    sys.exit(run_stage("substitute", main))
