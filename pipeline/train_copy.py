"""Stage train_copy: an independently trained copy of `madry_table.model` (Madry et al.'s A').

    python -m pipeline.train_copy

Same recipe as the model's own stage (natural, or <arch>-<defense>), another seed
(params seed + madry_table.copy_seed): new initial weights, batch order and attack noise.
The copy is a black-box source for the Madry table; it is never evaluated itself.
"""
from __future__ import annotations

import sys

from pipeline import paths
from pipeline.artifacts import load_prepared
from pipeline.stage import run_stage
from pipeline.train import fit_natural, save_trained
from pipeline.train_defense import fit_defended

OUTPUTS = (paths.COPY_MODEL, paths.COPY_TRAIN_METRICS, paths.COPY_TRAIN_HISTORY)


def main(params: dict, args) -> dict:
    name = params["madry_table"]["model"]
    seed = params["seed"] + params["madry_table"]["copy_seed"]
    data = load_prepared(params["preset"])
    arch, _, defense = name.partition("-")
    if defense:
        model, result, cfg, extra, stage_params = fit_defended(params, arch, defense, data, seed, stage="train_copy")
    else:
        (model, result, cfg), extra, stage_params = fit_natural(params, arch, data, seed, stage="train_copy"), {}, None
    record = save_trained(params, name, model, result, data, cfg, training=defense or "natural",
                          extra_metrics=extra, stage_params=stage_params, outputs=OUTPUTS, seed=seed)
    record.setdefault("tags", {})["advlab.model"] = name
    return record


if __name__ == "__main__":
    sys.exit(run_stage("train_copy", main))
