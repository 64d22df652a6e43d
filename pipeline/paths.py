"""Where every artifact lives. Patterns use Snakemake's wildcard syntax ({preset}, {model},
{attack}); the Snakefile, the DVC generator and the stages all format these same strings."""
from __future__ import annotations

from pathlib import Path

from pipeline.config import ROOT

PREPARED_TENSORS = "data/prepared/{preset}/tensors.pt"
PREPARED_META = "data/prepared/{preset}/meta.json"

MODEL = "models/{preset}/{model}.pt"
TRAIN_METRICS = "metrics/{preset}/train/{model}.json"
TRAIN_HISTORY = "results/{preset}/train/{model}/history.csv"

# Defended variants are models named <arch>-<defense>: same folders, their own producing stage.
DEFENDED_MODEL = "models/{preset}/{arch}-{defense}.pt"
DEFENDED_TRAIN_METRICS = "metrics/{preset}/train/{arch}-{defense}.json"
DEFENDED_TRAIN_HISTORY = "results/{preset}/train/{arch}-{defense}/history.csv"

ADV_EXAMPLES = "results/{preset}/attacks/{model}/{attack}.pt"
ADV_TABLE = "results/{preset}/attacks/{model}/{attack}.csv"
ADV_TIMING = "results/{preset}/attacks/{model}/{attack}.timing.json"
ATTACKS_DIR = "results/{preset}/attacks"

ROBUSTNESS = "metrics/{preset}/robustness.json"
TIMING = "metrics/{preset}/timing.json"
SUMMARY = "results/{preset}/eval/summary.csv"

REPORT = "reports/report.md"
FIGURES = "reports/figures"


def path(pattern: str, **wildcards) -> Path:
    """Absolute path of an artifact (stages run from the repo root, but be explicit)."""
    return ROOT / pattern.format(**wildcards)
