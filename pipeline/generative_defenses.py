"""Stage generative_defenses: PixelDefend and Defense-GAN in front of a naturally trained classifier,
under no attack, naive PGD and the adaptive attack of Athalye, Carlini & Wagner (2018).

    python -m pipeline.generative_defenses

Both defenses sit in front of `generative.model` (trained on clean data):

- PixelDefend (Song et al. 2018): the PixelCNN of stage train_pixelcnn moves every pixel, in raster
  order, to its most likely level within `eps_levels` of the input's.
- Defense-GAN (Samangouei et al. 2018): the generator of stage train_gan; the input is replaced by
  G(z*), z* found by `project.steps` Adam steps from `project.restarts` random starts.

Attacks, Linf PGD at each defense's `attack.eps` on the first `n_points` test images:

- naive: white-box PGD on the defended model with the gradient autograd gives it, `naive_steps`
  steps. The exact defenses have none (an argmax over levels; an inner optimisation that is not
  unrolled): the gradient is 0, the table records its largest entry, and the iterate never leaves
  its random start. Beside it, the undefended classifier under the same PGD with `steps` steps.
- transfer: those PGD images of the classifier alone, then the defense (the defenses' own
  evaluation of attacks that ignore them).
- adaptive: BPDA through the defense (forward exact, backward the identity, or for Defense-GAN also
  the projection onto the generator's tangent space). PixelDefend is deterministic: each point stops
  at its first misclassification. Defense-GAN is random: all `steps`, the gradient averaged over
  `eot_samples` fresh sets of restarts per step (EoT), the last iterate judged by `eval_samples`.

The table also gives what each defense costs per image (the clean pass) and the attacks' seconds.
"""
from __future__ import annotations

import sys
import time

import pandas as pd
import torch
import torch.nn.functional as F

from advlab.attacks import pgd
from advlab.attacks.bpda import bpda_eot_pgd
from advlab.defenses.defensegan import DefenseGAN
from advlab.defenses.generative_checkpoint import load_generative
from advlab.defenses.pixeldefend import PixelDefend
from pipeline import paths
from pipeline.artifacts import device, load_frozen, load_prepared
from pipeline.io import save_tensors, write_csv, write_json
from pipeline.stage import run_stage
from pipeline.train_pixelcnn import check_enabled, check_images

N_EXAMPLES = 8


def _timed(fn, dev):
    """(fn(), its wall seconds), with the GPU's queued work finished at both ends."""
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda _: None)
    sync(dev)
    began = time.perf_counter()
    out = fn()
    sync(dev)
    return out, time.perf_counter() - began


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(1) == y).float().mean())


def _exact_gradient_max(defense, x, y) -> float:
    """Largest entry of the gradient a white-box attacker gets from the exact defense."""
    xg = x.clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(defense(xg), y)
        if not loss.requires_grad:
            return 0.0
        (g,) = torch.autograd.grad(loss, xg)
    return float(g.abs().max())


def _row(defense, attack, eps, acc, adv=None, x=None, seconds=None, **extra) -> dict:
    row = {"defense": defense, "attack": attack, "eps": eps, "accuracy": acc, "seconds": seconds,
           "median_linf": None, "mean_sq_l2_per_pixel": None}
    if adv is not None:
        delta = (adv - x).flatten(1)
        row["median_linf"] = float(delta.abs().max(1).values.median())
        row["mean_sq_l2_per_pixel"] = float(delta.pow(2).mean())
    row.update(extra)
    return row


def _pgd(model, x, y, acfg, seed, steps):
    return pgd(model, x, y, acfg["eps"], steps=steps, step_size=acfg["step_size"], random_start=True,
               generator=torch.Generator().manual_seed(seed))


def _adaptive(view, x, y, acfg, seed, *, early_stop, eot=1, eval_samples=1):
    return bpda_eot_pgd(view, x, y, acfg["eps"], steps=acfg["steps"], step_size=acfg["step_size"],
                        eot_samples=eot, eval_samples=eval_samples, early_stop=early_stop,
                        generator=torch.Generator().manual_seed(seed))


def _common_rows(name, defense, purify, clf, x, y, acfg, seed, dev, examples) -> list[dict]:
    """No attack, naive PGD through the exact defense, and PGD transferred from the classifier."""
    cleaned, t_clean = _timed(lambda: purify(x), dev)
    with torch.no_grad():
        clean = _accuracy(clf(cleaned), y)
    # naive: PGD on the defended model with the gradient autograd gives it (zero: the iterate never
    # leaves its random start; `naive_steps` of them, each a full pass of the defense)
    naive, t_naive = _timed(lambda: _pgd(defense, x, y, acfg, seed, acfg["naive_steps"]), dev)
    # the undefended classifier under the same PGD (its own gradient), and those images through the defense
    adv, t_transfer = _timed(lambda: _pgd(clf, x, y, acfg, seed, acfg["steps"]).x_adv, dev)
    transferred, t_apply = _timed(lambda: purify(adv), dev)
    with torch.no_grad():
        undefended, transfer = _accuracy(clf(adv), y), _accuracy(clf(transferred), y)
    examples.update({f"{name}_clean": cleaned[:N_EXAMPLES], f"{name}_transfer_adv": adv[:N_EXAMPLES],
                     f"{name}_transfer_cleaned": transferred[:N_EXAMPLES]})
    rows = [_row(name, "none", 0.0, clean, seconds=t_clean, defense_ms_per_image=1000 * t_clean / len(x)),
            _row(name, f"naive PGD ({acfg['naive_steps']} steps, its own gradient)", acfg["eps"],
                 1 - float(naive.success.float().mean()), naive.x_adv, x, t_naive, undefended_accuracy=undefended,
                 exact_gradient_max=_exact_gradient_max(defense, x[:N_EXAMPLES], y[:N_EXAMPLES])),
            _row(name, "transfer PGD (from the classifier)", acfg["eps"], transfer, adv, x, t_transfer + t_apply,
                 undefended_accuracy=undefended)]
    return rows


def run_pixeldefend(clf, pixelcnn, x, y, cfg, seed, dev, examples) -> list[dict]:
    pcfg, acfg = cfg["pixeldefend"], cfg["pixeldefend"]["attack"]
    defense = PixelDefend(clf, pixelcnn, eps_levels=pcfg["eps_levels"]).to(dev)

    def purify(v):
        with torch.no_grad():
            return defense.transform(v)

    rows = _common_rows("pixeldefend", defense, purify, clf, x, y, acfg, seed, dev, examples)
    # deterministic: a point stops at its first misclassification (Athalye et al.'s attack does)
    adaptive, t_adaptive = _timed(lambda: _adaptive(defense.bpda(), x, y, acfg, seed, early_stop=True), dev)
    examples["pixeldefend_identity_adv"] = adaptive.x_adv[:N_EXAMPLES]
    examples["pixeldefend_identity_cleaned"] = purify(adaptive.x_adv[:N_EXAMPLES])
    rows.append(_row("pixeldefend", "BPDA (identity)", acfg["eps"], 1 - float(adaptive.success.float().mean()),
                     adaptive.x_adv, x, t_adaptive, mean_steps=float(adaptive.extra["iterations"].float().mean())))
    return rows


def run_defensegan(clf, generator, x, y, cfg, seed, dev, examples) -> list[dict]:
    dcfg = cfg["defensegan"]
    pcfg, acfg = dcfg["project"], dcfg["attack"]

    def defense(approx: str) -> DefenseGAN:
        return DefenseGAN(clf, generator, restarts=pcfg["restarts"], steps=pcfg["steps"], lr=pcfg["lr"],
                          approx=approx, seed=seed).to(dev)

    d = defense("identity")
    rows = _common_rows("defensegan", d, lambda v: d.project(v)[0], clf, x, y, acfg, seed, dev, examples)
    eot = acfg["eot_samples"]
    for approx in dcfg["approx"]:
        d = defense(approx)
        # random: no early stop (one lucky set of restarts proves nothing); the last iterate is judged
        adaptive, t_adaptive = _timed(lambda: _adaptive(d.bpda(), x, y, acfg, seed, early_stop=False, eot=eot,
                                                        eval_samples=acfg["eval_samples"]), dev)
        examples[f"defensegan_{approx}_adv"] = adaptive.x_adv[:N_EXAMPLES]
        examples[f"defensegan_{approx}_cleaned"] = d.project(adaptive.x_adv[:N_EXAMPLES])[0]
        name = f"BPDA ({approx})" + (f" + EoT x{eot}" if eot > 1 else "")
        rows.append(_row("defensegan", name, acfg["eps"], 1 - float(adaptive.success.float().mean()), adaptive.x_adv,
                         x, t_adaptive))
    return rows


def main(params: dict, args) -> dict:
    preset, seed, cfg = params["preset"], params["seed"], params["generative"]
    check_enabled(params, "generative_defenses")
    dev = device()
    data = load_prepared(preset)
    check_images(data, "generative_defenses", params)
    clf = load_frozen(preset, cfg["model"], dev)
    nets = {}
    for pattern, kind, name in ((paths.PIXELCNN_MODEL, "pixelcnn", "pixelcnn"), (paths.GAN_MODEL, "dcgan", "generator")):
        path = paths.path(pattern, preset=preset)
        loaded, meta = load_generative(path, kind)
        if meta.get("data_checksum") != data.meta["checksum"]:
            raise ValueError(f"{path}: trained on other data (checksum {str(meta.get('data_checksum'))[:12]}…, this "
                             f"preset's {data.meta['checksum'][:12]}…); rerun its training stage")
        nets[kind] = loaded[name].to(dev)
    pixelcnn, generator = nets["pixelcnn"], nets["dcgan"]
    for net in (pixelcnn, generator):
        for p in net.parameters():
            p.requires_grad_(False)
    n = min(cfg["n_points"], len(data.x_test))
    x, y = data.x_test[:n].to(dev), data.y_test[:n].to(dev)
    with torch.no_grad():
        undefended = _accuracy(clf(x), y)
    examples = {"x": x[:N_EXAMPLES], "y": y[:N_EXAMPLES]}
    rows = run_pixeldefend(clf, pixelcnn, x, y, cfg, seed, dev, examples)
    rows += run_defensegan(clf, generator, x, y, cfg, seed, dev, examples)
    frame = pd.DataFrame(rows)
    write_csv(paths.path(paths.GENERATIVE_TABLE, preset=preset), frame)
    save_tensors(paths.path(paths.GENERATIVE_EXAMPLES, preset=preset), examples)
    metrics = {"undefended.clean_acc": undefended}
    for r in rows:
        kind = r["attack"].split(" ")[0]
        key = {"none": "clean", "naive": "naive", "transfer": "transfer"}.get(kind)
        key = key or "adaptive_" + r["attack"].split("(")[1].split(")")[0]
        metrics[f"{r['defense']}.{key}_acc"] = r["accuracy"]
        if kind == "naive":
            metrics[f"{r['defense']}.undefended_pgd_acc"] = r["undefended_accuracy"]
    # deterministic (compared bit for bit across runs): the costs per image are in the table and MLflow
    write_json(paths.path(paths.GENERATIVE_METRICS, preset=preset),
               {"model": cfg["model"], "n_points": n, "image": list(x.shape[1:]), "accuracy": metrics})
    costs = {f"{r['defense']}.ms_per_image": r["defense_ms_per_image"] for r in rows if r["attack"] == "none"}
    return {"params": {"generative": cfg, "n_points": n, "seed": seed}, "metrics": {**metrics, **costs},
            "artifacts": [paths.path(paths.GENERATIVE_TABLE, preset=preset)]}


if __name__ == "__main__":
    sys.exit(run_stage("generative_defenses", main))
