"""What each stage depends on beyond its data: its code and its params keys.

Both orchestrators take these from here — the Snakefile (`input: code=...`, `params:`) and
`python -m pipeline.dvcgen` (dvc.yaml `deps:` / `params:`) — so that a change to a param or a
module reruns exactly the same stages under Snakemake and DVC. `{attack}` in a key stands for the
stage's attack wildcard.
"""
from __future__ import annotations


from pipeline.config import ROOT

CODE = {
    "prepare_data": ["pipeline/prepare_data.py", "pipeline/artifacts.py", "src/advlab/data/*.py"],
    "train": ["pipeline/train.py", "src/advlab/models/*.py", "src/advlab/training/*.py"],
    "train_defense": ["pipeline/train.py", "pipeline/train_defense.py", "src/advlab/models/*.py",
                      "src/advlab/training/*.py", "src/advlab/attacks/*.py"],
    "attack": ["pipeline/attack.py", "src/advlab/attacks/*.py"],
    "evaluate": ["pipeline/evaluate.py", "src/advlab/metrics/*.py"],
    "train_copy": ["pipeline/train.py", "pipeline/train_defense.py", "pipeline/train_copy.py",
                   "src/advlab/models/*.py", "src/advlab/training/*.py", "src/advlab/attacks/*.py"],
    "madry_table": ["pipeline/madry_table.py", "src/advlab/attacks/*.py"],
    "deepfool_study": ["pipeline/deepfool_study.py", "src/advlab/attacks/*.py", "src/advlab/training/*.py",
                       "src/advlab/metrics/*.py"],
    "train_transfer": ["pipeline/train.py", "pipeline/train_transfer.py", "src/advlab/models/*.py",
                       "src/advlab/training/*.py"],
    "transfer": ["pipeline/transfer.py", "src/advlab/attacks/*.py", "src/advlab/metrics/*.py"],
    "units": ["pipeline/units.py", "src/advlab/analysis/*.py"],
    "kurakin": ["pipeline/kurakin.py", "src/advlab/attacks/*.py", "src/advlab/metrics/*.py"],
    "train_thermometer": ["pipeline/train.py", "pipeline/train_thermometer.py", "src/advlab/models/*.py",
                          "src/advlab/training/*.py", "src/advlab/defenses/*.py"],
    "substitute": ["pipeline/substitute.py", "src/advlab/attacks/*.py", "src/advlab/training/*.py",
                   "src/advlab/models/*.py"],
    "cw_study": ["pipeline/cw_study.py", "src/advlab/attacks/*.py", "src/advlab/attacks/cw/*.py"],
    "onepixel_study": ["pipeline/onepixel_study.py", "src/advlab/attacks/*.py"],
    "physical": ["pipeline/physical.py", "src/advlab/attacks/*.py", "src/advlab/transforms/*.py",
                 "src/advlab/defenses/*.py", "src/advlab/metrics/*.py"],
    "jsma_study": ["pipeline/jsma_study.py", "src/advlab/attacks/*.py", "src/advlab/metrics/*.py"],
    "obfuscated": ["pipeline/obfuscated.py", "src/advlab/attacks/*.py", "src/advlab/defenses/*.py"],
    "uap": ["pipeline/uap.py", "src/advlab/attacks/*.py"],
    "uap_study": ["pipeline/uap_study.py", "pipeline/uap.py", "pipeline/train.py", "src/advlab/attacks/*.py",
                  "src/advlab/analysis/*.py", "src/advlab/training/*.py"],
    "train_pixelcnn": ["pipeline/train_pixelcnn.py", "src/advlab/defenses/*.py", "src/advlab/training/*.py"],
    "train_gan": ["pipeline/train_gan.py", "pipeline/train_pixelcnn.py", "src/advlab/defenses/*.py",
                  "src/advlab/training/*.py"],
    "generative_defenses": ["pipeline/generative_defenses.py", "pipeline/train_pixelcnn.py", "src/advlab/attacks/*.py",
                            "src/advlab/defenses/*.py"],
    "report": ["pipeline/report.py", "pipeline/report_sections/*.py", "pipeline/report_sections/*.yaml"],
}

PARAMS = {
    "prepare_data": ["seed", "data"],
    "train": ["seed", "train"],
    "train_defense": ["seed", "train", "defenses.{defense}"],
    "attack": ["seed", "eval.n_points", "eval.batch_size", "attacks.{attack}"],
    "evaluate": ["eval", "attacks"],
    "train_copy": ["seed", "train", "defenses", "madry_table.model", "madry_table.copy_seed"],
    "madry_table": ["seed", "madry_table"],
    "deepfool_study": ["seed", "train", "deepfool_study"],
    "train_transfer": ["seed", "transfer.train", "transfer.models"],
    "transfer": ["seed", "transfer"],
    "units": ["seed", "units"],
    "kurakin": ["seed", "kurakin"],
    "train_thermometer": ["seed", "train", "obfuscated.thermometer"],
    "obfuscated": ["seed", "obfuscated"],
    "substitute": ["seed", "substitute"],
    "cw_study": ["seed", "cw_study"],
    "onepixel_study": ["seed", "onepixel_study"],
    "physical": ["seed", "physical"],
    "jsma_study": ["seed", "jsma_study"],
    "uap": ["seed", "uap"],
    "uap_study": ["seed", "train", "uap", "uap_study"],
    "train_pixelcnn": ["seed", "generative.pixelcnn"],
    "train_gan": ["seed", "generative.gan", "generative.defensegan.project"],
    "generative_defenses": ["seed", "generative"],
    "report": ["preset", "models", "defenses", "eval", "attacks", "report", "madry_table", "deepfool_study",
               "transfer", "units", "kurakin", "obfuscated", "substitute", "cw_study", "onepixel_study", "jsma_study", "physical",
               "uap", "uap_study", "generative"],
}


def code_deps(stage: str) -> list[str]:
    """Concrete files, relative to the repo root, in a stable order."""
    files = []
    for pattern in CODE[stage]:
        found = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob(pattern)) if "*" in pattern else [pattern]
        files += [f for f in found if f not in files]
    return files


def param_keys(stage: str, **wildcards) -> list[str]:
    return [key.format(**wildcards) for key in PARAMS[stage]]


def param_values(config: dict, stage: str, **wildcards) -> dict:
    """The values of a stage's params keys, for Snakemake's params-change rerun trigger."""
    out = {}
    for key in param_keys(stage, **wildcards):
        value = config
        for part in key.split("."):
            value = value[part]
        out[key] = value
    return out


__all__ = ["CODE", "PARAMS", "code_deps", "param_keys", "param_values"]
