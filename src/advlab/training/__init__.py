"""Lightning training: data modules, the natural, distilled and adversarial
classifiers, seeded fits."""

from .adversarial import METHODS as ADVERSARIAL_METHODS
from .adversarial import AdversarialClassifier, AdversarialTrainResult, fit_adversarial
from .classifier import LR_SCHEDULES, OPTIMIZERS, NaturalClassifier
from .datamodule import ArrayDataModule
from .distillation import DistilledClassifier, TemperatureScaled, fit_distillation, soft_labels
from .fit import HISTORY_COLUMNS, TrainResult, fit_classifier, fit_module

__all__ = [
    "ADVERSARIAL_METHODS",
    "HISTORY_COLUMNS",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "AdversarialClassifier",
    "AdversarialTrainResult",
    "ArrayDataModule",
    "DistilledClassifier",
    "NaturalClassifier",
    "TemperatureScaled",
    "TrainResult",
    "fit_adversarial",
    "fit_classifier",
    "fit_distillation",
    "fit_module",
    "soft_labels",
]
