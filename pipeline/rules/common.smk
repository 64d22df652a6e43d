# Shared set-up: params validated (one schema with the stage commands) before any job starts,
# and the stages pointed at the config this invocation was given.

import hashlib
import json
import os
import sys

sys.path.insert(0, workflow.basedir)

from snakemake.utils import validate

from pipeline import dag
from pipeline import paths as P
from pipeline.config import ParamsError, SCHEMA_PATH
from pipeline.config import validate as validate_params

try:
    validate_params(config, source="params (params.yaml + --configfile/--config)")
except ParamsError as exc:
    raise WorkflowError(str(exc)) from None
validate(config, str(SCHEMA_PATH))

# Torch rules take every core given to Snakemake (see the comment in train.smk). Commands that
# run no job (--report, --lint, a dry run without --cores) need no number.
try:
    TORCH_THREADS = workflow.cores
except WorkflowError:
    TORCH_THREADS = 1

# GPU slots: rules that use a GPU when there is one declare `resources: gpu=N`, and Snakemake starts
# no more of them at once than there are visible cards (ADVLAB_GPUS=N overrides the count; a
# `--resources gpu=N` or a profile's value wins). Which card a job takes, the stage claims itself
# (pipeline/devices.py). Single-thread rules (attack, train_transfer, uap) take a slot only where
# there is a GPU to share; on a CPU-only machine they run side by side on the cores.
from pipeline.devices import visible_gpus

GPU_IDS = visible_gpus()
if "gpu" not in dict(workflow.resource_settings.resources):
    workflow.register_resource("gpu", max(1, len(GPU_IDS)))
LIGHT_GPU = 1 if GPU_IDS else 0


def train_gpus(stage):
    """GPU slots of a training job: its `devices` (DDP ranks) on a GPU box, else one."""

    def slots(wildcards):
        if not GPU_IDS:
            return 1
        arch = wildcards.get("arch") or wildcards.get("model")
        if stage == "train_defense" and wildcards.get("defense") == "distilled":
            return 1
        train = config["train"]
        return {**train, **(train.get("per_model") or {}).get(arch, {})}["devices"]

    return slots

PRESET = config["preset"]
MODELS = config["models"]  # naturally trained architectures
DEFENDED = [f"{arch}-{defense}" for defense, cfg in config["defenses"].items() for arch in cfg["models"]]
TRAINED = MODELS + DEFENDED
EVAL_MODELS = config["eval"]["models"]  # what the attacks run on: natural and <arch>-<defense>
ATTACKS = config["eval"]["attacks"]

# Stages read $ADVLAB_PARAMS: the validated config of this invocation (presets and --config
# overrides included), stored under a content-addressed name so that concurrent invocations and
# dry runs never overwrite each other's file. The shell commands stay identical to dvc.yaml's.
_resolved = json.dumps(config, sort_keys=True)
_params_file = os.path.join(
    workflow.basedir, ".snakemake", "advlab", f"params-{hashlib.sha256(_resolved.encode()).hexdigest()[:16]}.json"
)
if not os.path.exists(_params_file):
    os.makedirs(os.path.dirname(_params_file), exist_ok=True)
    _tmp = f"{_params_file}.{os.getpid()}.tmp"
    with open(_tmp, "w") as _fh:
        _fh.write(_resolved)
    os.replace(_tmp, _params_file)
os.environ["ADVLAB_PARAMS"] = _params_file


envvars:
    "ADVLAB_PARAMS",


wildcard_constraints:
    preset=r"[A-Za-z0-9][A-Za-z0-9_.-]*",
    model=r"[a-z][a-z0-9_]*(-(distilled|madry|fast))?",
    arch=r"[a-z][a-z0-9_]*",
    defense=r"distilled|madry|fast",
    attack=r"[a-z][a-z0-9_]*",
    tmodel=r"[a-z][a-z0-9_.-]*",
