"""Lightning training: data modules, the natural classifier, seeded fits."""

from .classifier import LR_SCHEDULES, OPTIMIZERS, NaturalClassifier
from .datamodule import ArrayDataModule
from .fit import HISTORY_COLUMNS, TrainResult, fit_classifier, fit_module

__all__ = [
    "HISTORY_COLUMNS",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "ArrayDataModule",
    "NaturalClassifier",
    "TrainResult",
    "fit_classifier",
    "fit_module",
]
