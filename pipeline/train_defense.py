"""Stage train_defense: a defended variant <arch>-<defense> of one architecture.

    python -m pipeline.train_defense --defense distilled|madry|fast --model <arch>

- distilled: defensive distillation (Papernot et al. 2016): a teacher trained at temperature T,
  its soft labels at T, a student trained at T on them; the student is saved and used at T = 1.
- madry: PGD adversarial training (Madry et al. 2018): the loss on PGD examples (random start).
- fast: FGSM with a random start and step 1.25·eps (Wong et al. 2020), one gradient per batch.
The shared `train` keys (and per_model overrides) apply; the defense's `epochs` overrides them.
"""
from __future__ import annotations

import sys
import tempfile

from advlab.training import ArrayDataModule, fit_adversarial, fit_distillation
from pipeline.artifacts import load_prepared
from pipeline.stage import run_stage
from pipeline.train import effective_train_config, fit_devices, new_model, optimizer_kwargs, resume_point, save_trained


def fit_defended(params: dict, arch: str, defense: str, data, seed: int, stage: str = "train_defense"):
    """Train `arch` with `defense` and `seed`: (model, result, cfg, extra metrics, MLflow params).
    `stage` names the resume folder (train_copy trains the same recipe with another seed)."""
    dcfg = params["defenses"][defense]
    cfg = effective_train_config(params["train"], arch, epochs=dcfg["epochs"])
    model = new_model(arch, data, seed)
    stage_params = {"model": arch, "defense": defense, "seed": seed, "train": cfg, defense: dcfg}
    resume = resume_point(params, stage, f"{arch}-{defense}", data, seed, train=cfg, defense=dcfg)
    with tempfile.TemporaryDirectory(prefix="advlab-train-") as log_dir:
        if defense == "distilled":
            teacher = new_model(arch, data, seed)  # same initial weights, as in Carlini's re-implementation
            optim = optimizer_kwargs(cfg)
            # Two fits in one process: Lightning's DDP ranks re-run the whole command, so they cannot
            # carry a teacher over to the student's fit. One process, whatever train.devices says.
            if optim.pop("devices") > 1:
                print("train_defense: distillation fits teacher and student in one process; "
                      "train.devices is ignored", file=sys.stderr)
            optim.pop("strategy")
            teacher_result, result = fit_distillation(
                teacher, model, data.x_train, data.y_train, temperature=dcfg["temperature"],
                val_fraction=cfg["val_fraction"], batch_size=cfg["batch_size"], seed=seed, log_dir=log_dir,
                **optim, **resume)
            extra = {"temperature": float(dcfg["temperature"]),
                     "teacher_best_val_accuracy": float(teacher_result.best_val_acc)}
        else:
            datamodule = ArrayDataModule(data.x_train, data.y_train, val_fraction=cfg["val_fraction"],
                                         batch_size=cfg["batch_size"], seed=seed)
            attack = {"method": "pgd", "steps": dcfg["steps"], "random_start": dcfg["random_start"]} \
                if defense == "madry" else {"method": "fgsm_rs", "steps": 1, "random_start": True}
            result = fit_adversarial(
                model, datamodule, norm=dcfg["norm"], eps=dcfg["eps"], step_size=dcfg["step_size"],
                mix_clean=dcfg["mix_clean"], eps_warmup_epochs=dcfg["eps_warmup_epochs"], seed=seed,
                log_dir=log_dir, **attack, **optimizer_kwargs(cfg), **resume)
            extra = {"train_eps": float(dcfg["eps"])}
    return model, result, cfg, extra, stage_params


def main(params: dict, args) -> dict:
    arch, defense = args.model, args.defense
    data = load_prepared(params["preset"])
    model, result, cfg, extra, stage_params = fit_defended(params, arch, defense, data, params["seed"])
    return save_trained(params, f"{arch}-{defense}", model, result, data, cfg, training=defense,
                        extra_metrics=extra, stage_params=stage_params)


if __name__ == "__main__":
    sys.exit(run_stage("train_defense", main, arguments=("defense", "model"), gpus=fit_devices))
